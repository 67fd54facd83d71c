import type { Logger } from 'pino';
import { errorCode, errorMessage } from '../core/errors.js';
import { Admin } from '../admin/admin.js';
import { ChangeTracker } from '../core/change-tracker.js';
import { selectRelay } from '../dataplane/native-relay.js';
import { Proxier } from '../dataplane/proxier.js';
import type { RunConfig } from './config.js';
import { createSource } from '../sources/create-source.js';
import type { Source } from '../sources/source.js';
import { withNodeObserver } from './node-observer.js';
import { Syncer, type SyncTarget } from '../sync/syncer.js';
import { IptablesApplier, type IptablesMetrics } from '../iptables/applier.js';
import { iptablesUnavailableReason } from '../iptables/backend.js';
import { iptablesSyncTarget } from '../iptables/sync-target.js';
import { InstanceLock, type Predecessor } from './instance-lock.js';
import { DEFAULT_STATE_DIR } from './config.js';
import { PortStateWriter, readPortState } from './port-state.js';
import { enableListenerMigration } from './tcp-migrate.js';
import { joinPredecessorPorts } from '../admin/http-listen.js';
import { LocalDetection } from './local-detection.js';
import { HeapSettler, SETTLE_HEAP_MIN_PORTS } from './settle-heap.js';

/** How long past the grace period closing the data plane may take before stop() moves on. */
export const DATAPLANE_STOP_MARGIN_MS = 1000;

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
  /** The iptables series of /metrics, read at scrape time; null when running without rules. */
  iptablesMetrics(): IptablesMetrics | null;
  /** Health server (listening from start-up), metrics, /status and dashboard servers (listening once startProxy resolves). */
  readonly admin: Admin;
  /**
   * SIGHUP: re-reads the source now and runs a full resync of the data plane
   * and rules; never stops anything. Resolves with what was done, for the log.
   */
  reload(): Promise<string>;
  /** Stops watching, then stops accepting and gives open connections up to the grace period. */
  stop(): Promise<void>;
  /** Resolves when a successor kup has taken over: stop() then leaves the rules to it. */
  readonly handedOver: Promise<void>;
}

