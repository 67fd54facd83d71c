import net, { type Server, type Socket } from 'node:net';
import type { Logger } from 'pino';
import { normalizeClientIP, socketAddressFamily } from '../core/address.js';
import type { Balancer, PickFamily } from '../core/balancer/balancer.js';
import { listenerFamily, PER_CONNECTION, type ListenerFamily } from './listener-family.js';
import type { EndpointState } from '../core/balancer/endpoint-state.js';
import { errorMessage } from '../core/errors.js';
import { proxyProtocolHeader, type ProxyProtocolVersion } from '../core/proxy-protocol.js';
import { isLocalResourceError, type FdBudget } from './fd-budget.js';
import type { AcceptBatch, NativeAcceptor, NativeListener } from './native-accept.js';
import type { NativeRelay, RelayClose } from './native-relay.js';
import { splice } from './splice.js';
import { ListenerStats } from './stats.js';

/**
 * Connect timeouts of successive dial attempts, as the legacy proxier's
 * (250ms, 500ms, 1s, 2s): each attempt asks the balancer for an endpoint not
 * tried yet, so one dead endpoint costs a client at most 250ms.
 */
export const DIAL_TIMEOUTS_MS: readonly number[] = [250, 500, 1000, 2000];

export interface TcpProxyOptions {
  readonly name: string;
  readonly balancer: Balancer;
  readonly logger: Logger;
  /** Close a connection after this long with no bytes either way; 0 = never. */
  readonly idleTimeoutMs: number;
  readonly dialTimeoutsMs?: readonly number[];
  /** Descriptors the data plane may hold; a client beyond it is shed. */
  readonly budget: FdBudget;
  /** The Service's kup.dev/proxy-protocol; null (default) sends nothing of kup's own. */
  readonly proxyProtocol?: ProxyProtocolVersion | null;
  /** True when the listener serves no virtual IP (--expose-on-loopback): any endpoint of either family may answer. */
  readonly anyFamily?: boolean;
  /** Established connections go to this native relay thread; null (default) relays them in JS (splice.ts). */
  readonly nativeRelay?: NativeRelay | null;
}

/** Where a relayed connection's dial stood: what an early reset needs to dial elsewhere. */
interface Dialled {
  readonly clientIP: string;
  readonly ep: EndpointState;
  readonly attempt: number;
  readonly tried: Set<EndpointState> | null;
}

/**
 * A connection the relay thread accepted (native accept): TypeScript picks
 * its endpoints and keeps its retry state; the thread holds its descriptors
 * and dials. Until the thread relays it, it is known by the thread's id.
 */
class NativeConn implements Dialled {
  ep!: EndpointState;
  attempt = 0;
  tried: Set<EndpointState> | null = null;
  /** The relay id of the dial in flight (its close callback); 0 while none is. */
  relayId = 0;
  /** Dialled once: counted by the relay until it reports a close, or is released. */
  held = false;
  constructor(
    readonly id: number,
    readonly clientIP: string,
    /** The client's address as the thread wrote it; '' unless affinity or a PROXY header needed it at accept. */
    readonly peer: string,
    readonly peerPort: number,
    readonly family: PickFamily,
    /** The address the client connected to, when the listener asked the thread for it (PROXY header). */
    readonly local: string | null,
    readonly localPort: number,
  ) {}
}

/**
 * One TCP listener of a service port. Accepting never waits on dialing: each
 * accepted client is paused, its endpoint dialled asynchronously, and the two
 * sockets spliced once the dial succeeds.
 */
