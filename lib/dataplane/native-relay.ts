import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { Socket } from 'node:net';
import { KupError, errorMessage } from '../core/errors.js';
import { NativeUdpRelay, type UdpBinding } from './native-udp.js';
import { NativeAcceptor, type AcceptBinding } from './native-accept.js';

/** `--relay`: which code moves the bytes of established TCP connections. */
export const RELAY_CHOICES = ['auto', 'native', 'js'] as const;
export type RelayChoice = (typeof RELAY_CHOICES)[number];
/** The relay in use: the native addon's epoll thread, or splice.ts on Node's sockets. */
export type RelayKind = 'native' | 'js';

/** How a relayed connection ended (codes of native/relay.c's `enum how`, in order). */
export const RELAY_ENDS = ['closed', 'reset', 'idle', 'aborted', 'early-reset', 'error'] as const;
export type RelayEnd = (typeof RELAY_ENDS)[number];

export interface RelayClose {
  /** Client bytes that reached the endpoint (kup's PROXY header not counted), and the reverse. */
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly end: RelayEnd;
  /**
   * 'early-reset' only: the endpoint reset before a byte went either way. The
   * client's descriptor is handed back to JS (which now owns it) with the bytes
   * it sent that never reached the endpoint, to be dialled elsewhere.
   */
  readonly clientFd: number;
  readonly unsent: Buffer | null;
}

/** The addon's exports (native/relay.c; the UDP ones of native/udp.c and native/accept.c's are optional: an older build lacks them). */
interface RelayBinding extends Partial<UdpBinding>, Partial<AcceptBinding> {
  start(onCloses: (records: Float64Array, unsent: Buffer[]) => void): void;
  add(
    id: number,
    clientFd: number,
    endpointFd: number,
    initial: Buffer | null,
    preambleLength: number,
    group: number,
    idleMs: number,
    earlyResetHandBack: boolean,
  ): number;
  abort(group?: number): void;
  collect(): void;
}

const RECORD = 5;

/**
 * The process's one native relay thread. TypeScript accepts, picks and
 * dials; once both sockets are connected their descriptors are handed over
 * with relay(), and the thread reports each close back (in batches) to the
 * callback given for it, where the data plane's bookkeeping goes on.
 */
export class NativeRelay {
  private readonly binding: RelayBinding;
  private readonly pending = new Map<number, (c: RelayClose) => void>();
  private nextId = 1;
  private nextGroup = 1;
  private udpRelay: NativeUdpRelay | null | undefined;
  /**
   * The thread's own accept and dial, with TypeScript's picks (native/accept.c);
   * null when the addon has none or KUP_NATIVE_ACCEPT=0.
   */
  readonly acceptor: NativeAcceptor | null;

  constructor(binding: RelayBinding, nativeAccept = process.env.KUP_NATIVE_ACCEPT !== '0') {
    this.binding = binding;
    binding.start((records, unsent) => this.onCloses(records, unsent));
    this.acceptor =
      nativeAccept && typeof binding.acceptStart === 'function' ? new NativeAcceptor(binding as AcceptBinding, () => this.collect()) : null;
  }

  /**
   * A connection id whose close `done` hears of: for a pair the thread
   * itself dials (native accept), handed over when it connects.
   */
  expect(done: (c: RelayClose) => void): number {
    const id = this.nextId++;
    this.pending.set(id, done);
    return id;
  }

  /** The thread reported the connection `id` would have been will never come: it failed before relaying. */
  unexpect(id: number): void {
    this.pending.delete(id);
  }

  /** Connections the thread relays now. */
  get active(): number {
    return this.pending.size;
  }

  /** The UDP relay thread of the same addon (started on its first listener); null if the addon has none. */
  udp(): NativeUdpRelay | null {
    if (this.udpRelay !== undefined) return this.udpRelay;
    const b = this.binding;
    const complete =
      b.udpStart !== undefined &&
      b.udpAdd !== undefined &&
      b.udpRemove !== undefined &&
      b.udpOpen !== undefined &&
      b.udpRefuse !== undefined &&
      b.udpEnd !== undefined;
    this.udpRelay = complete ? new NativeUdpRelay(b as UdpBinding) : null;
    return this.udpRelay;
  }

  /** A number for one listener's connections, so they can be aborted together. */
  newGroup(): number {
    return this.nextGroup++;
  }

