import type { Logger } from 'pino';
import { Admin } from '../admin/admin.js';
import { ChangeTracker } from '../core/change-tracker.js';
import { Proxier } from '../dataplane/proxier.js';
import type { RunConfig } from '../cli/options.js';
import { createSource } from '../sources/create-source.js';
import type { Source } from '../sources/source.js';
import { Syncer, type SyncTarget } from '../sync/syncer.js';

/** A running proxy: source -> tracker -> syncer -> (data plane, rules). */
export interface ProxyRuntime {
  readonly config: RunConfig;
  readonly logger: Logger;
  readonly source: Source;
  readonly tracker: ChangeTracker;
  readonly proxier: Proxier;
  readonly syncer: Syncer;
  /** The iptables-restore script(s) now installed, or null when running without rules. */
  installedRules(): string | null;
  /** Health, metrics, /status and dashboard servers (listening once startProxy resolves). */
  readonly admin: Admin;
  /** Stops watching, then stops accepting and gives open connections up to the grace period. */
  stop(): Promise<void>;
}

export async function startProxy(config: RunConfig, logger: Logger): Promise<ProxyRuntime> {
  let syncer: Syncer | null = null;
  const tracker = new ChangeTracker({ nodeName: config.hostname, onChange: () => syncer?.request() });
  const proxier = new Proxier({
    bindAddress: config.bindAddress,
    portRange: config.portRange,
    lbStrategy: config.lbStrategy,
    udpTimeoutMs: config.udpTimeoutMs,
    udpMaxSessions: config.udpMaxSessions,
    tcpIdleTimeoutMs: config.tcpIdleTimeoutMs,
    logger,
  });
  const dataplane: SyncTarget = {
    name: 'dataplane',
    sync: (c) => (c.full ? proxier.resync(c.table) : proxier.apply(c.diff)),
  };
  syncer = new Syncer({
    tracker,
    targets: [dataplane],
    minSyncPeriodMs: config.minSyncPeriodMs,
    syncPeriodMs: config.syncPeriodMs,
    logger,
  });
  const source = await createSource({
    source: config.source,
    kubeconfig: config.kubeconfig,
    nodeName: config.hostname,
    logger,
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
    installedRules: () => null,
    get admin() {
      return admin;
    },
    stop() {
      stopping ??= (async () => {
        admin.beginShutdown();
        await source.stop();
        await s.stop();
        await proxier.close(config.shutdownGracePeriodMs);
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
  await s.start();
  try {
    await admin.start();
  } catch (err) {
    await runtime.stop();
    throw err;
  }
  return runtime;
}
