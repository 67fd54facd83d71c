import type { Logger } from 'pino';
import { Balancer, createStrategy } from '../core/balancer/balancer.js';
import { SessionAffinity } from '../core/balancer/session-affinity.js';
import type { LbStrategyName } from '../core/balancer/strategy.js';
import { needsClusterListener, needsExternalListener, type ListenerScope, type ServicePort, type ServicePortKey } from '../core/types.js';
import { ListenerStats } from '../dataplane/stats.js';
import { buildStatus, type ListenerView, type ListenersView, type StatusDocument } from '../admin/status.js';
import { loadTable } from '../runtime/load-table.js';
import type { SourceSpec } from '../runtime/config.js';

export interface OfflineStatusOptions {
  readonly source: SourceSpec;
  readonly kubeconfig: string | null;
  readonly nodeName: string;
  readonly lbStrategy: LbStrategyName;
  readonly logger: Logger;
}

function listener(sp: ServicePort, scope: ListenerScope, strategy: LbStrategyName): ListenerView {
  const b = new Balancer(createStrategy(strategy));
  b.follow(sp, scope, new SessionAffinity(sp.affinityTimeoutSeconds));
  return { port: 0, stats: new ListenerStats(), balancer: b };
}

/**
 * The status a proxy would show right after starting over `source`, built
 * with the core translation and fresh balancers only: no listener is opened,
 * nothing is installed (for `kup explain --source`).
 */
export async function offlineStatus(opts: OfflineStatusOptions): Promise<StatusDocument> {
  const { table, warnings, unsupported } = await loadTable({
    source: opts.source,
    kubeconfig: opts.kubeconfig,
    nodeName: opts.nodeName,
    logger: opts.logger,
  });
  for (const w of warnings) opts.logger.warn(w);
  const loadedAt = Date.now();
  const views = new Map<ServicePortKey, ListenersView>();
  for (const sp of table.values()) {
    views.set(sp.key, {
      internal: listener(sp, 'internal', opts.lbStrategy),
      external: needsExternalListener(sp) ? listener(sp, 'external', opts.lbStrategy) : null,
      cluster: needsClusterListener(sp) ? listener(sp, 'cluster', opts.lbStrategy) : null,
    });
  }
  return buildStatus({
    node: opts.nodeName,
    bindAddress: '0.0.0.0',
    clientIP: '',
    table,
    unsupported,
    listeners: (sp) => views.get(sp.key),
    listenerError: () => null,
    defaultStrategy: opts.lbStrategy,
    source: { kind: opts.source.kind, synced: true, lastEventTime: loadedAt / 1000, lastError: null, detail: {} },
    sync: null,
    health: null,
    iptablesRules: null,
    now: loadedAt,
  });
}
