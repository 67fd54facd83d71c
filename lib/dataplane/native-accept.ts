import { constants } from 'node:os';

/**
 * The native accept/dial side of the addon (native/accept.c): the relay
 * thread accepts on listeners JS bound, and dials the endpoints JS picked.
 */
export interface AcceptBinding {
  acceptStart(onEvents: (nums: Float64Array, texts: Buffer) => void): void;
  acceptListen(id: number, fd: number, group: number, wantLocal: boolean): number;
  acceptUnlisten(id: number): void;
  acceptWantLocal(id: number, want: boolean): void;
  acceptDial(
    id: number,
    relayId: number,
    ip: string,
    port: number,
    timeoutMs: number,
    initial: Buffer | null,
    preambleLength: number,
    idleMs: number,
    wantSuccess: boolean,
    hold: boolean,
  ): boolean;
  acceptReset(id: number, release: boolean): void;
  acceptRelease(): void;
  acceptAbort(group: number): void;
  acceptFlush(): void;
}

/** Event kinds of native/accept.c's `enum ev_kind`. */
const EV_ACCEPTED = 0;
const EV_DIAL_FAILED = 1;
const EV_CONNECTED = 2;
const EV_ABORTED = 3;
const EV_ACCEPT_ERROR = 4;
const EV_UNLISTENED = 5;
const NUMS = 8;
const TEXT = 46; // INET6_ADDRSTRLEN

/** One burst of events: addresses are read from it only where they are needed. */
export class AcceptBatch {
  constructor(
    private readonly nums: Float64Array,
    private readonly texts: Buffer,
  ) {}

  /** The client's address as Node's remoteAddress writes it. */
  peerAddress(i: number): string {
    return this.text(i * 2 * TEXT);
  }

  peerPort(i: number): number {
    return this.nums[i * NUMS + 5]!;
  }

  /** The address the client connected to; null unless the listener asked for it (PROXY header). */
  localAddress(i: number): string | null {
    return this.nums[i * NUMS + 6]! < 0 ? null : this.text(i * 2 * TEXT + TEXT);
  }

  localPort(i: number): number {
    return this.nums[i * NUMS + 6]!;
  }

  private text(off: number): string {
    const end = this.texts.indexOf(0, off);
    return this.texts.toString('latin1', off, end < 0 || end > off + TEXT ? off + TEXT : end);
  }
}

/** What a listener accepting natively is told (each call within one burst, answered by commands flushed after it). */
export interface NativeListener {
  accepted(id: number, family: 4 | 6, batch: AcceptBatch, i: number): void;
  dialFailed(id: number, err: NodeJS.ErrnoException): void;
  dialConnected(id: number): void;
  aborted(id: number): void;
  acceptFailed(err: NodeJS.ErrnoException): void;
  /** The thread closed the listener (unlisten): every connection it accepted has been reported. */
  unlistened(): void;
}

const ERRNO_NAMES = new Map<number, string>(Object.entries(constants.errno).map(([k, v]) => [v, k]));

/** An errno from the thread as Node would have raised it (code and message). */
export function errnoError(errno: number, what: string): NodeJS.ErrnoException {
  const code = ERRNO_NAMES.get(errno) ?? `E${errno}`;
  const err: NodeJS.ErrnoException = new Error(code === 'ETIMEDOUT' ? `${what} timed out` : `${what} ${code}`);
  err.code = code;
  err.errno = errno;
  return err;
}

/**
 * Listeners whose connections the relay thread accepts and dials. JS still
 * binds each listener (net.Server: its options, errors and SO_REUSEPORT are
 * Node's), then gives the descriptor to the thread and closes its own copy.
 */
export class NativeAcceptor {
  private readonly binding: AcceptBinding;
  private readonly listeners = new Map<number, NativeListener>();
  private nextListener = 1;
  /** True while a burst is handled: commands then wait for the one flush after it. */
  private inBurst = false;

  /**
   * `beforeBurst` runs once before each burst's picks (the relay's collect():
   * least-connections then counts connections that already ended).
   */
  constructor(
    binding: AcceptBinding,
    private readonly beforeBurst: () => void,
  ) {
    this.binding = binding;
    binding.acceptStart((nums, texts) => this.onEvents(nums, texts));
  }

  /** Starts accepting on `fd` (duplicated: the caller closes its own). Returns the listener's id, or an errno. */
  listen(fd: number, group: number, wantLocal: boolean, l: NativeListener): { id: number } | { errno: number } {
    const id = this.nextListener++;
    const errno = this.binding.acceptListen(id, fd, group, wantLocal);
    if (errno !== 0) return { errno };
    this.listeners.set(id, l);
    this.flush();
    return { id };
  }

  /**
   * Stops accepting and closes the listener. Its connections carry on and
   * their events still reach it, until forget().
   */
  unlisten(id: number): void {
    this.binding.acceptUnlisten(id);
    this.flush();
  }

  /** The listener is unlistened and has no connection left before the relay: no event can name it any more. */
  forget(id: number): void {
    this.listeners.delete(id);
  }

  wantLocal(id: number, want: boolean): void {
    this.binding.acceptWantLocal(id, want);
    this.flush();
  }

  /**
   * Dials `ip:port` for accepted connection `id`; on connecting, the pair
   * goes to the relay as connection `relayId`. `hold`: its first dial.
   */
  dial(
    id: number,
    relayId: number,
    ip: string,
    port: number,
    timeoutMs: number,
    initial: Buffer | null,
    preambleLength: number,
    idleMs: number,
    wantSuccess: boolean,
    hold: boolean,
  ): boolean {
    const ok = this.binding.acceptDial(id, relayId, ip, port, timeoutMs, initial, preambleLength, idleMs, wantSuccess, hold);
    this.flush();
    return ok;
  }

  /** Resets the client of accepted connection `id`; `release`: it had been dialled (held). */
  reset(id: number, release: boolean): void {
    this.binding.acceptReset(id, release);
    this.flush();
  }

  /** A dialled connection that was aborted before it reached the relay. */
  release(): void {
    this.binding.acceptRelease();
  }

  /** Resets a group's connections not yet relayed (each reported aborted). */
  abort(group: number): void {
    this.binding.acceptAbort(group);
    this.flush();
  }

  private flush(): void {
    if (!this.inBurst) this.binding.acceptFlush();
  }

  private onEvents(nums: Float64Array, texts: Buffer): void {
    const batch = new AcceptBatch(nums, texts);
    this.beforeBurst();
    this.inBurst = true;
    try {
      for (let i = 0, r = 0; r < nums.length; i++, r += NUMS) {
        const l = this.listeners.get(nums[r + 2]!);
        const id = nums[r + 1]!;
        switch (nums[r]) {
          case EV_ACCEPTED:
            if (l === undefined) this.binding.acceptReset(id, false);
            else l.accepted(id, nums[r + 4] === 6 ? 6 : 4, batch, i);
            break;
          case EV_DIAL_FAILED:
            l?.dialFailed(id, errnoError(nums[r + 3]!, 'connect'));
            break;
          case EV_CONNECTED:
            l?.dialConnected(id);
            break;
          case EV_ABORTED:
            l?.aborted(id);
            break;
          case EV_UNLISTENED:
            l?.unlistened();
            break;
          case EV_ACCEPT_ERROR:
            l?.acceptFailed(errnoError(nums[r + 3]!, 'accept'));
            break;
        }
      }
    } finally {
      this.inBurst = false;
      this.binding.acceptFlush();
    }
  }
}
