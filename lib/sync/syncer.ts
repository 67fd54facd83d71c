import PQueue from 'p-queue';
import type { Logger } from 'pino';
import type { ChangeTracker } from '../core/change-tracker.js';
import { errorCode, errorMessage } from '../core/errors.js';
import { isEmptyDiff, type TableDiff } from '../core/table-diff.js';
import type { ServiceTable } from '../core/types.js';
import { systemClock, type Clock } from './clock.js';

/** What one sync hands each target. */
export interface SyncChange {
  readonly diff: TableDiff;
  readonly table: ServiceTable;
  /** A periodic or retry sync: targets re-assert everything (repairing drift), not only the diff. */
  readonly full: boolean;
}

/** Something that follows the table: the data plane, the iptables rules. Run in order. */
export interface SyncTarget {
  readonly name: string;
  /**
   * Applied at once (coalesced within one event-loop turn), not held to
   * min-sync-period: for what touches no kernel state, such as the balancers'
   * endpoint sets. Such a target sees each flushed diff exactly once, in
   * order, and must leave to a rate-limited target whatever it cannot apply
   * from the diff alone (listeners to open or close, rules).
   */
  readonly immediate?: boolean;
  sync(change: SyncChange): Promise<void>;
}

export interface SyncerOptions {
  /** Where the changes come from: only flushing and reading the table are needed. */
  readonly tracker: Pick<ChangeTracker, 'flush' | 'current'>;
  readonly targets: readonly SyncTarget[];
  /** Changes are applied at most once per this many ms (0: as they come, still one at a time). */
  readonly minSyncPeriodMs: number;
  /** A full sync runs at least this often. */
  readonly syncPeriodMs: number;
  readonly logger: Logger;
  /** Retry delay after a failed sync: doubles from initialMs up to maxMs. Default 1 s .. 30 s. */
  readonly retryBackoff?: { readonly initialMs: number; readonly maxMs: number };
  /** Default: the system clock. */
  readonly clock?: Clock;
}

export interface SyncRecord {
  readonly full: boolean;
  readonly durationMs: number;
  readonly ok: boolean;
  readonly servicesChanged: number;
  /**
   * The endpoints.kubernetes.io/last-change-trigger-time of each slice change
   * this sync applied (ms since epoch): network programming latency starts there.
   */
  readonly triggerTimes: readonly number[];
  readonly diff: TableDiff;
}

/** What health and metrics read (kube-proxy's sync_proxy_rules_* state). */
export interface SyncState {
  /** ms since epoch of the last successful sync; 0 before any. */
  lastSyncTime: number;
  /** ms since epoch when a change was first queued and not yet synced; 0 when nothing is pending. */
  lastQueuedTime: number;
  lastSyncDurationMs: number;
  syncs: number;
  failures: number;
  consecutiveFailures: number;
  lastError: string | null;
}

/**
 * Applies the tracker's changes to the targets, one sync at a time, no more
 * often than min-sync-period, with a full sync every sync-period (kube-proxy's
 * BoundedFrequencyRunner). p-queue serialises the syncs and rate-limits their
 * start; at most one sync waits behind the running one, since a sync applies
 * everything pending when it starts.
 *
 * The syncer is the one owner of retries: a target only applies or throws.
 * A failed sync makes the next sync full (its diff was already flushed) and
 * schedules one retry with backoff (kube-proxy's needFullSync and
 * syncRunner.RetryAfter); a success cancels a pending retry.
 */
export class Syncer {
  readonly state: SyncState = {
    lastSyncTime: 0,
    lastQueuedTime: 0,
    lastSyncDurationMs: 0,
    syncs: 0,
    failures: 0,
    consecutiveFailures: 0,
    lastError: null,
  };
  private readonly opts: SyncerOptions;
  private readonly queue: PQueue;
  private readonly listeners: ((r: SyncRecord) => void)[] = [];
  private started = false;
  private stopped = false;
  private waiting = false;
  private needFull = true;
  private readonly clock: Clock;
  private readonly backoff: { readonly initialMs: number; readonly maxMs: number };
  /** Targets applied at every change vs. those rate-limited by min-sync-period. */
  private readonly immediateTargets: readonly SyncTarget[];
  private readonly limitedTargets: readonly SyncTarget[];
  private fastScheduled = false;
  /** What the fast passes flushed since the last rate-limited sync: that sync reports it and applies its targets. */
  private carried: { diff: TableDiff; servicesChanged: number; triggerTimes: number[] } | null = null;
  private stopPeriodic: (() => void) | null = null;
  private cancelRetry: (() => void) | null = null;
  private retryDelay = 0;

