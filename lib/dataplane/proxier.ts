import type { Logger } from 'pino';
import { Balancer, createStrategy } from '../core/balancer/balancer.js';
import { SessionAffinity } from '../core/balancer/session-affinity.js';
import type { LbStrategyName } from '../core/balancer/strategy.js';
import { errorCode, errorMessage, KupError } from '../core/errors.js';
import { hostsLine, loopbackAddressFor } from '../core/loopback-address.js';
import { joinHostPort } from '../core/address.js';
import type { PortRange } from '../core/port-range.js';
import type { TableDiff } from '../core/table-diff.js';
import {
  needsClusterListener,
  needsExternalListener,
  type ListenerScope,
  type ProxyPortNumbers,
  type ServicePort,
  type ServiceName,
  type ServicePortKey,
  type ServiceTable,
} from '../core/types.js';
import { dataPlaneBudget, type FdBudget } from './fd-budget.js';
import { PortAllocator } from './port-allocator.js';
import { probeFree } from './port-probe.js';
import type { NativeRelay, RelayKind } from './native-relay.js';
import { TcpProxy } from './tcp-proxy.js';
import { readUdpDrops } from './udp-drops.js';
import { DEFAULT_UDP_BUFFER_SIZE, UdpProxy, type UdpBufferSizes } from './udp-proxy.js';

/** A sync opening more listeners than this logs one summary line instead of one line each (at info). */
export const BULK_OPEN_LINES = 100;
/** How many listeners a bulk sync opens at once. */
const BULK_OPEN_PARALLEL = 64;

export interface ProxierOptions {
  /** --bind-address; 0.0.0.0 listens dual-stack where the host has IPv6. */
  readonly bindAddress: string;
  readonly portRange: PortRange | null;
  readonly lbStrategy: LbStrategyName;
  readonly udpTimeoutMs: number;
  readonly udpMaxSessions: number;
  readonly tcpIdleTimeoutMs: number;
  /** The native relay thread established TCP connections go to; null/absent: the TypeScript relay (splice.ts). */
  readonly nativeRelay?: NativeRelay | null;
  readonly logger: Logger;
  /** Descriptors the data plane may use; default: the open-files limit less a reserve. */
  readonly budget?: FdBudget;
  /** --udp-buffer-size in bytes (0: the kernel's default); default DEFAULT_UDP_BUFFER_SIZE. */
  readonly udpBufferSize?: number;
  /**
   * --expose-on-loopback: each service port listens on its Service's own
   * loopback address at its real port number, not on a proxy port; there is
   * no separate external listener (no rules steer node traffic here).
   */
  readonly exposeOnLoopback?: boolean;
  /** Owner (`key|scope`) -> the proxy port it had before a restart or in the predecessor kup. */
  readonly preferredPorts?: ReadonlyMap<string, number>;
  /** Ports a live predecessor holds, bound alongside it (SO_REUSEPORT) without the probe for a free port. */
  readonly sharedPorts?: ReadonlySet<number>;
  /**
   * Hand-over: listeners on shared ports are bound only by bindShared(), once
   * this kup can serve (first sync and rules done), not during the first sync:
   * a bound listener gets its share of new connections at once, and they
   * would wait while the rest of a large first sync keeps the event loop busy.
   */
  readonly deferSharedListen?: boolean;
  /** Called when a proxy listener opened or closed (the port state file is rewritten). */
  readonly onListenersChanged?: () => void;
}

/** A Service's address under --expose-on-loopback. */
export interface ExposedService {
  readonly namespace: string;
  readonly name: string;
  readonly address: string;
}

export type ProxyListener = TcpProxy | UdpProxy;

/** Who a proxy port belongs to, for the allocator to give it back when the service port returns. */
function portOwner(key: ServicePortKey, scope: ListenerScope): string {
  return `${key}|${scope}`;
}

/** The listeners of one service port. */
export interface ServicePortListeners {
  sp: ServicePort;
  readonly affinity: SessionAffinity;
  internal: ProxyListener;
  external: ProxyListener | null;
  /** All cluster endpoints, when neither of the others balances over them (see needsClusterListener). */
  cluster: ProxyListener | null;
  /** The loopback address `internal` listens on under --expose-on-loopback; null otherwise. */
  exposedAddress: string | null;
}

/**
 * The userspace data plane: one listener per service port (more when the
 * traffic policies pick different endpoint sets; see ListenerScope), opened and closed as the table's diff says. An
 * update only swaps endpoints and settings; it never restarts a listener nor
 * touches established connections.
 */
