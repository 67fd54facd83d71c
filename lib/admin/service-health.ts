import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { errorMessage } from '../core/errors.js';
import type { ServiceTable } from '../core/types.js';
import type { EventRecorder } from '../sources/events.js';
import { joinHostPort } from '../core/address.js';
import { closeHttp, listenHttp } from './http-listen.js';
import { resolveNodePortIPs } from '../core/nodeport-addresses.js';
import { detectHostIPs, localAddresses } from '../iptables/host-ips.js';

/** One LoadBalancer Service with externalTrafficPolicy Local, as its health check sees it. */
export interface ServiceHealthTarget {
  readonly namespace: string;
  readonly name: string;
  readonly port: number;
  /**
   * Distinct local ready endpoint IPs of the Service, whatever its ports
   * (kube-proxy's LocalReadyEndpoints: a set of IPs per Service). Each IP
   * family is counted on its own, as each of kube-proxy's per-family proxiers
   * reports its own count, so a dual-stack pod weighs 1, not 2.
   */
  readonly localEndpoints: number;
}

/** Which health check node ports the table asks for. Pure. */
export function serviceHealthTargets(table: ServiceTable): Map<number, ServiceHealthTarget> {
  const found = new Map<number, { namespace: string; name: string; v4: Set<string>; v6: Set<string> }>();
  for (const sp of table.values()) {
    if (sp.type !== 'LoadBalancer' || sp.externalTrafficPolicy !== 'Local' || sp.healthCheckNodePort === 0) continue;
    let t = found.get(sp.healthCheckNodePort);
    if (t === undefined) found.set(sp.healthCheckNodePort, (t = { namespace: sp.namespace, name: sp.name, v4: new Set(), v6: new Set() }));
    else if (t.namespace !== sp.namespace || t.name !== sp.name) continue; // the API server forbids this
    for (const e of sp.endpoints) {
      if (e.isLocal && e.ready && !e.terminating) (e.ip.includes(':') ? t.v6 : t.v4).add(e.ip);
    }
  }
  const out = new Map<number, ServiceHealthTarget>();
  for (const [port, t] of found) {
    out.set(port, { namespace: t.namespace, name: t.name, port, localEndpoints: Math.max(t.v4.size, t.v6.size) });
  }
  return out;
}