  constructor(opts: SyncerOptions) {
    this.opts = opts;
    this.clock = opts.clock ?? systemClock;
    this.backoff = opts.retryBackoff ?? { initialMs: 1000, maxMs: 30_000 };
    this.immediateTargets = opts.targets.filter((t) => t.immediate === true);
    this.limitedTargets = opts.targets.filter((t) => t.immediate !== true);
    this.queue =
      opts.minSyncPeriodMs > 0
        ? // A burst of two, as kube-proxy's BoundedFrequencyRunner: a change
          // right after a periodic full sync does not wait out the period.
          new PQueue({ concurrency: 1, intervalCap: 2, interval: opts.minSyncPeriodMs, strict: true })
        : new PQueue({ concurrency: 1 });
  }

  /** Runs the first (full) sync and starts following changes. */
  async start(): Promise<void> {
    this.started = true;
    this.stopPeriodic = this.clock.every(this.opts.syncPeriodMs, () => this.request(true));
    this.needFull = true;
    this.waiting = true;
    await this.queue.add(() => this.run());
  }

  /** A change is pending; a sync will run within min-sync-period. */
  request(full = false): void {
    if (full) this.needFull = true;
    // Before start() the changes are the source's initial state, which the
    // first sync applies: starting up is not "a change waiting" (kube-proxy
    // queues health updates only once initialized).
    if (this.started && this.state.lastQueuedTime === 0) this.state.lastQueuedTime = this.clock.now();
    if (!this.started || this.stopped) return;
    if (this.immediateTargets.length > 0 && !this.fastScheduled) {
      // One turn later, so a burst of watch events lands in one pass; no timer, no rate limit.
      this.fastScheduled = true;
      setImmediate(() => void this.fastPass());
    }
    if (this.waiting) return;
    this.waiting = true;
    // p-queue may start a task inside add(): defer a turn so that every change
    // made in this one (a whole file reload, a burst of watch events) lands in
    // the same sync instead of the first change alone.
    setImmediate(() => void this.queue.add(() => this.run()));
  }

  onSync(fn: (r: SyncRecord) => void): void {
    this.listeners.push(fn);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.stopPeriodic?.();
    this.cancelRetry?.();
    this.queue.clear();
    await this.queue.onIdle();
  }

  private async run(): Promise<void> {
    this.waiting = false;
    if (this.stopped) return;
    const full = this.needFull;
    this.needFull = false;
    const queuedAt = this.state.lastQueuedTime;
    this.state.lastQueuedTime = 0;
    const started = performance.now();
    const startedAt = this.clock.now();
    const fresh = this.opts.tracker.flush();
    for (const w of fresh.warnings) this.opts.logger.warn(w);
    const table = this.opts.tracker.current();
    const failed: Failure[] = [];
    if (full || !isEmptyDiff(fresh.diff)) {
      await runTargets(this.immediateTargets, { diff: fresh.diff, table, full }, failed);
    }
    // What earlier fast passes already gave the immediate targets is still owed to the rate-limited ones.
    const carried = this.carried;
    this.carried = null;
    const diff = carried === null ? fresh.diff : concatDiffs(carried.diff, fresh.diff);
    const servicesChanged = fresh.servicesChanged + (carried?.servicesChanged ?? 0);
    const triggerTimes = carried === null ? fresh.triggerTimes : [...carried.triggerTimes, ...fresh.triggerTimes];
    if (full || !isEmptyDiff(diff)) await runTargets(this.limitedTargets, { diff, table, full }, failed);
    const ok = failed.length === 0;
    const durationMs = performance.now() - started;
    this.state.lastSyncDurationMs = durationMs;
    this.state.syncs++;
    if (ok) {
      this.state.lastSyncTime = this.clock.now();
      this.state.consecutiveFailures = 0;
      this.state.lastError = null;
      this.cancelRetry?.();
      this.cancelRetry = null;
    } else {
      this.state.failures++;
      this.state.consecutiveFailures++;
      const last = failed[failed.length - 1]!;
      this.state.lastError = `${last.target}: ${last.err}`;
      // The diff this sync flushed may be half applied: only a full sync puts every target right again.
      this.needFull = true;
      // Not applied: the change stays queued since it first was (health's 2 x syncPeriod rule, as kube-proxy).
      const pending = queuedAt === 0 ? startedAt : queuedAt;
      this.state.lastQueuedTime = this.state.lastQueuedTime === 0 ? pending : Math.min(pending, this.state.lastQueuedTime);
      const retryMs = this.scheduleRetry();
      for (const f of failed) {
        this.opts.logger.error({ ...f, failures: this.state.consecutiveFailures, retryMs }, `${f.target} sync failed; retrying`);
      }
    }
    const record: SyncRecord = {
      full,
      durationMs,
      ok,
      servicesChanged,
      triggerTimes,
      diff,
    };
    for (const fn of this.listeners) fn(record);
  }