export async function startProxy(config: RunConfig, logger: Logger): Promise<ProxyRuntime> {
  // Before any rule or port: the lock (or the hand-over from a live kup) and the ports to reuse.
  const rulesWanted = config.iptables && (await iptablesAvailable(logger));
  const useStateDir = rulesWanted || config.stateDir !== DEFAULT_STATE_DIR;
  const held = useStateDir ? await InstanceLock.acquire(config.stateDir, { handover: config.handover !== false }) : null;
  const predecessor: Predecessor | null = held?.predecessor ?? null;
  let preferredPorts = new Map<string, number>();
  try {
    if (predecessor !== null) {
      preferredPorts = predecessor.ports;
      logger.info(
        { predecessor: predecessor.pid, ports: preferredPorts.size },
        `taking over from kup pid ${predecessor.pid}: binding its ${preferredPorts.size} proxy ports alongside it`,
      );
      await enableListenerMigration(rulesWanted, logger);
      joinPredecessorPorts(true);
    } else if (held !== null) {
      preferredPorts = await readPortState(config.stateDir, logger);
      if (preferredPorts.size > 0) logger.info({ ports: preferredPorts.size }, 'reusing the proxy ports of the previous run');
    }
  } catch (err) {
    await held?.lock.release();
    throw err;
  }
  let portState: PortStateWriter | null = null;
  let syncer: Syncer | null = null;
  const tracker = new ChangeTracker({
    nodeName: config.nodeName,
    onChange: () => syncer?.request(),
    // The file source stamps resourceVersion with a hash of each object's content.
    sameObjectBy: 'resourceVersion',
  });
  // Before any listener: --relay native without its addon stops here, with one line.
  const relay = selectRelay(config.relay);
  logger.info(
    { relay: relay.kind, why: relay.why },
    `relay: ${relay.kind === 'native' ? 'native (epoll thread, splice for bulk)' : 'TypeScript (splice.ts)'}`,
  );
  const proxier = new Proxier({
    nativeRelay: relay.relay,
    bindAddress: config.bindAddress,
    portRange: config.portRange,
    lbStrategy: config.lbStrategy,
    udpTimeoutMs: config.udpTimeoutMs,
    udpMaxSessions: config.udpMaxSessions,
    tcpIdleTimeoutMs: config.tcpIdleTimeoutMs,
    udpBufferSize: config.udpBufferSize,
    exposeOnLoopback: config.exposeOnLoopback,
    preferredPorts,
    sharedPorts: new Set(predecessor?.ports.values() ?? []),
    deferSharedListen: predecessor !== null,
    onListenersChanged: () => portState?.changed(),
    logger,
  });
  if (held !== null) portState = new PortStateWriter(config.stateDir, () => proxier.portMap(), logger);
  logger.info(
    { dataPlaneDescriptors: proxier.budget.limit === Number.MAX_SAFE_INTEGER ? 'unlimited' : proxier.budget.limit },
    'descriptor budget: listeners, two per TCP connection, one per UDP session',
  );
  // Endpoint changes reach the balancers at once; listeners open and close
  // with the rules, under min-sync-period (reconciled against the table, as
  // the fast path may already have applied part of the diff).
  const endpoints: SyncTarget = {
    name: 'endpoints',
    immediate: true,
    sync: async (c) => void (await proxier.applyEndpointChanges(c.diff)),
  };
  const dataplane: SyncTarget = { name: 'dataplane', sync: (c) => proxier.resync(c.table) };
  const localDetection = new LocalDetection(config, logger);
  const iptables = rulesWanted
    ? await startIptables(logger, config, localDetection, predecessor !== null || preferredPorts.size > 0).catch(async (err: unknown) => {
        await held?.lock.release();
        throw err;
      })
    : null;
  const targets: SyncTarget[] = [endpoints, dataplane];
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
    nodeName: config.nodeName,
    logger,
    serviceCIDR: config.serviceClusterIPRange,
  });

  let stopping: Promise<void> | null = null;
  let successor = false;
  // Until the predecessor has let go, its rules are its own: a start that fails must not remove them.
  let predecessorActive = predecessor !== null;
  let adminStopped: Promise<void> | null = null;
  const stopAdmin = (): Promise<void> => (adminStopped ??= admin.stop());
  let markHandedOver: () => void = () => undefined;
  const handedOver = new Promise<void>((resolve) => {
    markHandedOver = resolve;
  });
  const s = syncer;
  const installedRules = (): string | null => iptables?.installedRules() ?? null;
  // Before the first sync, so that sync is measured too; from the parts, not the runtime.
  const iptablesMetrics = (): IptablesMetrics | null => iptables?.metrics() ?? null;
  const admin = new Admin({ config, logger, source, tracker, proxier, syncer: s, installedRules, iptablesMetrics });
  const runtime: ProxyRuntime = {
    config,
    logger,
    source,
    tracker,
    proxier,
    syncer: s,
    iptables,
    installedRules,
    iptablesMetrics,
    admin,
    handedOver,
    async reload() {
      if (stopping !== null) return 'stopping; nothing re-read';
      const done = await source.reread();
      s.request(true);
      return `${done}; full resync of listeners${iptables === null ? '' : ' and rules'} requested`;
    },
    stop() {
      stopping ??= (async () => {
        // The map stays as the last sync left it: closing listeners now must not erase it.
        portState?.stop();
        // Health turns 503 first, so load balancers move away while connections drain.
        admin.beginShutdown();
        await source.stop();
        await s.stop();
        // Bounded even if closing the data plane hangs on a socket that misbehaves:
        // the rules and admin servers must still be taken down.
        await boundedBy(proxier.close(config.shutdownGracePeriodMs), config.shutdownGracePeriodMs + DATAPLANE_STOP_MARGIN_MS);
        await iptables?.stop({ keepRules: successor || predecessorActive });
        if (!successor) await held?.lock.release();
        await stopAdmin();
      })();
      return stopping;
    },
  };

  const t0 = performance.now();
  try {
    // Health answers from start-up (healthy while starting, as kube-proxy), so a
    // probe or load balancer sees a live proxy during a long initial list.
    await admin.startHealth();
    // Serve only once the source delivered its initial state, as kube-proxy waits for its caches.
    await source.start(
      withNodeObserver(tracker, (node) => {
        admin.observeNode(node);
        // NodeCIDR follows the Node's podCIDRs: rewrite the rules when they change.
        if (localDetection.observeNode(node) && iptables !== null) s.request(true);
      }),
    );
    if (iptables !== null) localDetection.report();
  } catch (err) {
    await runtime.stop();
    throw err;
  }
  // Watches V8's own major collections during the initial sync (see HeapSettler).
  const settler = new HeapSettler();
  let first = true;
  const stallMs = firstSyncStallMs();
  s.onSync(() => {
    if (!first) return;
    first = false;
    // Test hook: the CPU time a very large first sync takes, with the event loop busy.
    if (stallMs > 0) for (const until = performance.now() + stallMs; performance.now() < until;);
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
    if (tracker.current().size >= SETTLE_HEAP_MIN_PORTS) {
      // After the line above is out; see HeapSettler for why.
      setImmediate(() => {
        const ms = settler.settle();
        if (ms !== null) logger.debug({ ms: Math.round(ms) }, 'collected the start-up garbage');
      });
    } else settler.stop();
  });
  // Say which services route by topology hints, when that changes.
  s.onSync((r) => {
    const changes = [...r.diff.added.map((next) => ({ prev: undefined, next })), ...r.diff.updated];
    for (const { prev, next } of changes) {
      if (next.topologyMode === (prev?.topologyMode ?? null)) continue;
      logger.info(
        { servicePort: next.key, zone: tracker.nodeZone, endpoints: next.clusterEndpoints.length },
        next.topologyMode === 'PreferSameNode'
          ? 'using topology hints for this node'
          : next.topologyMode === 'PreferSameZone'
            ? 'using topology hints for this zone'
            : 'no longer using topology hints',
      );
    }
  });
  await s.start();
  await portState?.flush();

  try {
    await admin.start();
  } catch (err) {
    await runtime.stop();
    throw err;
  }
  if (predecessor !== null) {
    // Ready: first sync and rules done (the same rules). Only now join the predecessor's ports: a
    // listener bound earlier would get its share of new connections while the first sync still ran.
    await proxier.bindShared();
    // Then the predecessor stops accepting.
    const t = performance.now();
    try {
      await predecessor.release();
      predecessorActive = false;
      joinPredecessorPorts(false);
    } catch (err) {
      // Both serve the same ports with the same rules meanwhile; only the lock is not this kup's.
      logger.error({ predecessor: predecessor.pid, err: errorMessage(err), code: errorCode(err) }, 'hand-over incomplete');
      return runtime;
    }
    logger.info(
      { predecessor: predecessor.pid, ms: Math.round(performance.now() - t) },
      `took over from kup pid ${predecessor.pid}; it stopped accepting and drains its connections`,
    );
  }
  held?.lock.serveHandover({
    ports: () => proxier.portMap(),
    release: async () => {
      successor = true;
      portState?.stop();
      admin.beginShutdown();
      await proxier.stopAccepting();
      // The successor answers health, metrics and health checks on the same ports from now on.
      await stopAdmin();
      // Frees kup.sock for the successor; RELEASED is written after this.
      await held.lock.release();
      logger.info('a successor kup took over: stopped accepting; draining, leaving the rules to it');
      markHandedOver();
    },
  });
  return runtime;
}

