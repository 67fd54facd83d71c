import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls `check` until it returns true, failing with `what` after `timeoutMs`.
 * The deadline is a generous bound for eventual behaviour, not a speed claim.
 */
export async function waitFor(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

export { sleep };
