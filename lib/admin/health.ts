import type { V1Node } from '@kubernetes/client-node';
import { ELIGIBLE, nodeEligibility, type NodeEligibility } from '../core/node-eligibility.js';
import type { SourceKind } from '../sources/source.js';
import type { SyncState } from '../sync/syncer.js';

/** What /healthz answers, in kube-proxy's shape (healthcheck/proxy_health.go). */
export interface HealthReport {
  /** /healthz: the proxy is healthy and the node is eligible. */
  readonly healthy: boolean;
  /** /livez and the healthCheckNodePorts: the proxy alone, whatever the node. */
  readonly proxyHealthy: boolean;
  /** RFC 3339: now while healthy (kube-proxy's compatibility rule), else the last successful sync ("" before any). */
  readonly lastUpdated: string;
  /** RFC 3339 time of the last successful sync, "" before any. */
  readonly lastSyncTime: string;
  readonly currentTime: string;
  /** False once this node's Node is gone, being deleted, or tainted by the Cluster Autoscaler. */
  readonly nodeEligible: boolean;
  /** Why it is unhealthy, for people (not part of kube-proxy's body). */
  readonly reason: string | null;
}

/**
 * Decides health exactly as kube-proxy does, and nothing more:
 * - the proxy is unhealthy when a queued change has not been applied for
 *   2 x syncPeriod (a failed sync leaves it queued); it is healthy while
 *   starting up (nothing is queued before the first sync starts);
 * - /healthz is also 503 while the node is not eligible.
 * The source's own health (a broken watch, an unreadable file) is not part of
 * it: the data plane keeps serving the last known state, and taking every
 * node out of every load balancer during a control-plane outage would turn
 * an API problem into a traffic outage. It shows on /status and in metrics.
 */
export class HealthMonitor {
  private readonly timeoutMs: number;
  private readonly nodeName: string;
  private readonly sourceKind: SourceKind;
  // Eligible while starting up and until a node event says otherwise, as kube-proxy.
  private node: NodeEligibility = ELIGIBLE;

  constructor(opts: { syncPeriodMs: number; nodeName: string; sourceKind: SourceKind }) {
    this.timeoutMs = 2 * opts.syncPeriodMs;
    this.nodeName = opts.nodeName;
    this.sourceKind = opts.sourceKind;
  }

  get nodeEligibility(): NodeEligibility {
    return this.node;
  }

  /**
   * This node's Node as the source last saw it; null: none. A file without
   * this node's Node says nothing about it, so only the live source's "gone"
   * makes the node ineligible. Returns true when eligibility changed.
   */
  syncNode(node: V1Node | null): boolean {
    const next = node === null && this.sourceKind === 'file' ? ELIGIBLE : nodeEligibility(this.nodeName, node);
    const changed = next.eligible !== this.node.eligible || next.reason !== this.node.reason;
    this.node = next;
    return changed;
  }

  report(sync: Readonly<SyncState>, now = Date.now()): HealthReport {
    const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)}s`;
    let proxyReason: string | null = null;
    // Nothing is queued while starting up (the syncer queues changes only once
    // the source's initial state is in and the first sync started), so a long
    // initial list never counts; a first sync that fails does (its change stays queued).
    if (sync.lastQueuedTime !== 0 && now - sync.lastQueuedTime >= this.timeoutMs) {
      const why =
        sync.consecutiveFailures > 0
          ? `; syncs are failing (${sync.consecutiveFailures} in a row): ${sync.lastError ?? 'unknown error'}`
          : '';
      proxyReason = `a change has waited ${seconds(now - sync.lastQueuedTime)} to be applied (limit ${seconds(this.timeoutMs)})${why}`;
    }
    const proxyHealthy = proxyReason === null;
    const healthy = proxyHealthy && this.node.eligible;
    const currentTime = new Date(now).toISOString();
    const lastSyncTime = sync.lastSyncTime === 0 ? '' : new Date(sync.lastSyncTime).toISOString();
    return {
      healthy,
      proxyHealthy,
      lastUpdated: healthy ? currentTime : lastSyncTime,
      lastSyncTime,
      currentTime,
      nodeEligible: this.node.eligible,
      reason: proxyReason ?? this.node.reason,
    };
  }
}