  /**
   * Flushes what changed and applies it to the immediate targets now; the
   * rate-limited targets get it at the next sync (requested by the change
   * that scheduled this pass). A failure here is handled as a failed sync's:
   * the next sync is full and a retry is scheduled.
   */
  private async fastPass(): Promise<void> {
    this.fastScheduled = false;
    if (this.stopped) return;
    const fresh = this.opts.tracker.flush();
    for (const w of fresh.warnings) this.opts.logger.warn(w);
    if (isEmptyDiff(fresh.diff) && fresh.triggerTimes.length === 0 && fresh.servicesChanged === 0) return;
    const prev = this.carried;
    this.carried = {
      diff: prev === null ? fresh.diff : concatDiffs(prev.diff, fresh.diff),
      servicesChanged: (prev?.servicesChanged ?? 0) + fresh.servicesChanged,
      triggerTimes: prev === null ? [...fresh.triggerTimes] : [...prev.triggerTimes, ...fresh.triggerTimes],
    };
    if (isEmptyDiff(fresh.diff)) return;
    const failed: Failure[] = [];
    await runTargets(this.immediateTargets, { diff: fresh.diff, table: this.opts.tracker.current(), full: false }, failed);
    if (failed.length === 0) return;
    this.state.failures++;
    this.state.consecutiveFailures++;
    const last = failed[failed.length - 1]!;
    this.state.lastError = `${last.target}: ${last.err}`;
    this.needFull = true;
    const retryMs = this.scheduleRetry();
    for (const f of failed) {
      this.opts.logger.error({ ...f, failures: this.state.consecutiveFailures, retryMs }, `${f.target} sync failed; retrying`);
    }
  }

  /**
   * A failed sync is retried as a full one, backing off 1s, 2s, 4s ... 30s.
   * One retry is pending at most: a failure while one waits keeps it.
   * Returns the delay of the pending retry (null once stopped).
   */
  private scheduleRetry(): number | null {
    if (this.stopped) return null;
    const delay = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** Math.min(20, this.state.consecutiveFailures - 1));
    if (this.cancelRetry !== null) return this.retryDelay;
    this.retryDelay = delay;
    this.cancelRetry = this.clock.after(delay, () => {
      this.cancelRetry = null;
      this.request(true);
    });
    return delay;
  }
}

interface Failure {
  readonly target: string;
  readonly err: string;
  readonly code: string | undefined;
}

/** Runs targets in order; each failure is collected, none stops the others. */
async function runTargets(targets: readonly SyncTarget[], change: SyncChange, failed: Failure[]): Promise<void> {
  for (const target of targets) {
    try {
      await target.sync(change);
    } catch (err) {
      failed.push({ target: target.name, err: errorMessage(err), code: errorCode(err) });
    }
  }
}

/** Two diffs one after the other, for reporting (targets that reconcile read the table, not this). */
function concatDiffs(a: TableDiff, b: TableDiff): TableDiff {
  if (isEmptyDiff(a)) return b;
  if (isEmptyDiff(b)) return a;
  return { added: [...a.added, ...b.added], updated: [...a.updated, ...b.updated], removed: [...a.removed, ...b.removed] };
}
