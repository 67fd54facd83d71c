import type { Logger } from 'pino';
import { Admin } from '../admin/admin.js';
import { ChangeTracker } from '../core/change-tracker.js';
import { Proxier } from '../dataplane/proxier.js';
import type { RunConfig } from '../cli/options.js';
import { createSource } from '../sources/create-source.js';
import type { Source } from '../sources/source.js';
import { Syncer, type SyncTarget } from '../sync/syncer.js';
import { IptablesApplier } from '../iptables/applier.js';
import { iptablesUnavailableReason } from '../iptables/backend.js';
import { iptablesSyncTarget } from '../iptables/sync-target.js';

/** A running proxy: source -> tracker -> syncer -> (data plane, rules). */
export interface ProxyRuntime {
  readonly config: RunConfig;
  readonly logger: Logger;
  readonly source: Source;
  readonly tracker: ChangeTracker;
  readonly proxier: Proxier;
  readonly syncer: Syncer;
  /** null when running without rules (--no-iptables, or no root / no iptables). */
  readonly iptables: IptablesApplier | null;
  /** The iptables-restore script(s) now installed, or null when running without rules. */
  installedRules(): string | null;
  /** Health, metrics, /status and dashboard servers (listening once startProxy resolves). */
  readonly admin: Admin;
  /** Stops watching, then stops accepting and gives open connections up to the grace period. */
  stop(): Promise<void>;
}

export async function startProxy(config: RunConfig, logger: Logger): Promise<ProxyRuntime> {
  let syncer: Syncer | null = null;
  const tracker = new ChangeTracker({
    nodeName: config.hostname,
    onChange: () => syncer?.request(),
    // The file source stamps resourceVersion with a hash of each object's content.
    sameObjectBy: 'resourceVersion',
  });
  const proxier = new Proxier({
    bindAddress: config.bindAddress,
    portRange: config.portRange,
    lbStrategy: config.lbStrategy,
    udpTimeoutMs: config.udpTimeoutMs,
    udpMaxSessions: config.udpMaxSessions,
    tcpIdleTimeoutMs: config.tcpIdleTimeoutMs,
    logger,
  });
  logger.info(
    { dataPlaneDescriptors: proxier.budget.limit === Number.MAX_SAFE_INTEGER ? 'unlimited' : proxier.budget.limit },
    'descriptor budget: listeners, two per TCP connection, one per UDP session',
  );
  const dataplane: SyncTarget = {
    name: 'dataplane',
    sync: (c) => (c.full ? proxier.resync(c.table) : proxier.apply(c.diff)),
  };
  const iptables = config.iptables ? await startIptables(config, logger) : null;
  const targets: SyncTarget[] = [dataplane];
  // After the data plane: the rules point at the proxy ports it just opened.
  if (iptables !== null) targets.push(iptablesSyncTarget(iptables, () => proxier.proxyPorts()));
  syncer = new Syncer({
    tracker,
    targets,
    minSyncPeriodMs: config.minSyncPeriodMs,
    syncPeriodMs: config.syncPeriodMs,
    logger,
  });
  const source = await createSource({
    source: config.source,
    kubeconfig: config.kubeconfig,
    nodeName: config.hostname,
    logger,
    serviceCIDR: config.serviceClusterIPRange,
  });

  let stopping: Promise<void> | null = null;
  const s = syncer;
  const runtime: ProxyRuntime = {
    config,
    logger,
    source,
    tracker,
    proxier,
    syncer: s,
    iptables,
    installedRules: () => iptables?.installedRules() ?? null,
    get admin() {
      return admin;
    },
    stop() {
      stopping ??= (async () => {
        // Health turns 503 first, so load balancers move away while connections drain.
        admin.beginShutdown();
        await source.stop();
        await s.stop();
        await proxier.close(config.shutdownGracePeriodMs);
        await iptables?.stop();
        await admin.stop();
      })();
      return stopping;
    },
  };
  // Before the first sync, so that sync is measured too.
  const admin = new Admin(runtime);

  const t0 = performance.now();
  // Serve only once the source delivered its initial state, as kube-proxy waits for its caches.
  await source.start(tracker);
  let first = true;
  s.onSync(() => {
    if (!first) return;
    first = false;
    let endpoints = 0;
    for (const sp of tracker.current().values()) endpoints += sp.endpoints.length;
    logger.info(
      {
        servicePorts: tracker.current().size,
        endpoints,
        listeners: proxier.size,
        seconds: Number(((performance.now() - t0) / 1000).toFixed(3)),
      },
      `synced ${tracker.current().size.toLocaleString('en-US')} service ports, ${endpoints.toLocaleString('en-US')} endpoints in ${((performance.now() - t0) / 1000).toFixed(2)}s`,
    );
  });
  // Say which services route by topology hints, when that changes.
  s.onSync((r) => {
    const changes = [...r.diff.added.map((next) => ({ prev: undefined, next })), ...r.diff.updated];
    for (const { prev, next } of changes) {
      if (next.usesTopologyHints === (prev?.usesTopologyHints ?? false)) continue;
      logger.info(
        { servicePort: next.key, zone: tracker.nodeZone, endpoints: next.clusterEndpoints.length },
        next.usesTopologyHints ? 'using topology hints for this zone' : 'no longer using topology hints',
      );
    }
  });
  await s.start();

  try {
    await admin.start();
  } catch (err) {
    await runtime.stop();
    throw err;
  }
  return runtime;
}

/**
 * Rules need root and an iptables binary; without them the proxy still runs
 * (reach services at their proxy ports), saying so in one line, and never
 * leaves half-applied rules.
 */
async function startIptables(config: RunConfig, logger: Logger): Promise<IptablesApplier | null> {
  const reason = await iptablesUnavailableReason();
  if (reason !== null) {
    logger.warn(reason);
    return null;
  }
  // The syncer runs the full resyncs (every --sync-period) that repair rules removed by others.
  const applier = new IptablesApplier({ logger, bindAddress: config.bindAddress, resyncPeriodMs: 0 });
  await applier.start();
  return applier;
}
