/**
 * The native UDP relay thread (native/udp.c) as the UDP data plane sees it.
 * TypeScript binds each listener and keeps picking endpoints; the thread
 * moves the datagrams (recvmmsg/sendmmsg) of every client that has a session,
 * and asks, in batches, for a pick when a new client appears.
 */
import { constants } from 'node:os';
import type { Socket as DgramSocket } from 'node:dgram';

/** The addon's UDP exports. */
export interface UdpBinding {
  udpStart(onEvents: (records: Float64Array, addresses: string[]) => void): void;
  udpAdd(id: number, fd: number, timeoutMs: number, counters: ArrayBuffer): number;
  udpRemove(id: number): void;
  udpOpen(sessionId: number, ip: string, port: number, bufferSize: number): number;
  udpRefuse(sessionId: number): void;
  udpEnd(sessionId: number): void;
  udpAdopt(sessionId: number, bufferSize: number): void;
  udpRelease(id: number): void;
}

/**
 * Why the thread ended a session (native/udp.c's END_*, in order); 'no-client-socket':
 * at a hand-over the session could not get its own socket (a local shortage, not the endpoint's fault).
 */
export type NativeUdpEnd = 'idle' | 'error' | 'no-client-socket';
const END_REASONS: readonly NativeUdpEnd[] = ['idle', 'error', 'no-client-socket'];

/** What a listener is told by the thread (on the JS thread, in batches). */
export interface NativeUdpHandler {
  /** A client with no session sent a datagram (queued on the thread): pick, then open() or refuse(). */
  onNewSession(sessionId: number, address: string, port: number): void;
  /** The thread ended a session: idle for the timeout, or its endpoint failed (errno, e.g. ECONNREFUSED). */
  onSessionEnd(sessionId: number, why: NativeUdpEnd, errno: number): void;
}

/** Counter slots of a listener's ArrayBuffer (native/udp.c's C_*). */
export const UDP_COUNTER = { in: 0, out: 1, dropped: 2 } as const;
const RECORD = 5;
const EV_NEW = 0;
const EV_END = 1;
const EV_CLOSED = 2;
const EV_RELEASED = 3;

/** One listener registered with the thread. */
export class NativeUdpListener {
  /** Datagrams in/out/dropped, written by the thread, read here at will. */
  readonly counters: Float64Array;
  private closed: Promise<void> | null = null;
  private resolveClosed: (() => void) | null = null;
  private released: Promise<void> | null = null;
  private resolveReleased: (() => void) | null = null;

  constructor(
    private readonly binding: UdpBinding,
    readonly id: number,
    counters: Float64Array,
    readonly handler: NativeUdpHandler,
  ) {
    this.counters = counters;
  }

  /** Connects the session's socket to the endpoint and hands it to the thread: 0, or the errno (session dropped). */
  open(sessionId: number, ip: string, port: number, bufferSize: number): number {
    return this.binding.udpOpen(sessionId, ip, port, bufferSize);
  }

  /** No endpoint (or no descriptor) for the session: its queued datagrams are dropped and counted. */
  refuse(sessionId: number): void {
    this.binding.udpRefuse(sessionId);
  }

  /** Ends a session TypeScript decided to end (eviction, endpoint gone); no event follows. */
  end(sessionId: number): void {
    this.binding.udpEnd(sessionId);
  }

  /**
   * Hand-over: the thread gives the open session a socket bound to the proxy
   * port (SO_REUSEPORT) and connected to its client, which the client's
   * datagrams then arrive on and its replies leave from. If it cannot, the
   * session ends ('no-client-socket').
   */
  adopt(sessionId: number, bufferSize: number): void {
    this.binding.udpAdopt(sessionId, bufferSize);
  }

  /**
   * Hand-over, after adopt() of every session: the thread stops reading the
   * listener and closes its copy; sessions go on on their client sockets.
   * Resolves once the copy is closed.
   */
  release(): Promise<void> {
    if (this.released !== null) return this.released;
    this.released = new Promise<void>((resolve) => (this.resolveReleased = resolve));
    this.binding.udpRelease(this.id);
    return this.released;
  }