export class Proxier {
  private readonly opts: ProxierOptions;
  private readonly log: Logger;
  private readonly ports = new Map<ServicePortKey, ServicePortListeners>();
  /** Service ports whose listener could not be opened; retried at every sync. */
  private readonly failed = new Map<ServicePortKey, { sp: ServicePort; error: string }>();
  private readonly allocator: PortAllocator;
  /** Listeners closed by a diff that still carry connections, until those end. */
  private readonly draining = new Set<ProxyListener>();
  private dropsRead: Promise<void> | null = null;
  private udpBuffersReported = false;
  private listenHost: { host: string; ipv6Only: boolean } | null = null;
  /** Binds waiting for bindShared() (deferSharedListen). */
  private deferred: { listener: ProxyListener; bind: () => Promise<void> }[] | null;
  private affinitySweeper: NodeJS.Timeout | null = null;
  /** Set while a sync opens many listeners: their lines go to debug and one summary line to info. */
  private bulk: { opened: number; readonly t0: number } | null = null;
  /** --expose-on-loopback: each Service's address, kept while any of its ports is in the table. */
  private readonly exposed = new Map<ServiceName, ExposedService>();
  readonly budget: FdBudget;

  constructor(opts: ProxierOptions) {
    this.opts = opts;
    this.log = opts.logger;
    this.allocator = new PortAllocator(opts.portRange);
    for (const [owner, port] of opts.preferredPorts ?? []) this.allocator.prefer(owner, port);
    this.budget = opts.budget ?? dataPlaneBudget(opts.logger);
    this.deferred = opts.deferSharedListen === true ? [] : null;
  }

  /** Which relay moves established TCP connections' bytes (/status, metrics). */
  get relay(): RelayKind {
    return (this.opts.nativeRelay ?? null) === null ? 'js' : 'native';
  }

  get size(): number {
    return this.ports.size;
  }

  get(key: ServicePortKey): ServicePortListeners | undefined {
    return this.ports.get(key);
  }

  /**
   * Copies the kernel's drop count of every UDP listener into its stats.
   * Called when metrics or /status are read; concurrent callers share one read.
   */
  refreshUdpDrops(): Promise<void> {
    this.dropsRead ??= (async () => {
      try {
        const udp: UdpProxy[] = [];
        for (const p of this.ports.values()) {
          for (const l of [p.internal, p.external, p.cluster]) if (l instanceof UdpProxy) udp.push(l);
        }
        for (const l of this.draining) if (l instanceof UdpProxy) udp.push(l);
        if (udp.length === 0) return;
        const table = await readUdpDrops();
        for (const l of udp) l.updateKernelDrops(table);
      } finally {
        this.dropsRead = null;
      }
    })();
    return this.dropsRead;
  }

  /** Says once if the kernel gave UDP sockets less buffer than --udp-buffer-size asked for. */
  private noteUdpBuffers(b: UdpBufferSizes): void {
    if (this.udpBuffersReported) return;
    this.udpBuffersReported = true;
    // Linux doubles the request (bookkeeping overhead) and caps it at net.core.rmem_max / wmem_max.
    if (b.receive >= 2 * b.asked && b.send >= 2 * b.asked) return;
    this.log.warn(
      { asked: b.asked, receiveBuffer: b.receive, sendBuffer: b.send },
      `UDP socket buffers capped by the kernel at ${b.receive} bytes receive / ${b.send} send (asked ${b.asked}); raise net.core.rmem_max and net.core.wmem_max to get more`,
    );
  }

  entries(): IterableIterator<ServicePortListeners> {
    return this.ports.values();
  }

  failures(): ReadonlyMap<ServicePortKey, { sp: ServicePort; error: string }> {
    return this.failed;
  }

  /** --expose-on-loopback: the Services and their addresses, by name; empty otherwise. */
  exposedServices(): ReadonlyMap<ServiceName, ExposedService> {
    return this.exposed;
  }

  /** The proxy ports rules must steer each service port's virtual IPs to. */
  proxyPorts(): Map<ServicePortKey, ProxyPortNumbers> {
    const out = new Map<ServicePortKey, ProxyPortNumbers>();
    for (const [key, p] of this.ports) {
      out.set(key, {
        internal: p.internal.port,
        ...(p.external === null ? {} : { external: p.external.port }),
        ...(p.cluster === null ? {} : { cluster: p.cluster.port }),
      });
    }
    return out;
  }

