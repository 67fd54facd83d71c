import { constants, PerformanceObserver } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/** Below this many service ports the start-up garbage is too small to matter. */
export const SETTLE_HEAP_MIN_PORTS = 1000;

/** A major collection this recent already did the work: collecting again would only pause. */
const RECENT_MAJOR_MS = 1000;

/**
 * One full garbage collection right after the initial sync of a large
 * cluster. The initial list and sync leave ~100 MB of garbage in old space at
 * 10,000 services; left alone, V8 reclaims it with a mark-compact some
 * seconds later, while endpoint changes and connections flow, and on a busy
 * machine that one collection stalled every change in flight for 0.1-1.3 s
 * (bench/PERFORMANCE.md). Collected here, before anything waits on kup, the
 * next major collection starts from the live heap alone and comes much later.
 *
 * Start it before the sync (it watches for V8's own major collections: one
 * that just ran makes this one pointless), then call settle() once.
 */
export class HeapSettler {
  private lastMajor = -Infinity;
  private readonly observer: PerformanceObserver;

  constructor() {
    this.observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        if (((e as { detail?: unknown }).detail as { kind?: number } | null | undefined)?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
          this.lastMajor = Math.max(this.lastMajor, e.startTime + e.duration);
        }
      }
    });
    this.observer.observe({ entryTypes: ['gc'] });
  }

  /**
   * Collects now unless V8 just did; the pause in ms, or null when skipped
   * (or when this Node does not offer `gc`). Stops watching either way.
   */
  settle(): number | null {
    this.observer.disconnect();
    if (performance.now() - this.lastMajor < RECENT_MAJOR_MS) return null;
    return collectNow();
  }

  stop(): void {
    this.observer.disconnect();
  }
}

/**
 * A full collection. `gc` is reached without --expose-gc on the command line
 * (the flag set at run time applies to new contexts; nothing is exposed to
 * kup's own global); null when this Node does not offer it.
 */
export function collectNow(): number | null {
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
