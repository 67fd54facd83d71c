import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls `check` (sync or async) until it returns true, throwing with `what`
 * after `timeoutMs`; resolves to the milliseconds it took. The deadline is a
 * generous bound for eventual behaviour, not a speed claim: a test that times
 * something asserts on the returned figure. `intervalMs` is for checks that
 * are costly themselves (a process spawned in a namespace per poll).
 */
export async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000, intervalMs = 20): Promise<number> {
  const start = Date.now();
  while (!(await check())) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
  return Date.now() - start;
}

export { sleep };