  /**
   * Hands a connected pair to the thread: the thread dup()s both descriptors
   * and owns its copies, so the caller then destroys both sockets (closing a
   * duplicate sends nothing). Neither socket may have read anything: the
   * client paused since accept, the endpoint's socket paused before its
   * connect. `initial` goes to the endpoint before any client byte; its first
   * `preambleLength` bytes are kup's own (PROXY header), not counted as the
   * client's. Returns false (nothing taken over) when a descriptor could not
   * be had: the caller relays in JS instead.
   */
  relay(
    client: Socket,
    endpoint: Socket,
    initial: Buffer | null,
    preambleLength: number,
    group: number,
    idleMs: number,
    done: (c: RelayClose) => void,
  ): boolean {
    const cfd = descriptorOf(client);
    const efd = descriptorOf(endpoint);
    if (cfd < 0 || efd < 0) return false;
    const id = this.nextId++;
    if (this.binding.add(id, cfd, efd, initial, preambleLength, group, idleMs, true) !== 0) return false;
    this.pending.set(id, done);
    return true;
  }

  /**
   * Takes the closes the thread has reported but the loop has not delivered
   * yet (a mutex and a count when there are none): called before a pick, so
   * the balancer counts connections that already ended.
   */
  collect(): void {
    if (this.pending.size > 0) this.binding.collect();
  }

  /** Ends a group's connections now (both sides closed), or every connection. */
  abort(group?: number): void {
    if (group === undefined) this.binding.abort();
    else this.binding.abort(group);
  }

  private onCloses(records: Float64Array, unsent: Buffer[]): void {
    let u = 0;
    for (let i = 0; i < records.length; i += RECORD) {
      const id = records[i]!;
      const end = RELAY_ENDS[records[i + 3]!] ?? 'error';
      const done = this.pending.get(id);
      this.pending.delete(id);
      done?.({
        bytesIn: records[i + 1]!,
        bytesOut: records[i + 2]!,
        end,
        clientFd: records[i + 4]!,
        unsent: end === 'early-reset' ? (unsent[u++] ?? null) : null,
      });
    }
  }
}

/** The descriptor under a connected net.Socket (Linux: TCPWrap's fd), or -1. */
function descriptorOf(s: Socket): number {
  const handle = (s as unknown as { _handle?: { fd?: unknown } | null })._handle;
  return typeof handle?.fd === 'number' ? handle.fd : -1;
}

/** Where the addon is: KUP_NATIVE_RELAY_PATH, else build/Release of this package. */
export function nativeRelayPath(): string {
  return process.env.KUP_NATIVE_RELAY_PATH ?? fileURLToPath(new URL('../../../build/Release/kup_relay.node', import.meta.url));
}

let loaded: { relay: NativeRelay | null; why: string } | null = null;

/** Loads the addon and starts its thread once per process; null with the reason when it cannot. */
export function loadNativeRelay(): { relay: NativeRelay | null; why: string } {
  if (loaded !== null) return loaded;
  if (process.platform !== 'linux') return (loaded = { relay: null, why: `the native relay is Linux-only (${process.platform})` });
  const path = nativeRelayPath();
  try {
    const binding = createRequire(import.meta.url)(path) as RelayBinding;
    loaded = { relay: new NativeRelay(binding), why: `addon ${path}` };
  } catch (err) {
    loaded = { relay: null, why: `addon ${path} not loaded: ${errorMessage(err).split('\n')[0]}` };
  }
  return loaded;
}

export interface RelaySelection {
  readonly kind: RelayKind;
  /** null for the JS relay. */
  readonly relay: NativeRelay | null;
  /** Why this one, for the log line. */
  readonly why: string;
}

/** `--relay`: auto takes the native relay when the addon loads; native insists on it. */
export function selectRelay(choice: RelayChoice): RelaySelection {
  if (choice === 'js') return { kind: 'js', relay: null, why: '--relay js' };
  const { relay, why } = loadNativeRelay();
  if (relay !== null) return { kind: 'native', relay, why };
  if (choice === 'native') {
    throw new KupError('KUP_NATIVE_RELAY', `--relay native: ${why}; build it with \`npm run build:native\` or use --relay auto`);
  }
  return { kind: 'js', relay: null, why };
}
