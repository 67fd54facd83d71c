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
  private stopPeriodic: (() => void) | null = null;
  private cancelRetry: (() => void) | null = null;
  private retryDelay = 0;

  constructor(opts: SyncerOptions) {
    this.opts = opts;
    this.clock = opts.clock ?? systemClock;
    this.backoff = opts.retryBackoff ?? { initialMs: 1000, maxMs: 30_000 };
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
    if (!this.started || this.stopped || this.waiting) return;
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
    const { diff, warnings, servicesChanged, triggerTimes } = this.opts.tracker.flush();
    for (const w of warnings) this.opts.logger.warn(w);
    const change: SyncChange = { diff, table: this.opts.tracker.current(), full };
    const failed: { target: string; err: string; code: string | undefined }[] = [];
    if (full || !isEmptyDiff(diff)) {
      for (const target of this.opts.targets) {
        try {
          await target.sync(change);
        } catch (err) {
          failed.push({ target: target.name, err: errorMessage(err), code: errorCode(err) });
        }
      }
    }
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
