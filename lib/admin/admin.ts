import type { V1Node } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { hostUrl, type HostPort } from '../core/address.js';
import type { ChangeTracker } from '../core/change-tracker.js';
import type { Proxier } from '../dataplane/proxier.js';
import type { IptablesMetrics } from '../iptables/applier.js';
import type { RunConfig } from '../runtime/config.js';
import type { EventRecorder } from '../sources/events.js';
import type { Source } from '../sources/source.js';
import type { Syncer } from '../sync/syncer.js';
import { DashboardFeed } from './dashboard.js';
import { HealthMonitor, type HealthReport } from './health.js';
import { HealthServer } from './health-server.js';
import { MetricsServer } from './metrics-server.js';
import { ProxyMetrics } from './metrics.js';
import { ServiceHealthServers } from './service-health.js';
import { buildStatus, type StatusDocument } from './status.js';

/**
 * What the admin face reads of a running proxy, and no more (as kube-proxy's
 * health server takes only what it checks): built from the parts before the
 * runtime object exists, so the admin face never depends on the runtime.
 */
export interface AdminTarget {
  readonly config: Pick<
    RunConfig,
    'nodeName' | 'bindAddress' | 'syncPeriodMs' | 'lbStrategy' | 'healthzBindAddress' | 'metricsBindAddress' | 'nodePortAddresses'
  >;
  readonly logger: Logger;
  readonly source: Pick<Source, 'kind' | 'state' | 'recorder'>;
  readonly tracker: Pick<ChangeTracker, 'counters' | 'current' | 'unsupported'>;
  readonly proxier: Pick<Proxier, 'get' | 'entries' | 'failures' | 'refreshUdpDrops' | 'relay'>;
  readonly syncer: Pick<Syncer, 'state' | 'onSync'>;
  installedRules(): string | null;
  iptablesMetrics(): IptablesMetrics | null;
}

/**
 * The admin face of one proxy: health server, metrics server (metrics,
 * /status, dashboard) and the per-service health checks. It only reads what
 * the data plane counts; nothing it does runs per connection.
 *
 * Constructed before the source starts (so the first sync is measured too);
 * the health server listens from then on, as kube-proxy serves /healthz
 * before its first sync; the metrics server and the per-service health checks
 * start after the first sync. Drained and stopped with the runtime.
 */
export class Admin {
  readonly monitor: HealthMonitor;
  readonly metrics: ProxyMetrics;
  private readonly rt: AdminTarget;
  private readonly serviceHealth: ServiceHealthServers;
  private readonly feed: DashboardFeed;
  private healthServer: HealthServer | null = null;
  private metricsServer: MetricsServer | null = null;
  private readonly events: EventRecorder | null;
  private draining = false;
  private started = false;

  constructor(rt: AdminTarget) {
    this.rt = rt;
    this.monitor = new HealthMonitor({ syncPeriodMs: rt.config.syncPeriodMs, nodeName: rt.config.nodeName, sourceKind: rt.source.kind });
    this.metrics = new ProxyMetrics({
      tracker: rt.tracker,
      proxier: rt.proxier,
      syncer: rt.syncer,
      source: rt.source,
      iptables: () => rt.iptablesMetrics(),
      nodeEligible: () => this.monitor.nodeEligibility.eligible,
    });
    this.events = rt.source.recorder?.() ?? null;
    this.serviceHealth = new ServiceHealthServers({
      host: rt.config.bindAddress,
      nodePortAddresses: rt.config.nodePortAddresses,
      // kube-proxy's serviceProxyHealthy is the proxy's health alone, not the node's eligibility.
      healthy: () => this.health().proxyHealthy && !this.draining,
      log: rt.logger,
      nodeName: rt.config.nodeName,
      events: this.events,
    });
    this.feed = new DashboardFeed({
      status: () => {
        // The kernel's UDP drop counts land in the next update (the feed ticks every 500ms).
        void rt.proxier.refreshUdpDrops();
        return this.status('');
      },
      rules: () => rt.installedRules(),
    });
    rt.syncer.onSync((r) => {
      this.metrics.observeSync(r);
      if (this.started) void this.serviceHealth.sync(rt.tracker.current());
    });
  }

  /** The bound address of the health server, null when off. */
  get healthzAddress(): HostPort | null {
    const b = this.rt.config.healthzBindAddress;
    return b === null || this.healthServer === null ? null : { host: b.host, port: this.healthServer.port };
  }

