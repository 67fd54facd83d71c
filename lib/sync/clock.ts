/**
 * Time as the syncer sees it: wall-clock reads and timers. Injected so a test
 * can step through retries and backoff without waiting for them.
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Runs `fn` once after `ms`; the returned function cancels it. Never keeps the process alive. */
  after(ms: number, fn: () => void): () => void;
  /** Runs `fn` every `ms`; the returned function stops it. Never keeps the process alive. */
  every(ms: number, fn: () => void): () => void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  after(ms, fn) {
    const t = setTimeout(fn, ms).unref();
    return () => clearTimeout(t);
  },
  every(ms, fn) {
    const t = setInterval(fn, ms).unref();
    return () => clearInterval(t);
  },
};
