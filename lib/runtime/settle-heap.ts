import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** Below this many service ports the start-up garbage is too small to matter. */
export const SETTLE_HEAP_MIN_PORTS = 1000;

/**
 * One full garbage collection right after the initial sync of a large
 * cluster. The initial list and sync leave ~100 MB of garbage in old space at
 * 10,000 services; left alone, V8 reclaims it with a mark-compact some
 * seconds later, while endpoint changes and connections flow, and on a busy
 * machine that one collection stalled every change in flight for 0.1-1.3 s
 * (bench/PERFORMANCE.md). Collected here, before anything waits on kup, the
 * next major collection starts from the live heap alone and comes much later.
 *
 * `gc` is reached without --expose-gc on the command line (the flag set at
 * run time applies to new contexts); returns the pause in ms, or null when
 * this Node does not offer it.
 */
export function settleHeap(): number | null {
  let gc: unknown;
  try {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc');
  } catch {
    return null;
  }
  if (typeof gc !== 'function') return null;
  const t0 = performance.now();
  (gc as () => void)();
  return performance.now() - t0;
}