  get metricsAddress(): HostPort | null {
    const b = this.rt.config.metricsBindAddress;
    return b === null || this.metricsServer === null ? null : { host: b.host, port: this.metricsServer.port };
  }

  /** Health check node ports now served. */
  healthCheckPorts(): number[] {
    return this.serviceHealth.ports();
  }

  health(): HealthReport {
    const r = this.monitor.report(this.rt.syncer.state);
    return this.draining ? { ...r, healthy: false, lastUpdated: r.lastSyncTime, reason: 'shutting down' } : r;
  }

  /** This node's Node as the source delivers it (null: gone); eligibility changes are logged. */
  observeNode(node: V1Node | null): void {
    if (!this.monitor.syncNode(node)) return;
    const e = this.monitor.nodeEligibility;
    if (e.eligible)
      this.rt.logger.info(
        { node: this.rt.config.nodeName },
        'node is eligible for load-balancer traffic again: /healthz follows proxy health',
      );
    else
      this.rt.logger.warn(
        { node: this.rt.config.nodeName, nodeEligible: false },
        `${e.reason ?? 'node not eligible'}: /healthz answers 503 so load balancers drain this node`,
      );
  }

  status(clientIP: string): StatusDocument {
    const rt = this.rt;
    return buildStatus({
      node: rt.config.nodeName,
      bindAddress: rt.config.bindAddress,
      clientIP,
      relay: rt.proxier.relay,
      table: rt.tracker.current(),
      unsupported: rt.tracker.unsupported(),
      listeners: (sp) => rt.proxier.get(sp.key),
      listenerError: (sp) => rt.proxier.failures().get(sp.key)?.error ?? null,
      defaultStrategy: rt.config.lbStrategy,
      source: rt.source.state(),
      sync: rt.syncer.state,
      health: this.health(),
      iptablesRules: rt.installedRules(),
      now: Date.now(),
    });
  }

  /** The health server, from start-up: healthy while starting (nothing synced yet counts against it). */
  async startHealth(): Promise<void> {
    const hz = this.rt.config.healthzBindAddress;
    if (hz === null || this.healthServer !== null) return;
    const server = new HealthServer({
      host: hz.host,
      port: hz.port,
      health: () => this.health(),
      count: (path, code) => (path === 'healthz' ? this.metrics.countHealthz(code) : this.metrics.countLivez(code)),
    });
    await server.start();
    this.healthServer = server;
    if (this.healthzAddress !== null)
      this.rt.logger.info({ healthz: `${hostUrl(this.healthzAddress)}/healthz` }, 'health server listening');
  }

  /** After the first sync: metrics, /status, dashboard and the service health checks. */
  async start(): Promise<void> {
    const rt = this.rt;
    try {
      await this.startHealth();
      const m = rt.config.metricsBindAddress;
      if (m !== null) {
        this.metricsServer = new MetricsServer({
          host: m.host,
          port: m.port,
          metrics: this.metrics,
          feed: this.feed,
          status: async (client) => {
            await rt.proxier.refreshUdpDrops();
            return this.status(client);
          },
          rules: () => rt.installedRules(),
          logger: rt.logger,
        });
        await this.metricsServer.start();
      }
      this.started = true;
      await this.serviceHealth.sync(rt.tracker.current());
    } catch (err) {
      await this.stop();
      throw err;
    }
    const where: Record<string, string> = {};
    if (this.healthzAddress !== null) where.healthz = `${hostUrl(this.healthzAddress)}/healthz`;
    if (this.metricsAddress !== null) where.dashboard = `${hostUrl(this.metricsAddress)}/`;
    rt.logger.info(where, 'admin servers listening');
    // kube-proxy's birth cry, once serving.
    const node = rt.config.nodeName;
    this.events?.record({
      regarding: { kind: 'Node', namespace: '', name: node, uid: node },
      type: 'Normal',
      reason: 'Starting',
      action: 'StartKubeProxy',
      note: '',
    });
  }

  /** From now on health says 503, so load balancers move away while connections drain. */
  beginShutdown(): void {
    this.draining = true;
  }

  async stop(): Promise<void> {
    this.draining = true;
    this.started = false;
    this.feed.close();
    await Promise.all([this.healthServer?.close(), this.metricsServer?.close(), this.serviceHealth.close()]);
  }
}