  /** @internal the thread reported the release. */
  onReleased(): void {
    this.resolveReleased?.();
  }

  /** Ends every session and closes the thread's copy of the listener; resolves once it is closed. */
  close(): Promise<void> {
    if (this.closed !== null) return this.closed;
    this.closed = new Promise<void>((resolve) => (this.resolveClosed = resolve));
    this.binding.udpRemove(this.id);
    return this.closed;
  }

  /** @internal the thread reported the close. */
  onClosed(): void {
    this.resolveClosed?.();
  }
}

/** The process's one UDP relay thread, started on the first listener. */
export class NativeUdpRelay {
  private readonly listeners = new Map<number, NativeUdpListener>();
  private nextId = 1;
  private started = false;

  constructor(private readonly binding: UdpBinding) {}

  /**
   * Hands a bound dgram socket's datagrams to the thread. libuv stops reading
   * it first (the socket stays Node's for address(), buffer sizes and close);
   * the thread reads a dup() of its descriptor. null when the descriptor
   * cannot be had: the caller keeps the TypeScript path.
   */
  add(sock: DgramSocket, timeoutMs: number, handler: NativeUdpHandler): NativeUdpListener | null {
    const handle = udpHandleOf(sock);
    if (handle === null) return null;
    if (!this.started) {
      this.binding.udpStart((records, addresses) => this.onEvents(records, addresses));
      this.started = true;
    }
    handle.recvStop();
    const buffer = new ArrayBuffer(3 * Float64Array.BYTES_PER_ELEMENT);
    const id = this.nextId++;
    if (this.binding.udpAdd(id, handle.fd, timeoutMs, buffer) !== 0) {
      handle.recvStart();
      return null;
    }
    const l = new NativeUdpListener(this.binding, id, new Float64Array(buffer), handler);
    this.listeners.set(id, l);
    return l;
  }

  private onEvents(records: Float64Array, addresses: string[]): void {
    let a = 0;
    for (let i = 0; i < records.length; i += RECORD) {
      const kind = records[i]!;
      const l = this.listeners.get(records[i + 1]!);
      if (kind === EV_NEW) {
        const address = addresses[a++]!;
        if (l === undefined) continue;
        l.handler.onNewSession(records[i + 2]!, address, records[i + 3]!);
      } else if (kind === EV_END) {
        l?.handler.onSessionEnd(records[i + 2]!, END_REASONS[records[i + 3]!] ?? 'error', records[i + 4]!);
      } else if (kind === EV_CLOSED && l !== undefined) {
        // The ArrayBuffer stays reachable through `l` until here: the thread writes it until the close.
        this.listeners.delete(l.id);
        l.onClosed();
        // A close resolves a release still awaited (the thread closed the copy either way).
        l.onReleased();
      } else if (kind === EV_RELEASED) {
        l?.onReleased();
      }
    }
  }
}

/** Errnos of a session socket that say this host is short of resources, not that the endpoint failed. */
export const LOCAL_RESOURCE_ERRNOS: ReadonlySet<number> = new Set([
  constants.errno.EMFILE,
  constants.errno.ENFILE,
  constants.errno.ENOBUFS,
  constants.errno.ENOMEM,
]);

interface UdpWrapHandle {
  readonly fd: number;
  recvStop(): number;
  recvStart(): number;
}

/** The UDPWrap under a bound dgram socket (Node keeps it behind a module-private symbol), or null. */
function udpHandleOf(sock: DgramSocket): UdpWrapHandle | null {
  const sym = Object.getOwnPropertySymbols(sock).find((s) => s.description === 'state symbol');
  if (sym === undefined) return null;
  const state = (sock as unknown as Record<symbol, { handle?: Partial<UdpWrapHandle> | null } | undefined>)[sym];
  const h = state?.handle;
  if (h == null || typeof h.fd !== 'number' || h.fd < 0 || typeof h.recvStop !== 'function' || typeof h.recvStart !== 'function') {
    return null;
  }
  return h as UdpWrapHandle;
}