export class TcpProxy implements NativeListener {
  readonly protocol = 'TCP';
  readonly stats = new ListenerStats();
  readonly balancer: Balancer;
  private readonly server: Server;
  private readonly opts: TcpProxyOptions;
  private readonly dialTimeouts: readonly number[];
  /** Each open client and, once dialled, its endpoint's socket (what shutdown destroys). */
  private readonly clients = new Map<Socket, Socket | null>();
  private boundPort = 0;
  private listenPending = false;
  /** Whose endpoints a connection may reach: set by listen() from the bound address. */
  private family: ListenerFamily = 0;
  private readonly native: NativeRelay | null;
  /** This listener's connections on the native relay (aborted together). */
  private readonly nativeGroup: number;
  private nativeActive = 0;
  /** The relay thread's own accept and dial (native/accept.c); null: net.Server accepts and net.connect dials. */
  private readonly acceptor: NativeAcceptor | null;
  /** This listener's id with the acceptor once it accepts natively; 0 before. */
  private nativeListener = 0;
  private listenHost = '';
  /** The thread has closed the native listener and reported all it accepted. */
  private listenerGone = false;
  /** Natively accepted connections not yet over, by the thread's id. */
  private readonly nativeConns = new Map<number, NativeConn>();
  /**
   * Client bytes the native relay read but could not deliver before the
   * endpoint reset (early reset), sent first to the next endpoint. Made on
   * the first early reset: most of 10,000 listeners never see one.
   */
  private unsent: WeakMap<Socket, Buffer> | null = null;
  /**
   * PROXY protocol header version sent to each endpoint before the client's
   * bytes; changed by a Service update for connections dialled after it.
   */
  private proxyProtocolVersion: ProxyProtocolVersion | null;

  get proxyProtocol(): ProxyProtocolVersion | null {
    return this.proxyProtocolVersion;
  }

  set proxyProtocol(v: ProxyProtocolVersion | null) {
    const was = this.proxyProtocolVersion;
    this.proxyProtocolVersion = v;
    // The thread reads each connection's local address only for listeners that send it.
    if (this.nativeListener !== 0 && (was === null) !== (v === null)) this.acceptor!.wantLocal(this.nativeListener, v !== null);
  }

