import { createServer, type Server } from 'node:http';
import type { Logger } from 'pino';
import { errorMessage } from '../core/errors.js';
import type { ServiceTable } from '../core/types.js';
import { closeHttp, listenHttp } from './http-listen.js';

/** One LoadBalancer Service with externalTrafficPolicy Local, as its health check sees it. */
export interface ServiceHealthTarget {
  readonly namespace: string;
  readonly name: string;
  readonly port: number;
  /** Local ready endpoints summed over the service's ports, as kube-proxy counts them (LocalReadyEndpoints). */
  readonly localEndpoints: number;
}

/** Which health check node ports the table asks for. Pure. */
export function serviceHealthTargets(table: ServiceTable): Map<number, ServiceHealthTarget> {
  const out = new Map<number, ServiceHealthTarget>();
  for (const sp of table.values()) {
    if (sp.type !== 'LoadBalancer' || sp.externalTrafficPolicy !== 'Local' || sp.healthCheckNodePort === 0) continue;
    const local = sp.endpoints.filter((e) => e.isLocal && e.ready && !e.terminating).length;
    const prev = out.get(sp.healthCheckNodePort);
    if (prev !== undefined && (prev.namespace !== sp.namespace || prev.name !== sp.name)) continue; // the API server forbids this
    out.set(sp.healthCheckNodePort, {
      namespace: sp.namespace,
      name: sp.name,
      port: sp.healthCheckNodePort,
      localEndpoints: (prev?.localEndpoints ?? 0) + local,
    });
  }
  return out;
}

/** kube-proxy's body, byte for byte (tab-indented, as its dedented template prints). */
export function serviceHealthBody(t: ServiceHealthTarget, proxyHealthy: boolean): string {
  return JSON.stringify(
    { service: { namespace: t.namespace, name: t.name }, localEndpoints: t.localEndpoints, serviceProxyHealthy: proxyHealthy },
    null,
    '\t',
  );
}

/**
 * The per-service health checks external load balancers poll on
 * healthCheckNodePort: 200 while this node has a local ready endpoint and the
 * proxy is healthy, so the LB only sends traffic to nodes that can keep it
 * local. Servers open and close as such services come and go.
 */
export class ServiceHealthServers {
  private readonly servers = new Map<number, { server: Server; target: ServiceHealthTarget }>();
  /** Ports that could not be opened, and why; retried at the next sync. */
  private readonly failed = new Map<number, string>();
  private readonly host: string;
  private readonly healthy: () => boolean;
  private readonly log: Logger;
  private closed = false;
  private syncing: Promise<void> = Promise.resolve();

  constructor(host: string, healthy: () => boolean, log: Logger) {
    this.host = host;
    this.healthy = healthy;
    this.log = log;
  }

  ports(): number[] {
    return [...this.servers.keys()].sort((a, b) => a - b);
  }

  /** Follows the table; serialised so overlapping syncs never open a port twice. */
  sync(table: ServiceTable): Promise<void> {
    this.syncing = this.syncing.then(() => this.doSync(table));
    return this.syncing;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.syncing;
    const all = [...this.servers.values()];
    this.servers.clear();
    await Promise.all(all.map((s) => closeHttp(s.server)));
  }

  private async doSync(table: ServiceTable): Promise<void> {
    if (this.closed) return;
    const want = serviceHealthTargets(table);
    for (const [port, s] of [...this.servers]) {
      if (want.has(port) && want.get(port)?.name === s.target.name && want.get(port)?.namespace === s.target.namespace) continue;
      this.servers.delete(port);
      await closeHttp(s.server);
      this.log.info({ healthCheckNodePort: port, service: `${s.target.namespace}/${s.target.name}` }, 'closed service health check');
    }
    for (const key of [...this.failed.keys()]) if (!want.has(key)) this.failed.delete(key);
    for (const [port, target] of want) {
      const have = this.servers.get(port);
      if (have !== undefined) {
        have.target = target;
        continue;
      }
      const entry = { server: createServer(), target };
      entry.server.on('request', (_req, res) => {
        const healthy = this.healthy();
        const t = entry.target;
        res.writeHead(t.localEndpoints > 0 && healthy ? 200 : 503, {
          'Content-Type': 'application/json',
          'X-Content-Type-Options': 'nosniff',
          'X-Load-Balancing-Endpoint-Weight': String(t.localEndpoints),
        });
        res.end(serviceHealthBody(t, healthy));
      });
      try {
        await listenHttp(entry.server, this.host, port, `health check of ${target.namespace}/${target.name}`);
        this.servers.set(port, entry);
        this.failed.delete(port);
        this.log.info({ healthCheckNodePort: port, service: `${target.namespace}/${target.name}` }, 'serving service health check');
      } catch (err) {
        const msg = errorMessage(err);
        if (this.failed.get(port) !== msg) this.log.error({ healthCheckNodePort: port }, `${msg}; will retry at the next sync`);
        this.failed.set(port, msg);
      }
    }
  }
}