  /** Owner (`key|scope`) -> proxy port of every open proxy listener: what the port state file and a successor get. */
  portMap(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [key, p] of this.ports) {
      if (p.exposedAddress !== null) continue;
      out.set(portOwner(key, 'internal'), p.internal.port);
      if (p.external !== null) out.set(portOwner(key, 'external'), p.external.port);
    }
    return out;
  }

  /**
   * Hand-over: closes the listeners (new connections and new UDP clients now
   * reach only the successor's sockets on the same ports); established
   * connections carry on, and so do UDP sessions, on sockets connected to
   * their clients (UdpProxy.stopAccepting), until they idle out.
   */
  async stopAccepting(): Promise<void> {
    await this.closeTcpListeners();
    for (const p of this.ports.values()) {
      for (const l of [p.internal, p.external]) if (l instanceof UdpProxy) await l.stopAccepting();
    }
  }

  /** Closes every TCP listener; open connections carry on. */
  async closeTcpListeners(): Promise<void> {
    // One turn of the event loop first: connections the kernel already queued (a client sees them
    // connected) are accepted in this poll phase rather than reset by the close.
    await new Promise((r) => setImmediate(r));
    for (const p of this.ports.values()) {
      for (const l of [p.internal, p.external, p.cluster]) if (l instanceof TcpProxy) await l.close();
    }
  }

  /** Applies a diff; per-port failures are logged and kept for retry, never thrown. */
  async apply(diff: TableDiff): Promise<void> {
    await this.quietIfBulk(diff.added.length, () => this.applyDiff(diff));
  }

  private async applyDiff(diff: TableDiff): Promise<void> {
    for (const sp of diff.removed) await this.remove(sp.key);
    for (const { next } of diff.updated) {
      const p = this.ports.get(next.key);
      if (p === undefined) await this.add(next);
      else await this.update(p, next);
    }
    const fresh: ServicePort[] = [];
    for (const sp of diff.added) {
      const p = this.ports.get(sp.key);
      if (p === undefined) fresh.push(sp);
      else await this.update(p, sp);
    }
    await this.addAll(fresh);
    this.ensureSweeper();
  }

  /**
   * Opens listeners for new service ports: one after another, or, in a bulk
   * sync, BULK_OPEN_PARALLEL at a time. Each open waits for a loop turn (the
   * free-port probe's close), so 10,000 opened one by one took 10,000 turns:
   * seconds on a busy machine. Ports are still allocated in call order (each
   * add allocates before its first await).
   */
  private async addAll(sps: readonly ServicePort[]): Promise<void> {
    let i = 0;
    // The first listen settles which host every listener binds (listenOn): alone.
    for (; i < sps.length && (this.bulk === null || this.listenHost === null); i++) await this.add(sps[i]!);
    for (; i < sps.length; i += BULK_OPEN_PARALLEL) {
      await Promise.all(sps.slice(i, i + BULK_OPEN_PARALLEL).map((sp) => this.add(sp)));
    }
  }

  /**
   * The fast path for endpoint changes: updates the balancers (and settings)
   * of listeners that already exist and keep their shape, at once. Opening or
   * closing a listener is left to resync() in the rate-limited sync, with the
   * rules that steer to it, so a proxy port is never closed (and handed to
   * another service) while rules still point at it. A port whose last
   * endpoint left resets new connections until the rules say REJECT.
   * Returns how many service ports were updated.
   */
  async applyEndpointChanges(diff: TableDiff): Promise<number> {
    let n = 0;
    for (const { next } of diff.updated) {
      const p = this.ports.get(next.key);
      if (p === undefined || p.sp === next || !this.sameShape(p, next)) continue;
      // No I/O for a same-shape port: update() waits only to open or close listeners.
      await this.update(p, next);
      n++;
    }
    return n;
  }

  /** The same listeners serve `sp` as now serve `p`: only endpoints or settings differ. */
  private sameShape(p: ServicePortListeners, sp: ServicePort): boolean {
    if (p.exposedAddress !== null && p.internal.port !== sp.port) return false;
    return this.wantsExternal(sp) === (p.external !== null);
  }

  /**
   * Brings the listeners in line with a whole table: the periodic full sync,
   * which also retries listeners that failed to open.
   */
  async resync(table: ServiceTable): Promise<void> {
    await this.quietIfBulk(table.size - this.ports.size, () => this.resyncTable(table));
  }

  /**
   * Runs `work`; when it will open more than BULK_OPEN_LINES listeners (the
   * initial sync of a large cluster), their "opened proxy port" lines go to
   * debug and one summary line to info: 10,000 synchronous log writes cost
   * about a second of start-up when the log's reader lags.
   */
  private async quietIfBulk(opening: number, work: () => Promise<void>): Promise<void> {
    if (opening <= BULK_OPEN_LINES || this.bulk !== null) {
      await work();
      return;
    }
    const bulk = { opened: 0, t0: performance.now() };
    this.bulk = bulk;
    try {
      await work();
    } finally {
      this.bulk = null;
      if (bulk.opened > 0) {
        const ms = Math.round(performance.now() - bulk.t0);
        this.log.info(
          { proxyPorts: bulk.opened, ms },
          `opened ${bulk.opened.toLocaleString('en-US')} proxy ports in ${ms} ms (one line each at --log-level debug; \`kup status\` lists them)`,
        );
      }
    }
  }

  private async resyncTable(table: ServiceTable): Promise<void> {
    for (const key of [...this.ports.keys()]) if (!table.has(key)) await this.remove(key);
    for (const key of [...this.failed.keys()]) if (!table.has(key)) await this.remove(key);
    const fresh: ServicePort[] = [];
    for (const sp of table.values()) {
      const p = this.ports.get(sp.key);
      if (p === undefined) fresh.push(sp);
      // The tracker keeps the same object for an unchanged port: nothing to redo
      // (at 10,000 ports, redoing them all would stall the event loop each period).
      else if (p.sp !== sp) await this.update(p, sp);
    }
    await this.addAll(fresh);
    this.ensureSweeper();
  }

  /**
   * Stops accepting everywhere, waits up to `graceMs` for open connections to
   * finish, then closes what is left.
   */
  async close(graceMs = 0): Promise<void> {
    if (this.affinitySweeper !== null) clearInterval(this.affinitySweeper);
    this.affinitySweeper = null;
    const listeners: ProxyListener[] = [...this.draining];
    for (const p of this.ports.values()) {
      listeners.push(p.internal);
      if (p.external !== null) listeners.push(p.external);
      if (p.cluster !== null) listeners.push(p.cluster);
    }
    this.ports.clear();
    this.failed.clear();
    this.exposed.clear();
    await Promise.all(listeners.filter((l) => l.protocol === 'TCP').map((l) => l.close()));
    const deadline = Date.now() + graceMs;
    // After a hand-over, UDP sessions of this process also get to idle out (their clients' datagrams still come here).
    const open = (l: ProxyListener): boolean => (l.protocol === 'TCP' ? l.connections > 0 : l.draining);
    while (Date.now() < deadline && listeners.some(open)) {
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const l of listeners) {
      l.destroyConnections();
      await l.close();
    }
    this.draining.clear();
  }

  private async add(sp: ServicePort): Promise<void> {
    const affinity = new SessionAffinity(sp.affinityTimeoutSeconds);
    let internal: ProxyListener | null = null;
    let external: ProxyListener | null = null;
    const exposedAddress = this.opts.exposeOnLoopback === true ? this.exposedAddressOf(sp) : null;
    try {
      internal = await this.open(sp, 'internal', affinity, exposedAddress);
      external = this.wantsExternal(sp) ? await this.open(sp, 'external', affinity) : null;
      const cluster = this.wantsCluster(sp) ? await this.open(sp, 'cluster', affinity) : null;
      const p: ServicePortListeners = { sp, affinity, internal, external, cluster, exposedAddress };
      this.ports.set(sp.key, p);
      this.failed.delete(sp.key);
      this.opts.onListenersChanged?.();
      if (exposedAddress !== null) {
        this.log.info(
          {
            servicePort: sp.key,
            address: joinHostPort(exposedAddress, sp.port),
            hosts: hostsLine(exposedAddress, sp.namespace, sp.name),
            endpoints: internal.balancer.size,
          },
          `exposed ${sp.key} on ${joinHostPort(exposedAddress, sp.port)}`,
        );
        return;
      }
      if (this.bulk !== null) this.bulk.opened++;
      (this.bulk === null ? this.log.info : this.log.debug).call(
        this.log,
        {
          servicePort: sp.key,
          proxyPort: internal.port,
          ...(external !== null ? { externalProxyPort: external.port } : {}),
          ...(cluster !== null ? { clusterProxyPort: cluster.port } : {}),
          clusterIPs: sp.clusterIPs,
          endpoints: internal.balancer.size,
        },
        'opened proxy port',
      );
    } catch (err) {
      if (internal !== null) await this.closeListener(internal, exposedAddress === null ? portOwner(sp.key, 'internal') : null);
      if (external !== null) await this.closeListener(external, portOwner(sp.key, 'external'));
      const error = errorMessage(err);
      if (this.failed.get(sp.key)?.error !== error) {
        this.log.error(
          { servicePort: sp.key, err: error, code: errorCode(err) },
          exposedAddress === null ? 'cannot open proxy port; will retry at the next sync' : `${error}; will retry at the next sync`,
        );
      }
      this.failed.set(sp.key, { sp, error });
    }
  }

  private async update(p: ServicePortListeners, sp: ServicePort): Promise<void> {
    if (p.exposedAddress !== null && p.internal.port !== sp.port) {
      // A named port whose number changed: its exposure moves with it.
      await this.remove(sp.key);
      await this.add(sp);
      return;
    }
    p.sp = sp;
    // The annotation applies to connections dialled from now on; open ones keep what they were sent.
    for (const l of [p.internal, p.external, p.cluster]) if (l instanceof TcpProxy) l.proxyProtocol = sp.proxyProtocol;
    const affinityOn = sp.affinityTimeoutSeconds > 0;
    p.affinity.setTimeout(sp.affinityTimeoutSeconds);
    if (p.internal.balancer.follow(sp, 'internal', p.affinity) > 0) this.followEndpoints(sp, p.internal);
    if (this.wantsExternal(sp)) {
      if (p.external === null) {
        try {
          p.external = await this.open(sp, 'external', p.affinity);
          this.opts.onListenersChanged?.();
        } catch (err) {
          this.log.error({ servicePort: sp.key, err: errorMessage(err), code: errorCode(err) }, 'cannot open external proxy port');
        }
      } else if (p.external.balancer.follow(sp, 'external', p.affinity) > 0) {
        this.followEndpoints(sp, p.external);
      }
    } else if (p.external !== null) {
      const ext = p.external;
      p.external = null;
      await this.closeListener(ext, portOwner(sp.key, 'external'));
      this.opts.onListenersChanged?.();
    }
    if (this.wantsCluster(sp)) {
      if (p.cluster === null) {
        try {
          p.cluster = await this.open(sp, 'cluster', p.affinity);
        } catch (err) {
          this.log.error({ servicePort: sp.key, err: errorMessage(err), code: errorCode(err) }, 'cannot open cluster-wide proxy port');
        }
      } else if (p.cluster.balancer.follow(sp, 'cluster', p.affinity) > 0) {
        this.followEndpoints(sp, p.cluster);
      }
    } else if (p.cluster !== null) {
      const cl = p.cluster;
      p.cluster = null;
      await this.closeListener(cl, portOwner(sp.key, 'cluster'));
    }
    if (!affinityOn) return;
    const live = new Set<string>();
    for (const e of p.internal.balancer.endpoints) live.add(e.id);
    if (p.external !== null) for (const e of p.external.balancer.endpoints) live.add(e.id);
    if (p.cluster !== null) for (const e of p.cluster.balancer.endpoints) live.add(e.id);
    p.affinity.purge(live);
  }

  /**
   * Endpoints left a listener's set. A UDP session has no end of its own to
   * wait for, so one bound to a gone endpoint is ended now and its client's
   * next datagram is balanced afresh. TCP connections end by themselves (a
   * terminating pod may still be finishing them), so they are left alone.
   */
  private followEndpoints(sp: ServicePort, l: ProxyListener): void {
    if (l.protocol !== 'UDP') return;
    const ended = l.endSessionsOfGoneEndpoints();
    if (ended > 0) this.log.info({ servicePort: sp.key, proxyPort: l.port, sessions: ended }, 'closed UDP sessions whose endpoint left');
  }

  private async remove(key: ServicePortKey): Promise<void> {
    const gone = this.ports.get(key)?.sp ?? this.failed.get(key)?.sp;
    this.failed.delete(key);
    const p = this.ports.get(key);
    if (gone !== undefined) this.forgetExposedIfUnused(gone.serviceName, key);
    if (p === undefined) return;
    this.ports.delete(key);
    this.opts.onListenersChanged?.();
    await this.closeListener(p.internal, p.exposedAddress === null ? portOwner(key, 'internal') : null);
    if (p.external !== null) await this.closeListener(p.external, portOwner(key, 'external'));
    if (p.cluster !== null) await this.closeListener(p.cluster, portOwner(key, 'cluster'));
    if (p.exposedAddress !== null)
      this.log.info({ servicePort: key, address: joinHostPort(p.exposedAddress, p.internal.port) }, 'closed exposed port');
    else this.log.info({ servicePort: key, proxyPort: p.internal.port }, 'closed proxy port');
  }

  private async open(
    sp: ServicePort,
    scope: ListenerScope,
    affinity: SessionAffinity,
    exposedAddress: string | null = null,
  ): Promise<ProxyListener> {
    const balancer = new Balancer(createStrategy(this.opts.lbStrategy));
    balancer.follow(sp, scope, affinity);
    const name = scope === 'internal' ? sp.key : `${sp.key} (${scope})`;
    const budget = this.budget;
    const listener: ProxyListener =
      sp.protocol === 'TCP'
        ? new TcpProxy({
            name,
            balancer,
            logger: this.log,
            idleTimeoutMs: this.opts.tcpIdleTimeoutMs,
            nativeRelay: this.opts.nativeRelay ?? null,
            budget,
            proxyProtocol: sp.proxyProtocol,
            anyFamily: exposedAddress !== null,
          })
        : new UdpProxy({
            name,
            balancer,
            logger: this.log,
            sessionTimeoutMs: this.opts.udpTimeoutMs,
            maxSessions: this.opts.udpMaxSessions,
            budget,
            bufferSize: this.opts.udpBufferSize ?? DEFAULT_UDP_BUFFER_SIZE,
            onBuffers: (b) => this.noteUdpBuffers(b),
            anyFamily: exposedAddress !== null,
            nativeRelay: this.opts.nativeRelay ?? null,
          });
    if (!budget.take(1)) {
      throw new KupError(
        'KUP_FD_EXHAUSTED',
        `out of file descriptors (${budget.inUse} of the data plane's ${budget.limit} in use); raise the open-files limit`,
      );
    }
    if (exposedAddress !== null) {
      try {
        await listener.listen(exposedAddress, sp.port, false);
        return listener;
      } catch (err) {
        budget.give(1);
        throw exposeListenError(err, exposedAddress, sp.port);
      }
    }
    const refused = new Set<number>();
    try {
      for (;;) {
        const port = this.allocator.allocate(refused, portOwner(sp.key, scope));
        if (port === undefined) {
          throw new KupError(
            'KUP_PORT_RANGE_EXHAUSTED',
            `no free port left in --proxy-port-range (${refused.size} in use by other processes)`,
          );
        }
        try {
          await this.listenOn(listener, port, sp.protocol);
          return listener;
        } catch (err) {
          this.allocator.release(port);
          if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE' || port === 0) throw err;
          refused.add(port);
        }
      }
    } catch (err) {
      budget.give(1);
      throw err;
    }
  }

  /**
   * Hand-over: binds the listeners of the shared ports the first sync set up
   * (balancers filled, rules pointing at them). A failure is logged: the
   * predecessor then keeps that port's connections until it is told to stop.
   */
  async bindShared(): Promise<void> {
    const waiting = this.deferred ?? [];
    this.deferred = null;
    const live = new Set<ProxyListener>();
    for (const p of this.ports.values()) for (const l of [p.internal, p.external, p.cluster]) if (l !== null) live.add(l);
    for (const { listener, bind } of waiting) {
      // Closed by a sync meanwhile: its port is no longer this kup's.
      if (!live.has(listener)) continue;
      try {
        await bind();
      } catch (err) {
        this.log.error(
          { listener: listener.port, err: errorMessage(err), code: errorCode(err) },
          'cannot bind a proxy port shared with the predecessor',
        );
      }
    }
  }

  /** 0.0.0.0 means every address: listen on :: (dual-stack) where the host has IPv6, else on 0.0.0.0. */
  private async listenOn(listener: ProxyListener, port: number, protocol: 'TCP' | 'UDP'): Promise<void> {
    if (this.deferred !== null && port !== 0 && this.opts.sharedPorts?.has(port) === true) {
      listener.expectPort(port);
      this.deferred.push({ listener, bind: () => this.listenNow(listener, port, protocol) });
      return;
    }
    await this.listenNow(listener, port, protocol);
  }

  private async listenNow(listener: ProxyListener, port: number, protocol: 'TCP' | 'UDP'): Promise<void> {
    // Always SO_REUSEPORT (a successor must be able to join); a port not shared with a predecessor is probed first.
    const shared = port === 0 || this.opts.sharedPorts?.has(port) === true;
    const bind = async (host: string, ipv6Only: boolean): Promise<void> => {
      if (!shared) await probeFree(protocol, host, port, ipv6Only);
      await listener.listen(host, port, ipv6Only, true);
    };
    if (this.listenHost !== null) {
      await bind(this.listenHost.host, this.listenHost.ipv6Only);
      return;
    }
    if (this.opts.bindAddress === '0.0.0.0') {
      try {
        await bind('::', false);
        this.listenHost = { host: '::', ipv6Only: false };
        return;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL' && code !== 'EINVAL') throw err;
      }
    }
    await bind(this.opts.bindAddress, false);
    this.listenHost = { host: this.opts.bindAddress, ipv6Only: false };
  }

  private wantsExternal(sp: ServicePort): boolean {
    return this.opts.exposeOnLoopback !== true && needsExternalListener(sp);
  }

  private wantsCluster(sp: ServicePort): boolean {
    return this.opts.exposeOnLoopback !== true && needsClusterListener(sp);
  }

  /** The Service's loopback address: the one it has, else a new one distinct from the others'. */
  private exposedAddressOf(sp: ServicePort): string {
    const known = this.exposed.get(sp.serviceName);
    if (known !== undefined) return known.address;
    const taken = new Set<string>();
    for (const e of this.exposed.values()) taken.add(e.address);
    const address = loopbackAddressFor(sp.namespace, sp.name, taken);
    this.exposed.set(sp.serviceName, { namespace: sp.namespace, name: sp.name, address });
    return address;
  }

  /** Gives a Service's address back once none of its ports (but `leaving`) is listening or waiting to. */
  private forgetExposedIfUnused(name: ServiceName, leaving: ServicePortKey): void {
    if (!this.exposed.has(name)) return;
    for (const [key, p] of this.ports) if (key !== leaving && p.sp.serviceName === name) return;
    for (const [key, f] of this.failed) if (key !== leaving && f.sp.serviceName === name) return;
    this.exposed.delete(name);
  }

  /** `owner` null: the listener's port is not the allocator's (an exposed Service's real port). */
  private async closeListener(l: ProxyListener, owner: string | null): Promise<void> {
    if (owner !== null) this.allocator.release(l.port, owner);
    this.budget.give(1);
    await l.close();
    if (l.protocol === 'TCP' && l.connections > 0) {
      // Established connections outlive their listener; keep a handle until they end for shutdown.
      this.draining.add(l);
    }
  }

  /** Purges expired affinity entries now and then, as the legacy proxier did each sync. */
  private ensureSweeper(): void {
    if (this.affinitySweeper !== null) return;
    this.affinitySweeper = setInterval(() => {
      for (const p of this.ports.values()) if (p.sp.affinityTimeoutSeconds > 0) p.affinity.purge();
      for (const l of this.draining) if (l.connections === 0) this.draining.delete(l);
    }, 60_000);
    this.affinitySweeper.unref();
  }
}

/** Why a Service's port cannot be exposed, in the words a laptop user needs. */
function exposeListenError(err: unknown, address: string, port: number): KupError {
  const at = joinHostPort(address, port);
  switch ((err as NodeJS.ErrnoException).code) {
    case 'EACCES':
      return new KupError(
        'KUP_LISTEN_FAILED',
        `cannot listen on ${at}: ports below 1024 need root or CAP_NET_BIND_SERVICE (or sysctl net.ipv4.ip_unprivileged_port_start=${port})`,
      );
    case 'EADDRNOTAVAIL':
      return new KupError(
        'KUP_LISTEN_FAILED',
        `cannot listen on ${at}: ${address} is not a local address here (Linux has all of 127.0.0.0/8; elsewhere add it as a loopback alias)`,
      );
    case 'EADDRINUSE':
      return new KupError('KUP_LISTEN_FAILED', `cannot listen on ${at}: another process is listening there`);
    default:
      return new KupError('KUP_LISTEN_FAILED', `cannot listen on ${at}: ${errorMessage(err)}`);
  }
}