  constructor(opts: TcpProxyOptions) {
    this.opts = opts;
    this.balancer = opts.balancer;
    this.dialTimeouts = opts.dialTimeoutsMs ?? DIAL_TIMEOUTS_MS;
    this.proxyProtocolVersion = opts.proxyProtocol ?? null;
    this.native = opts.nativeRelay ?? null;
    this.acceptor = this.native?.acceptor ?? null;
    this.nativeGroup = this.native?.newGroup() ?? 0;
    this.server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true, noDelay: true }, (c) => this.accept(c));
    // EMFILE/ENFILE on accept: libuv keeps listening (it sheds the pending
    // connection with its reserve descriptor); count it and carry on rather
    // than crash as the legacy proxier did.
    this.server.on('error', (err) => {
      // A failed listen() is its caller's to report (once), not an accept failure logged at every retry.
      if (this.listenPending) return;
      this.stats.acceptErrors++;
      this.opts.logger.warn({ listener: this.opts.name, err: errorMessage(err) }, 'accept failed');
    });
  }

  get port(): number {
    return this.boundPort;
  }

  /** Who accepts this listener's connections and dials their endpoints: the relay thread, or Node. */
  get accepting(): 'native' | 'node' {
    return this.nativeListener === 0 ? 'node' : 'native';
  }

  /** Open connections (for graceful shutdown and tests). */
  get connections(): number {
    return this.clients.size + this.nativeActive;
  }

  /** The port listen() will bind later (a hand-over's deferred bind): what the rules and state file name meanwhile. */
  expectPort(port: number): void {
    this.boundPort = port;
  }

  /** `reusePort`: SO_REUSEPORT, so a successor kup can bind the same port alongside (hand-over). */
  listen(host: string, port: number, ipv6Only = false, reusePort = false): Promise<number> {
    return new Promise((resolve, reject) => {
      this.listenPending = true;
      const onError = (err: Error): void => {
        this.listenPending = false;
        reject(err);
      };
      this.server.once('error', onError);
      this.server.listen({ host, port, ipv6Only, exclusive: true, reusePort }, () => {
        this.listenPending = false;
        this.family = this.opts.anyFamily === true ? 0 : listenerFamily(host, ipv6Only);
        this.server.off('error', onError);
        this.boundPort = (this.server.address() as net.AddressInfo).port;
        this.listenHost = host;
        this.acceptNatively();
        resolve(this.boundPort);
      });
    });
  }

  /**
   * Stops accepting; established connections carry on (a service change never
   * drops them). server.close() frees the port at once, but its callback
   * waits for every connection, so it is not awaited.
   */
  close(): Promise<void> {
    if (this.server.listening) this.server.close();
    if (this.nativeListener !== 0) {
      this.acceptor!.unlisten(this.nativeListener);
      this.forgetIfDone();
    }
    return Promise.resolve();
  }

  /**
   * Hands the bound listener to the relay thread, which accepts from now on
   * (Node's copy is closed, so Node stops accepting; the thread's duplicate
   * keeps the socket, its backlog and its SO_REUSEPORT membership).
   * Connections Node accepted before this are served as before.
   */
  private acceptNatively(): void {
    const fd = (this.server as unknown as { _handle?: { fd?: unknown } | null })._handle?.fd;
    if (this.acceptor === null || typeof fd !== 'number' || fd < 0) return;
    const r = this.acceptor.listen(fd, this.nativeGroup, this.proxyProtocolVersion !== null, this);
    if (!('id' in r)) return;
    this.nativeListener = r.id;
    this.server.close();
  }

  /**
   * Ends every open connection now (shutdown after the grace period): both
   * sockets, so neither outlives shutdown should the other fail to close.
   */
  destroyConnections(): void {
    for (const [c, b] of this.clients) {
      c.destroy();
      b?.destroy();
    }
    // The relay thread closes both sides of each and reports them as aborted.
    if (this.nativeActive > 0) this.native?.abort(this.nativeGroup);
    // Those still being picked for or dialled: reset, each reported aborted.
    if (this.nativeConns.size > 0) this.acceptor!.abort(this.nativeGroup);
  }

  // ---- native accept (NativeListener): the same steps as accept/dial/redial below, on the thread's ids.

  accepted(id: number, family: 4 | 6, batch: AcceptBatch, i: number): void {
    this.stats.accepted++;
    const acceptor = this.acceptor!;
    // Accepted by the thread before the listener closed (reported after): served, as Node serves
    // a connection it accepted before server.close().
    // (The relay's closes were collected once before this burst: NativeAcceptor.)
    const pickFamily = this.family === PER_CONNECTION ? family : this.family;
    // The address only where a pick or a PROXY header reads it (one string less per connection otherwise).
    const usesIP = this.balancer.usesClientIP;
    const peer = usesIP || this.proxyProtocolVersion !== null ? batch.peerAddress(i) : '';
    const clientIP = usesIP ? normalizeClientIP(peer) : '';
    const first = this.balancer.pick(clientIP, null, pickFamily);
    if (first === undefined) {
      this.stats.noEndpoints++;
      acceptor.reset(id, false);
      return;
    }
    if (!this.opts.budget.take(2)) {
      this.stats.shed++;
      acceptor.reset(id, false);
      return;
    }
    this.stats.active++;
    this.nativeActive++;
    const c = new NativeConn(id, clientIP, peer, batch.peerPort(i), pickFamily, batch.localAddress(i), batch.localPort(i));
    this.nativeConns.set(id, c);
    this.nativeDial(c, first);
  }

  private nativeDial(c: NativeConn, ep: EndpointState): void {
    ep.active++;
    c.ep = ep;
    let header: Buffer | null = null;
    if (this.proxyProtocolVersion !== null) {
      header = proxyProtocolHeader(this.proxyProtocolVersion, {
        sourceAddress: c.peer,
        sourcePort: c.peerPort,
        destinationAddress: c.local ?? this.listenHost,
        destinationPort: c.local === null ? this.boundPort : c.localPort,
      });
    }
    c.relayId = this.native!.expect((r) => this.nativeConnClosed(r, c));
    const hold = !c.held;
    c.held = true;
    const { ip, port } = ep.endpoint;
    const ok = this.acceptor!.dial(
      c.id,
      c.relayId,
      ip,
      port,
      this.dialTimeouts[c.attempt]!,
      header,
      header?.length ?? 0,
      this.opts.idleTimeoutMs,
      ep.unavailableUntil !== 0,
      hold,
    );
    if (!ok) this.dialFailed(c.id, Object.assign(new Error(`connect: not an IP address: ${ip}`), { code: 'EINVAL' }));
  }

  dialConnected(id: number): void {
    const c = this.nativeConns.get(id);
    if (c !== undefined && c.ep.unavailableUntil !== 0) this.balancer.reportSuccess(c.ep);
  }

  dialFailed(id: number, err: NodeJS.ErrnoException): void {
    const c = this.nativeConns.get(id);
    if (c === undefined || c.relayId === 0) return;
    this.native!.unexpect(c.relayId);
    c.relayId = 0;
    const ep = c.ep;
    ep.active--;
    if (isLocalResourceError(err)) {
      this.stats.shed++;
      this.opts.budget.noteShed();
      this.nativeGiveUp(c);
      return;
    }
    this.stats.dialFailures++;
    const clientIP = c.clientIP || (this.balancer.usesClientIP ? normalizeClientIP(c.peer) : '');
    this.balancer.reportFailure(ep, clientIP);
    const next = c.attempt + 1;
    const log = this.opts.logger;
    if (log.isLevelEnabled('debug')) {
      const why = err.code === 'ETIMEDOUT' ? `connect timeout after ${this.dialTimeouts[c.attempt]}ms` : errorMessage(err);
      log.debug({ listener: this.opts.name, endpoint: ep.id, attempt: next, err: why }, 'dial failed');
    }
    const tried = c.tried ?? new Set<EndpointState>();
    c.tried = tried;
    tried.add(ep);
    const nextEp = next < this.dialTimeouts.length ? this.balancer.pick(clientIP, tried, c.family) : undefined;
    if (nextEp === undefined) {
      this.stats.exhausted++;
      this.nativeGiveUp(c);
      return;
    }
    c.attempt = next;
    this.nativeDial(c, nextEp);
  }

  aborted(id: number): void {
    const c = this.nativeConns.get(id);
    if (c === undefined) return;
    if (c.relayId !== 0) {
      this.native!.unexpect(c.relayId);
      c.ep.active--;
    }
    if (c.held) this.acceptor!.release();
    this.nativeDone(c);
  }

  acceptFailed(err: NodeJS.ErrnoException): void {
    this.stats.acceptErrors++;
    this.opts.logger.warn({ listener: this.opts.name, err: errorMessage(err) }, 'accept failed');
  }

  /** Every endpoint tried (or none left, or no descriptors): the client gets a reset. */
  private nativeGiveUp(c: NativeConn): void {
    this.acceptor!.reset(c.id, c.held);
    this.nativeDone(c);
  }

  private nativeDone(c: NativeConn): void {
    this.nativeConns.delete(c.id);
    this.nativeActive--;
    this.opts.budget.give(2);
    this.stats.active--;
    this.forgetIfDone();
  }

  private nativeConnClosed(r: RelayClose, c: NativeConn): void {
    this.nativeConns.delete(c.id);
    c.relayId = 0;
    this.nativeClosed(r, c);
    this.forgetIfDone();
  }

  unlistened(): void {
    this.listenerGone = true;
    this.forgetIfDone();
  }

  private forgetIfDone(): void {
    if (this.listenerGone && this.nativeConns.size === 0) this.acceptor!.forget(this.nativeListener);
  }

  private accept(client: Socket): void {
    this.stats.accepted++;
    const family = this.connectionFamily(client);
    if (family === undefined) {
      // Reset before it was even looked at: nothing to refuse, nobody to tell.
      client.destroy();
      return;
    }
    this.native?.collect();
    const clientIP = this.clientIPOf(client);
    const first = this.balancer.pick(clientIP, null, family);
    if (first === undefined) {
      // Refused at once, never left hanging: a reset reads as "connection refused/reset" to the client.
      this.stats.noEndpoints++;
      client.on('error', noop);
      client.resetAndDestroy();
      return;
    }
    // Two descriptors per connection: the client's and the endpoint's.
    if (!this.opts.budget.take(2)) {
      this.stats.shed++;
      client.on('error', noop);
      client.resetAndDestroy();
      return;
    }
    this.stats.active++;
    this.clients.set(client, null);
    client.on('error', noop); // until spliced; a reset during the dial only aborts it
    this.dial(client, clientIP, first, 0, null);
  }

  /**
   * The family of the address the client connected to, whose endpoints alone
   * may answer (one family per virtual IP, as kube-proxy). Only a dual-stack
   * listener asks the socket: the peer address (one getpeername(), which Node
   * caches for the affinity key and the PROXY header) has the family of the
   * local one. Undefined when the client is already gone.
   */
  private connectionFamily(client: Socket): PickFamily | undefined {
    if (this.family !== PER_CONNECTION) return this.family;
    const f = socketAddressFamily(client.remoteAddress);
    return f === 0 ? undefined : f;
  }

  private dial(client: Socket, clientIP: string, ep: EndpointState, attempt: number, tried: Set<EndpointState> | null): void {
    ep.active++;
    const { ip, port } = ep.endpoint;
    const backend = net.connect({ host: ip, port, allowHalfOpen: true, noDelay: true });
    // Paused before its connect, so Node never reads from it: whatever the
    // endpoint sends first stays in the kernel for the native relay.
    if (this.native !== null) backend.pause();
    let settled = false;
    const timer = setTimeout(() => fail(new Error(`connect timeout after ${this.dialTimeouts[attempt]}ms`)), this.dialTimeouts[attempt]);
    const onClientGone = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      backend.destroy();
      ep.active--;
      this.finish(client, 0, 0);
    };
    const fail = (err: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.off('close', onClientGone);
      backend.destroy();
      this.redial(client, clientIP, ep, attempt, tried, err);
    };
    client.on('close', onClientGone);
    backend.on('error', fail);
    backend.on('connect', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      client.off('close', onClientGone);
      backend.off('error', fail);
      if (ep.unavailableUntil !== 0) this.balancer.reportSuccess(ep);
      this.connected(client, backend, clientIP, ep, attempt, tried);
    });
  }

  /**
   * Splices a dialled connection. A method of its own so that what lives as
   * long as the connection (its callbacks) holds what they need, not the
   * dial's timer and retry closures.
   */
  private connected(
    client: Socket,
    backend: Socket,
    clientIP: string,
    ep: EndpointState,
    attempt: number,
    tried: Set<EndpointState> | null,
  ): void {
    // Written before relaying, so it precedes every client byte; written again
    // on each endpoint a redial moves the client to. Services without it pay
    // nothing: the peer and local address lookups happen only here.
    let header: Buffer | null = null;
    if (this.proxyProtocol !== null) {
      header = proxyProtocolHeader(this.proxyProtocol, {
        sourceAddress: client.remoteAddress ?? '',
        sourcePort: client.remotePort ?? 0,
        destinationAddress: client.localAddress ?? '',
        destinationPort: client.localPort ?? 0,
      });
    }
    const unsent = this.unsent?.get(client);
    if (unsent !== undefined) this.unsent!.delete(client);
    if (this.native !== null && this.relayNatively(client, backend, header, unsent, { clientIP, ep, attempt, tried })) return;
    if (this.native !== null) backend.resume();
    this.clients.set(client, backend);
    const preamble = header?.length ?? 0;
    if (header !== null) backend.write(header);
    if (unsent !== undefined) backend.write(unsent);
    splice(
      client,
      backend,
      this.opts.idleTimeoutMs,
      (r) => {
        ep.active--;
        this.finish(client, r.bytesIn, r.bytesOut);
      },
      // Reset before a byte went either way: the client has seen nothing, so
      // it can still be moved to another endpoint, as if the dial had failed.
      () => this.redial(client, clientIP, ep, attempt, tried, new Error('reset before any byte was exchanged')),
      preamble,
    );
  }

  /**
   * Hands the pair to the native relay thread, which from now on owns the
   * connection's descriptors; false when it could not take them (the caller
   * relays in JS). Bookkeeping goes on when the thread reports the close.
   */
  private relayNatively(client: Socket, backend: Socket, header: Buffer | null, unsent: Buffer | undefined, d: Dialled): boolean {
    const initial = header === null ? (unsent ?? null) : unsent === undefined ? header : Buffer.concat([header, unsent]);
    const native = this.native!;
    const taken = native.relay(client, backend, initial, header?.length ?? 0, this.nativeGroup, this.opts.idleTimeoutMs, (r) =>
      this.nativeClosed(r, d),
    );
    if (!taken) return false;
    this.clients.delete(client);
    this.nativeActive++;
    // Closing JS's copies sends nothing: the relay's duplicates keep both sockets open.
    client.destroy();
    backend.destroy();
    return true;
  }

  private nativeClosed(r: RelayClose, d: Dialled): void {
    this.nativeActive--;
    if (r.end !== 'early-reset') {
      d.ep.active--;
      this.opts.budget.give(2);
      this.stats.active--;
      this.stats.bytesIn += r.bytesIn;
      this.stats.bytesOut += r.bytesOut;
      return;
    }
    // The endpoint reset before a byte went either way: the client, handed
    // back untouched, is dialled elsewhere as if the dial had failed.
    const client = new net.Socket({ fd: r.clientFd, allowHalfOpen: true, readable: true, writable: true, ...PAUSED });
    client.on('error', noop);
    this.clients.set(client, null);
    if (r.unsent !== null && r.unsent.length > 0) (this.unsent ??= new WeakMap()).set(client, r.unsent);
    this.redial(client, d.clientIP, d.ep, d.attempt, d.tried, new Error('reset before any byte was exchanged'));
  }

  /**
   * The client's address only where a pick depends on it: remoteAddress costs
   * a getpeername() system call per connection, which round-robin and
   * least-connections without affinity never need. (A dual-stack listener
   * makes that call anyway to learn the connection's family; Node caches the
   * answer, so affinity then costs nothing more.)
   */
  private clientIPOf(client: Socket): string {
    return this.balancer.usesClientIP ? normalizeClientIP(client.remoteAddress) : '';
  }

  /** A dial to `ep` failed: try the next endpoint, or give the client up. */
  private redial(client: Socket, clientIP: string, ep: EndpointState, attempt: number, tried: Set<EndpointState> | null, err: Error): void {
    ep.active--;
    if (isLocalResourceError(err)) {
      // This host is out of descriptors or buffers: not the endpoint's fault, and no other endpoint would do better.
      this.stats.shed++;
      this.opts.budget.noteShed();
      client.resetAndDestroy();
      this.finish(client, 0, 0);
      return;
    }
    this.stats.dialFailures++;
    this.balancer.reportFailure(ep, clientIP || this.clientIPOf(client));
    const next = attempt + 1;
    const log = this.opts.logger;
    if (log.isLevelEnabled('debug')) {
      log.debug({ listener: this.opts.name, endpoint: ep.id, attempt: next, err: errorMessage(err) }, 'dial failed');
    }
    if (client.destroyed) {
      this.finish(client, 0, 0);
      return;
    }
    const triedSet = tried ?? new Set<EndpointState>();
    triedSet.add(ep);
    const family = this.connectionFamily(client);
    const nextEp =
      next < this.dialTimeouts.length && family !== undefined
        ? this.balancer.pick(clientIP || this.clientIPOf(client), triedSet, family)
        : undefined;
    if (nextEp === undefined) {
      this.stats.exhausted++;
      client.resetAndDestroy();
      this.finish(client, 0, 0);
      return;
    }
    this.dial(client, clientIP, nextEp, next, triedSet);
  }

  private finish(client: Socket, bytesIn: number, bytesOut: number): void {
    if (!this.clients.delete(client)) return;
    this.opts.budget.give(2);
    this.stats.active--;
    this.stats.bytesIn += bytesIn;
    this.stats.bytesOut += bytesOut;
  }
}

function noop(): void {}

/**
 * Node's own option for a socket that must not read until resumed (what
 * net.Server's pauseOnConnect uses); not in @types/node.
 */
const PAUSED = { pauseOnCreate: true } as object;
