import dgram, { type RemoteInfo, type Socket as DgramSocket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import type { Logger } from 'pino';
import { normalizeClientIP, socketAddressFamily } from '../core/address.js';
import type { Balancer } from '../core/balancer/balancer.js';
import type { EndpointState } from '../core/balancer/endpoint-state.js';
import { errorMessage } from '../core/errors.js';
import { isLocalResourceError, type FdBudget } from './fd-budget.js';
import { listenerFamily, PER_CONNECTION, type ListenerFamily } from './listener-family.js';
import type { NativeRelay } from './native-relay.js';
import { LOCAL_RESOURCE_ERRNOS, UDP_COUNTER, type NativeUdpEnd, type NativeUdpListener } from './native-udp.js';
import { ListenerStats } from './stats.js';
import { udpSocketKey, type UdpDropTable } from './udp-drops.js';

/** 4 MiB: a few thousand small datagrams (a DNS burst) wait while the event loop is busy elsewhere. */
export const DEFAULT_UDP_BUFFER_SIZE = 4 * 1024 * 1024;

/** The buffer sizes the kernel gave a listener (it doubles the request and caps it at net.core.[rw]mem_max). */
export interface UdpBufferSizes {
  readonly asked: number;
  readonly receive: number;
  readonly send: number;
}

export interface UdpProxyOptions {
  readonly name: string;
  readonly balancer: Balancer;
  readonly logger: Logger;
  /** A session with no datagram either way for this long is closed. */
  readonly sessionTimeoutMs: number;
  /** At most this many sessions; the least recently created is evicted for a new one. */
  readonly maxSessions: number;
  /** Descriptors the data plane may hold; each session's socket is one. */
  readonly budget: FdBudget;
  /** SO_RCVBUF/SO_SNDBUF asked for every socket (listener and sessions); 0 keeps the kernel's default. */
  readonly bufferSize: number;
  /** Told the sizes the kernel gave the listener, once it is bound. */
  readonly onBuffers?: (sizes: UdpBufferSizes) => void;
  /** True when the listener serves no virtual IP (--expose-on-loopback): any endpoint of either family may answer. */
  readonly anyFamily?: boolean;
  /**
   * The native relay: when given (and its addon has the UDP relay), datagrams
   * move on its UDP thread and only session setup and ends come here. Absent
   * or null: the TypeScript path below (`--relay js`).
   */
  readonly nativeRelay?: NativeRelay | null;
}

/** Datagrams queued while a session's backend socket is still connecting. */
const MAX_PENDING_DATAGRAMS = 64;

/**
 * A client ip:port and the connected socket that relays its datagrams to one
 * endpoint; replies go back to the client from the service socket, so the
 * client sees them come from the address it sent to.
 */
class Session {
  lastActive: number;
  pending: Buffer[] | null = [];
  /**
   * After a hand-over: a socket bound to the proxy port (SO_REUSEPORT) and
   * connected to the client, which replies leave from and the client's
   * datagrams arrive on (see stopAccepting). null while the listener serves.
   */
  reply: DgramSocket | null = null;
  /** Replies that came before the reply socket was connected. */
  replyPending: Buffer[] | null = null;
  constructor(
    readonly key: string,
    readonly clientAddress: string,
    readonly clientPort: number,
    readonly endpoint: EndpointState,
    readonly socket: DgramSocket,
    now: number,
  ) {
    this.lastActive = now;
  }
}

/** A session relayed by the native thread: TypeScript keeps what the balancer and the caps need. */
class NativeSession {
  /** After a hand-over: the thread holds a client socket for it (one more descriptor of the budget). */
  clientSocket = false;
  constructor(
    readonly id: number,
    readonly clientAddress: string,
    readonly endpoint: EndpointState,
  ) {}
}

/** One UDP listener of a service port. */
export class UdpProxy {
  readonly protocol = 'UDP';
  readonly stats = new ListenerStats();
  readonly balancer: Balancer;
  private socket: DgramSocket | null = null;
  private readonly opts: UdpProxyOptions;
  private readonly sessions = new Map<string, Session>();
  /**
   * The session of the last client datagram: a client sending a burst (a DNS
   * resolver's socket) is found without building its ip|port key string per
   * datagram. Cleared when that session ends.
   */
  private last: Session | null = null;
  private sweeper: NodeJS.Timeout | null = null;
  private boundPort = 0;
  /** Whose endpoints a session may reach: set by listen() from the bound address. */
  private family: ListenerFamily = 0;
  /** How /proc/net/udp* names the listener, for its drop count. */
  private procKey = '';
  /** Coarse clock: refreshed by the sweeper so the per-datagram path does not call Date.now(). */
  private now = Date.now();
  /** The native thread's side of this listener; null on the TypeScript path. */
  private native: NativeUdpListener | null = null;
  /** Native sessions by id, oldest first (eviction order). */
  private readonly nativeSessions = new Map<number, NativeSession>();
  /** Where listen() bound, for the reply sockets of a hand-over. */
  private bound: { host: string; ipv6Only: boolean } | null = null;
  /** A successor took the port: no listener; sessions live on their reply sockets until idle. */
  private released = false;

  constructor(opts: UdpProxyOptions) {
    this.opts = opts;
    this.balancer = opts.balancer;
  }

  get port(): number {
    return this.boundPort;
  }

  get connections(): number {
    return this.sessions.size + this.nativeSessions.size;
  }

  /** Which code moves this listener's datagrams. */
  get relay(): 'native' | 'js' {
    return this.native === null ? 'js' : 'native';
  }

  /** The port listen() will bind later (a hand-over's deferred bind): what the rules and state file name meanwhile. */
  expectPort(port: number): void {
    this.boundPort = port;
  }

  /** `reusePort`: SO_REUSEPORT, so a successor kup can bind the same port alongside (hand-over). */
  listen(host: string, port: number, ipv6Only = false, reusePort = false): Promise<number> {
    const type = isIPv6(host) ? 'udp6' : 'udp4';
    const sock = dgram.createSocket({ type, ipv6Only, reuseAddr: false, reusePort });
    return new Promise((resolve, reject) => {
      sock.once('error', reject);
      sock.bind({ address: host, port, exclusive: true }, () => {
        sock.off('error', reject);
        sock.on('error', (err) => {
          this.opts.logger.warn({ listener: this.opts.name, err: errorMessage(err) }, 'UDP socket error');
        });
        this.socket = sock;
        this.bound = { host, ipv6Only };
        if (!this.useNative(sock)) sock.on('message', (msg, rinfo) => this.onClientDatagram(msg, rinfo));
        const local = sock.address();
        this.boundPort = local.port;
        this.family = this.opts.anyFamily === true ? 0 : listenerFamily(host, ipv6Only);
        this.procKey = udpSocketKey(local.address, local.port);
        this.sizeBuffers(sock);
        const every = Math.max(50, Math.min(1000, Math.floor(this.opts.sessionTimeoutMs / 4)));
        this.sweeper = setInterval(() => this.sweep(), every);
        this.sweeper.unref();
        resolve(this.boundPort);
      });
    });
  }

  /**
   * Hands the bound socket's datagrams to the native UDP thread; false (the
   * TypeScript path) when no native relay was given or it cannot take it.
   */
  private useNative(sock: DgramSocket): boolean {
    const udp = this.opts.nativeRelay?.udp() ?? null;
    if (udp === null) return false;
    const native = udp.add(sock, this.opts.sessionTimeoutMs, {
      onNewSession: (id, address) => this.openNativeSession(id, address),
      onSessionEnd: (id, why, errno) => this.onNativeEnd(id, why, errno),
    });
    if (native === null) return false;
    this.native = native;
    // The thread counts datagrams in memory both sides read: the stats read it at scrape time, never per datagram.
    const counters = native.counters;
    for (const [field, slot] of [
      ['datagramsIn', UDP_COUNTER.in],
      ['datagramsOut', UDP_COUNTER.out],
      ['datagramsDropped', UDP_COUNTER.dropped],
    ] as const) {
      let base = this.stats[field];
      Object.defineProperty(this.stats, field, {
        enumerable: true,
        get: () => base + counters[slot]!,
        set: (v: number) => (base = v - counters[slot]!),
      });
    }
    return true;
  }

  private openNativeSession(id: number, address: string): void {
    const native = this.native;
    if (native === null) return;
    // Released: a client the thread saw just before the release; its next datagram reaches the successor.
    if (this.released) {
      native.refuse(id);
      return;
    }
    const family = this.family === PER_CONNECTION ? socketAddressFamily(address) : this.family;
    const client = normalizeClientIP(address);
    const ep = this.balancer.pick(client, null, family);
    if (ep === undefined) {
      this.stats.noEndpoints++;
      native.refuse(id);
      return;
    }
    if (this.nativeSessions.size >= this.opts.maxSessions) {
      const oldest = this.nativeSessions.values().next().value;
      if (oldest !== undefined) {
        this.stats.sessionsEvicted++;
        this.endNativeSession(oldest, true);
      }
    }
    if (!this.opts.budget.take(1)) {
      this.stats.shed++;
      native.refuse(id);
      return;
    }
    const err = native.open(id, ep.endpoint.ip, ep.endpoint.port, this.opts.bufferSize);
    if (err !== 0) {
      this.opts.budget.give(1);
      this.noteNativeFailure(ep, client, err);
      return;
    }
    this.nativeSessions.set(id, new NativeSession(id, address, ep));
    ep.active++;
    this.stats.accepted++;
    this.stats.active++;
  }

  private onNativeEnd(id: number, why: NativeUdpEnd, errno: number): void {
    const s = this.nativeSessions.get(id);
    if (s === undefined) return; // TypeScript ended it first
    if (why === 'no-client-socket') {
      this.opts.logger.warn(
        { listener: this.opts.name, errno },
        'hand-over: a UDP session could not get its own socket on the proxy port; its client is served by the successor',
      );
    }
    if (why === 'error') this.noteNativeFailure(s.endpoint, normalizeClientIP(s.clientAddress), errno);
    this.endNativeSession(s, false);
  }

  /** As the TypeScript path's session 'error' handler: a local shortage sheds, anything else is the endpoint's failure. */
  private noteNativeFailure(ep: EndpointState, client: string, errno: number): void {
    if (LOCAL_RESOURCE_ERRNOS.has(errno)) {
      this.stats.shed++;
      this.opts.budget.noteShed();
    } else {
      this.stats.dialFailures++;
      this.balancer.reportFailure(ep, client);
    }
    if (this.opts.logger.isLevelEnabled('debug')) {
      this.opts.logger.debug({ listener: this.opts.name, endpoint: ep.id, errno }, 'UDP session failed');
    }
  }

  /** Bookkeeping of a native session's end; `tell`: the thread does not know yet. */
  private endNativeSession(s: NativeSession, tell: boolean): void {
    if (!this.nativeSessions.delete(s.id)) return;
    if (tell) this.native?.end(s.id);
    this.opts.budget.give(s.clientSocket ? 2 : 1);
    s.endpoint.active--;
    this.stats.active--;
  }

  /** The listener's drop count as the kernel reports it; called at scrape time, never per datagram. */
  updateKernelDrops(table: UdpDropTable): void {
    const drops = table.get(this.procKey);
    if (drops !== undefined) this.stats.receiveDrops = drops;
  }

  private sizeBuffers(sock: DgramSocket): void {
    const asked = this.opts.bufferSize;
    if (asked <= 0) return;
    try {
      sock.setRecvBufferSize(asked);
      sock.setSendBufferSize(asked);
      this.opts.onBuffers?.({ asked, receive: sock.getRecvBufferSize(), send: sock.getSendBufferSize() });
    } catch (err) {
      this.opts.logger.warn({ listener: this.opts.name, err: errorMessage(err) }, 'cannot size the UDP socket buffers; using the defaults');
    }
  }

  /** True once stopAccepting() ran and sessions remain: close() should wait for them to idle out. */
  get draining(): boolean {
    return this.released && (this.sessions.size > 0 || this.nativeSessions.size > 0);
  }

  /**
   * Hand-over: a successor's listener shares the port (SO_REUSEPORT). Each
   * open session gets its own socket bound to the proxy port and connected to
   * its client: the kernel prefers a connected socket for that client's
   * datagrams, so they keep reaching this session, and its replies leave from
   * the proxy port as before (on the native relay the thread makes and reads
   * these sockets). Then the listener closes, so datagrams of new clients
   * reach only the successor. Sessions end as usual, when idle.
   */
  async stopAccepting(): Promise<void> {
    const sock = this.socket;
    if (sock === null || this.released || this.bound === null) return;
    this.released = true;
    // The native thread does the same for its sessions: it makes each one's
    // socket itself (it knows the client's exact address) and then closes its
    // copy of the listener; `native` stays, for the sessions' ends.
    const native = this.native;
    if (native !== null) {
      for (const s of this.nativeSessions.values()) {
        if (!this.opts.budget.take(1)) {
          this.endNativeSession(s, true);
          continue;
        }
        s.clientSocket = true;
        native.adopt(s.id, this.opts.bufferSize);
      }
      await native.release();
    }
    await Promise.all([...this.sessions.values()].map((s) => this.openReplySocket(s)));
    this.socket = null;
    await new Promise<void>((resolve) => sock.close(() => resolve()));
  }

  /** Binds and connects `s`'s reply socket; on failure the session ends (its client's next datagram goes to the successor). */
  private openReplySocket(s: Session): Promise<void> {
    const bound = this.bound!;
    if (!this.opts.budget.take(1)) {
      this.endSession(s);
      return Promise.resolve();
    }
    const r = dgram.createSocket({ type: isIPv6(bound.host) ? 'udp6' : 'udp4', ipv6Only: bound.ipv6Only, reusePort: true });
    s.reply = r;
    s.replyPending = [];
    return new Promise((resolve) => {
      const fail = (): void => {
        this.endSession(s);
        resolve();
      };
      r.once('error', fail);
      // Ended meanwhile (endSession closed it): nothing to wait for.
      r.once('close', () => resolve());
      r.on('message', (msg, rinfo) => this.onClientDatagram(msg, rinfo));
      r.bind({ address: bound.host, port: this.boundPort, exclusive: true }, () => {
        // Connected at once (same tick): until then this socket takes a share of any client's datagrams,
        // which onClientDatagram serves too.
        r.connect(s.clientPort, s.clientAddress, () => {
          r.off('error', fail);
          r.on('error', () => this.endSession(s));
          const queued = s.replyPending;
          s.replyPending = null;
          if (queued !== null) for (const m of queued) r.send(m);
          resolve();
        });
      });
    });
  }

  close(): Promise<void> {
    if (this.sweeper !== null) clearInterval(this.sweeper);
    this.sweeper = null;
    const sock = this.socket;
    this.socket = null;
    const native = this.native;
    this.native = null;
    // Sessions cannot outlive the socket their replies leave from.
    for (const s of this.nativeSessions.values()) this.endNativeSession(s, false);
    this.destroyConnections();
    this.released = false;
    // The thread holds a copy of the descriptor (or, after a hand-over, its sessions' client
    // sockets): the port is free once it closed them too.
    const nativeClosed = native === null ? Promise.resolve() : native.close();
    if (sock === null) return nativeClosed;
    return nativeClosed.then(() => new Promise((resolve) => sock.close(() => resolve())));
  }

  destroyConnections(): void {
    for (const s of this.sessions.values()) this.endSession(s);
    for (const s of this.nativeSessions.values()) this.endNativeSession(s, true);
  }

  /**
   * Ends at once every session whose endpoint left the balancer's set (removed,
   * or no longer serving), so the client's next datagram opens a session to a
   * live endpoint: a resolver that keeps its source port would otherwise keep
   * asking a dead pod until --udp-timeout of silence. Called when the endpoint
   * set changes, never per datagram. Returns how many sessions ended.
   */
  endSessionsOfGoneEndpoints(): number {
    let ended = 0;
    for (const s of this.sessions.values()) {
      if (s.endpoint.current) continue;
      this.endSession(s);
      ended++;
    }
    for (const s of this.nativeSessions.values()) {
      if (s.endpoint.current) continue;
      this.endNativeSession(s, true);
      ended++;
    }
    this.stats.sessionsEndpointGone += ended;
    return ended;
  }

  private onClientDatagram(msg: Buffer, rinfo: RemoteInfo): void {
    let s = this.last;
    if (s === null || s.clientPort !== rinfo.port || s.clientAddress !== rinfo.address) {
      const key = `${rinfo.address}|${rinfo.port}`;
      s = this.sessions.get(key) ?? this.openSession(key, rinfo) ?? null;
      if (s === null) {
        this.stats.datagramsDropped++;
        return;
      }
      this.last = s;
    }
    s.lastActive = this.now;
    this.stats.datagramsIn++;
    if (s.pending !== null) {
      if (s.pending.length < MAX_PENDING_DATAGRAMS) s.pending.push(msg);
      else this.stats.datagramsDropped++;
      return;
    }
    s.socket.send(msg);
  }

  private openSession(key: string, rinfo: RemoteInfo): Session | undefined {
    // One family per virtual IP: a session reaches endpoints of its datagrams'
    // family only, read from the client's address (which Node already made),
    // once per session, never per datagram.
    const family = this.family === PER_CONNECTION ? socketAddressFamily(rinfo.address) : this.family;
    const ep = this.balancer.pick(normalizeClientIP(rinfo.address), null, family);
    if (ep === undefined) {
      this.stats.noEndpoints++;
      return undefined;
    }
    if (this.sessions.size >= this.opts.maxSessions) {
      const oldest = this.sessions.values().next().value;
      if (oldest !== undefined) {
        this.stats.sessionsEvicted++;
        this.endSession(oldest);
      }
    }
    if (!this.opts.budget.take(1)) {
      this.stats.shed++;
      return undefined;
    }
    const { ip, port } = ep.endpoint;
    const size = this.opts.bufferSize;
    // Replies queue here while the loop is busy: as large a buffer as the listener's (set when connect binds it).
    const sock = dgram.createSocket(
      size > 0
        ? { type: isIPv6(ip) ? 'udp6' : 'udp4', recvBufferSize: size, sendBufferSize: size }
        : { type: isIPv6(ip) ? 'udp6' : 'udp4' },
    );
    const s = new Session(key, rinfo.address, rinfo.port, ep, sock, this.now);
    this.sessions.set(key, s);
    // Released: a new client's datagram that reached a reply socket before it was connected is served, not lost.
    if (this.released) void this.openReplySocket(s);
    ep.active++;
    this.stats.accepted++;
    this.stats.active++;
    sock.on('message', (reply) => {
      s.lastActive = this.now;
      this.stats.datagramsOut++;
      if (s.reply === null) this.socket?.send(reply, s.clientPort, s.clientAddress);
      else if (s.replyPending === null) s.reply.send(reply);
      else if (s.replyPending.length < MAX_PENDING_DATAGRAMS) s.replyPending.push(reply);
    });
    sock.on('error', (err) => {
      // ECONNREFUSED here is the endpoint's ICMP port-unreachable for an earlier datagram.
      if (isLocalResourceError(err)) {
        this.stats.shed++;
        this.opts.budget.noteShed();
      } else {
        this.stats.dialFailures++;
        this.balancer.reportFailure(ep, normalizeClientIP(s.clientAddress));
      }
      if (this.opts.logger.isLevelEnabled('debug')) {
        this.opts.logger.debug({ listener: this.opts.name, endpoint: ep.id, err: errorMessage(err) }, 'UDP session failed');
      }
      this.endSession(s);
    });
    sock.connect(port, ip, () => {
      const queued = s.pending;
      s.pending = null;
      if (queued !== null) for (const m of queued) sock.send(m);
    });
    return s;
  }

  private endSession(s: Session): void {
    if (this.sessions.get(s.key) !== s) return;
    this.sessions.delete(s.key);
    if (this.last === s) this.last = null;
    this.opts.budget.give(1);
    s.endpoint.active--;
    this.stats.active--;
    try {
      s.socket.close();
    } catch {
      // already closed after an error
    }
    if (s.reply !== null) {
      this.opts.budget.give(1);
      try {
        s.reply.close();
      } catch {
        // already closed after an error
      }
    }
  }

  private sweep(): void {
    this.now = Date.now();
    const cutoff = this.now - this.opts.sessionTimeoutMs;
    for (const s of this.sessions.values()) {
      if (s.lastActive <= cutoff) this.endSession(s);
    }
  }
}
