import type { Clock } from '../../lib/sync/clock.js';

interface Timer {
  at: number;
  readonly every: number | null;
  readonly fn: () => void;
}

/** A clock that moves only when told: timers fire in time order inside advance(). */
export class FakeClock implements Clock {
  private t: number;
  private readonly timers = new Set<Timer>();

  constructor(start = 1_700_000_000_000) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  after(ms: number, fn: () => void): () => void {
    return this.add({ at: this.t + ms, every: null, fn });
  }

  every(ms: number, fn: () => void): () => void {
    return this.add({ at: this.t + ms, every: ms, fn });
  }

  /** Milliseconds from now of each pending one-shot timer, soonest first. */
  pendingOnce(): number[] {
    return [...this.timers]
      .filter((x) => x.every === null)
      .map((x) => x.at - this.t)
      .sort((a, b) => a - b);
  }

  /** Moves time forward by `ms`, firing each timer due on the way at its own moment. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let next: Timer | null = null;
      for (const x of this.timers) if (x.at <= end && (next === null || x.at < next.at)) next = x;
      if (next === null) break;
      this.t = next.at;
      if (next.every === null) this.timers.delete(next);
      else next.at += next.every;
      next.fn();
    }
    this.t = end;
  }

  private add(timer: Timer): () => void {
    this.timers.add(timer);
    return () => void this.timers.delete(timer);
  }
}