/** Go's wording of a failed listen, as kube-proxy's event note carries it. */
function goListenError(host: string, port: number, err: unknown): string {
  const cause = err instanceof Error ? (err.cause as NodeJS.ErrnoException | undefined) : undefined;
  const why =
    cause?.code === 'EADDRINUSE'
      ? 'bind: address already in use'
      : cause?.code === 'EADDRNOTAVAIL'
        ? 'bind: cannot assign requested address'
        : cause?.code === 'EACCES'
          ? 'bind: permission denied'
          : (cause?.message ?? errorMessage(err));
  return `listen tcp ${joinHostPort(host, port)}: ${why}`;
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
  /** One server per listen address (one, unless --nodeport-addresses selects several). */
  private readonly servers = new Map<number, { servers: Server[]; target: ServiceHealthTarget }>();
  /** Ports that could not be opened, and why; retried at the next sync. */
  private readonly failed = new Map<number, string>();
  private readonly host: string;
  private readonly nodePortAddresses: readonly string[];
  /** Where the servers listen: resolved at the first sync, kept after (as kube-proxy resolves them at start). */
  private hosts: readonly string[] | null = null;
  private readonly healthy: () => boolean;
  private readonly log: Logger;
  private readonly nodeName: string;
  private readonly events: EventRecorder | null;
  private closed = false;
  private syncing: Promise<void> = Promise.resolve();

  /** `events`: where FailedToStartServiceHealthcheck goes (the live source's recorder), null for none. */
  /**
   * `host`: --bind-address, where they listen by default. `nodePortAddresses`
   * (--nodeport-addresses), when it selects addresses, replaces it: as
   * kube-proxy, health checks then listen on each selected node address.
   */
  constructor(opts: {
    host: string;
    nodePortAddresses?: readonly string[];
    healthy: () => boolean;
    log: Logger;
    nodeName: string;
    events: EventRecorder | null;
  }) {
    this.host = opts.host;
    this.nodePortAddresses = opts.nodePortAddresses ?? [];
    this.healthy = opts.healthy;
    this.log = opts.log;
    this.nodeName = opts.nodeName;
    this.events = opts.events;
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
    await Promise.all(all.flatMap((s) => s.servers.map((server) => closeHttp(server))));
  }

  private async listenHosts(): Promise<readonly string[]> {
    if (this.hosts !== null) return this.hosts;
    const ips = resolveNodePortIPs(this.nodePortAddresses, localAddresses(), await detectHostIPs());
    this.hosts = ips === null ? [this.host] : [...ips.ipv4, ...ips.ipv6];
    if (ips !== null && this.hosts.length === 0)
      this.log.warn('no node address matches --nodeport-addresses: service health checks are not served');
    else if (ips !== null)
      this.log.info({ addresses: this.hosts }, 'service health checks listen on the --nodeport-addresses node addresses');
    return this.hosts;
  }

  private async doSync(table: ServiceTable): Promise<void> {
    if (this.closed) return;
    const want = serviceHealthTargets(table);
    for (const [port, s] of [...this.servers]) {
      if (want.has(port) && want.get(port)?.name === s.target.name && want.get(port)?.namespace === s.target.namespace) continue;
      this.servers.delete(port);
      await Promise.all(s.servers.map((server) => closeHttp(server)));
      this.log.info({ healthCheckNodePort: port, service: `${s.target.namespace}/${s.target.name}` }, 'closed service health check');
    }
    for (const key of [...this.failed.keys()]) if (!want.has(key)) this.failed.delete(key);
    const hosts = await this.listenHosts();
    if (hosts.length === 0) return;
    for (const [port, target] of want) {
      const have = this.servers.get(port);
      if (have !== undefined) {
        have.target = target;
        continue;
      }
      const entry = { servers: [] as Server[], target };
      const answer = (_req: IncomingMessage, res: ServerResponse): void => {
        const healthy = this.healthy();
        const t = entry.target;
        res.writeHead(t.localEndpoints > 0 && healthy ? 200 : 503, {
          'Content-Type': 'application/json',
          'X-Content-Type-Options': 'nosniff',
          'X-Load-Balancing-Endpoint-Weight': String(t.localEndpoints),
        });
        res.end(serviceHealthBody(t, healthy));
      };
      let host = this.host;
      try {
        for (host of hosts) {
          const server = createServer(answer);
          await listenHttp(server, host, port, `health check of ${target.namespace}/${target.name}`);
          entry.servers.push(server);
        }
        this.servers.set(port, entry);
        this.failed.delete(port);
        this.log.info({ healthCheckNodePort: port, service: `${target.namespace}/${target.name}` }, 'serving service health check');
      } catch (err) {
        // All of the port's addresses or none: the next sync tries them all again.
        await Promise.all(entry.servers.map((server) => closeHttp(server)));
        const msg = errorMessage(err);
        if (this.failed.get(port) !== msg) this.log.error({ healthCheckNodePort: port }, `${msg}; will retry at the next sync`);
        this.failed.set(port, msg);
        // kube-proxy's event, word for word; the recorder keeps retries at each sync from flooding the API server.
        const nsn = `${target.namespace}/${target.name}`;
        this.events?.record({
          regarding: { kind: 'Service', namespace: target.namespace, name: target.name, uid: nsn },
          type: 'Warning',
          reason: 'FailedToStartServiceHealthcheck',
          action: 'Listen',
          note: `node ${this.nodeName} failed to start healthcheck "${nsn}" on port ${port}: ${goListenError(host, port, err)}`,
        });
      }
    }
  }
}
