import type { SourceState } from '../sources/source.js';
import type { SyncState } from '../sync/syncer.js';

/** What /healthz answers, in kube-proxy's shape (healthcheck/proxy_health.go). */
export interface HealthReport {
  readonly healthy: boolean;
  /** RFC 3339 time of the last successful sync ("" before any, as Go prints a zero time differently; we keep it empty). */
  readonly lastUpdated: string;
  readonly currentTime: string;
  /** Whether this node should receive load-balancer traffic; a file source cannot tell, so it stays true. */
  readonly nodeEligible: boolean;
  /** Why it is unhealthy, for people (not part of kube-proxy's body). */
  readonly reason: string | null;
}

/**
 * Decides proxy health the way kube-proxy does, plus the two ways a
 * userspace proxy goes stale that kube-proxy's single rule misses:
 * - a queued change not applied within 2 x syncPeriod (kube-proxy's rule);
 * - syncs failing and the last good one older than 2 x syncPeriod;
 * - the source failing (unreadable file, broken watch) for longer than 2 x syncPeriod.
 * Healthy while starting up, as kube-proxy is.
 */
export class HealthMonitor {
  private readonly timeoutMs: number;
  private readonly startedAt: number;
  private sourceErrorSince: number | null = null;

  constructor(syncPeriodMs: number, now = Date.now()) {
    this.timeoutMs = 2 * syncPeriodMs;
    this.startedAt = now;
  }

  /**
   * Notes when the source started failing. Called at every sync (a full sync
   * runs each syncPeriod) and at every health request, so the onset is known
   * to within one sync period.
   */
  observe(source: SourceState, now = Date.now()): void {
    if (source.lastError === null) this.sourceErrorSince = null;
    else this.sourceErrorSince ??= now;
  }

  report(sync: Readonly<SyncState>, source: SourceState, now = Date.now()): HealthReport {
    this.observe(source, now);
    let reason: string | null = null;
    const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)}s`;
    if (sync.lastQueuedTime !== 0 && now - sync.lastQueuedTime > this.timeoutMs) {
      reason = `a change has waited ${seconds(now - sync.lastQueuedTime)} to be applied (limit ${seconds(this.timeoutMs)})`;
    } else if (sync.consecutiveFailures > 0 && now - (sync.lastSyncTime || this.startedAt) > this.timeoutMs) {
      reason = `syncs are failing (${sync.consecutiveFailures} in a row): ${sync.lastError ?? 'unknown error'}`;
    } else if (this.sourceErrorSince !== null && now - this.sourceErrorSince > this.timeoutMs) {
      reason = `the ${source.kind} source has failed for ${seconds(now - this.sourceErrorSince)}: ${source.lastError ?? ''}`;
    }
    return {
      healthy: reason === null,
      lastUpdated: sync.lastSyncTime === 0 ? '' : new Date(sync.lastSyncTime).toISOString(),
      currentTime: new Date(now).toISOString(),
      nodeEligible: true,
      reason,
    };
  }
}