/**
 * Rules need root and an iptables binary; without them the proxy still runs
 * (reach services at their proxy ports), saying so in one line, and never
 * leaves half-applied rules.
 */
async function iptablesAvailable(logger: Logger): Promise<boolean> {
  const reason = await iptablesUnavailableReason();
  if (reason !== null) logger.warn(reason);
  return reason === null;
}

/**
 * Called once the lock is held: a second kup started by mistake has exited
 * before this, leaving the running one's chains alone. `keepExisting`: the
 * rules installed name the ports this kup binds (a predecessor's, or the
 * persisted ones), so they stay until the first restore replaces them.
 */
async function startIptables(
  logger: Logger,
  config: RunConfig,
  localDetection: LocalDetection,
  keepExisting: boolean,
): Promise<IptablesApplier> {
  // The syncer owns the full resyncs (every --sync-period) that repair rules removed by others, and the retries.
  const applier = new IptablesApplier({
    logger,
    bindAddress: config.bindAddress,
    nodePortAddresses: config.nodePortAddresses,
    localhostNodePorts: config.localhostNodePorts,
    localDetector: () => localDetection.current(),
  });
  await applier.start({ keepExisting });
  return applier;
}

/** Resolves when `p` settles or after `ms`, whichever comes first. */
async function boundedBy(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms);
  });
  try {
    await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * KUP_TEST_FIRST_SYNC_STALL_MS (tests only): blocks the event loop this long at
 * the end of the first sync, as the CPU work of a very large first sync does.
 */
function firstSyncStallMs(): number {
  const v = Number(process.env.KUP_TEST_FIRST_SYNC_STALL_MS ?? 0);
  return Number.isFinite(v) && v > 0 ? Math.min(v, 60_000) : 0;
}
