import { mkdir, rmdir, stat, unlink } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { errorMessage, KupError } from '../core/errors.js';
import { formatPortState, parsePortState, type PortMap } from './port-state.js';

/** The socket a running kup holds in its state directory. */
export const LOCK_SOCKET = 'kup.sock';
/** The socket a successor holds while it takes over (only one successor at a time). */
export const SUCCESSOR_SOCKET = 'kup.sock.next';
/** The hand-over line protocol's version, in the greeting and the HANDOVER request. */
export const HANDOVER_PROTOCOL = 1;
/** A takeover marker older than this was left by a kup that died mid-takeover. */
const STALE_MARKER_MS = 10_000;
const ASK_TIMEOUT_MS = 2000;
/** How long a predecessor may take to stop accepting once told to. */
const RELEASE_TIMEOUT_MS = 10_000;

interface Holder {
  readonly pid: number;
  /** The hand-over protocol version it speaks; 0 for a kup that cannot hand over. */
  readonly handover: number;
}

/** What a running kup gives a successor: its ports, and the way to make it step back. */
export interface HandoverHooks {
  ports(): PortMap;
  /** Stop accepting and leave the rules to the successor; resolves once the listeners are closed. */
  release(): Promise<void>;
}

/** A live kup this one is taking over from. */
export interface Predecessor {
  readonly pid: number;
  /** Its proxy ports by owner: bound alongside it (SO_REUSEPORT), so the rules stay the same. */
  readonly ports: Map<string, number>;
  /** Tells it to stop accepting, waits until it has, then takes kup.sock. */
  release(): Promise<void>;
}

/**
 * One kup with iptables per state directory, checked before any rule is
 * touched. The lock is a Unix socket bound in the state directory (root's,
 * mode 0700, so no other user can squat it). bind() is atomic and fails while
 * the file exists; a live holder answers a connection with a greeting line
 * (pid, hand-over version), a dead one's file refuses connections (the kernel
 * closed its socket, even after SIGKILL), so a stale lock is told from a live
 * one without guessing from pids that may have been reused.
 *
 * Hand-over (line protocol on the same socket; version in the greeting):
 *   holder -> `{"pid":N,"handover":1}`; successor -> `HANDOVER 1`;
 *   holder -> `PORTS {"version":1,"ports":{...}}`; ... successor ready ...;
 *   successor -> `RELEASE`; holder stops accepting, closes kup.sock -> `RELEASED`.
 * The successor first binds kup.sock.next (atomic: one successor at a time)
 * and holds it until it has bound kup.sock itself. kup.sock is briefly absent
 * between the holder's close and the successor's bind (a rename over it is
 * not possible: Node unlinks a Unix server's path when it closes, which would
 * remove the successor's socket); a kup that binds kup.sock in that gap sees
 * the live kup.sock.next and backs off.
 */
export class InstanceLock {
  private hooks: HandoverHooks | null = null;

  private constructor(
    private where: string,
    private server: net.Server,
  ) {
    server.on('connection', (c) => this.serve(c));
  }

  /** The socket held now: kup.sock, or kup.sock.next while taking over. */
  get path(): string {
    return this.where;
  }

  /**
   * Takes the lock, or (`handover`, the default) becomes the successor of the
   * live kup holding it. Throws KUP_ALREADY_RUNNING when another kup holds it
   * and will not hand over (an older kup, or `handover` false).
   */
  static async acquire(stateDir: string, opts: { handover: boolean }): Promise<{ lock: InstanceLock; predecessor: Predecessor | null }> {
    try {
      await mkdir(stateDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new KupError(
        'KUP_STATE_DIR',
        `--state-dir ${stateDir}: cannot create it (${(err as NodeJS.ErrnoException).code ?? errorMessage(err)})`,
      );
    }
    const path = join(stateDir, LOCK_SOCKET);
    const nextPath = join(stateDir, SUCCESSOR_SOCKET);
    for (let attempt = 0; attempt < 50; attempt++) {
      const server = await listenOn(path);
      if (server !== null) {
        const successor = await ask(nextPath);
        if (typeof successor === 'object') {
          await closeServer(server);
          throw new KupError(
            'KUP_ALREADY_RUNNING',
            `a kup (pid ${successor.pid}) is taking over in --state-dir ${stateDir}; not touching iptables`,
          );
        }
        return { lock: new InstanceLock(path, server), predecessor: null };
      }
      const holder = await ask(path);
      if (typeof holder === 'object') {
        if (!opts.handover) {
          throw new KupError(
            'KUP_ALREADY_RUNNING',
            `another kup (pid ${holder.pid}) is running with --state-dir ${stateDir}; not taking over (--no-handover). Stop it first`,
          );
        }
        if (holder.handover !== HANDOVER_PROTOCOL) {
          throw new KupError(
            'KUP_ALREADY_RUNNING',
            `another kup (pid ${holder.pid}) is running with --state-dir ${stateDir} and cannot hand over; not touching iptables. Stop it first (or run this one with --no-iptables)`,
          );
        }
        return InstanceLock.succeed(path, nextPath, holder.pid);
      }
      if (holder === 'dead') await removeStale(path);
    }
    throw new KupError('KUP_ALREADY_RUNNING', `${path}: cannot take the lock (held, then freed, again and again); not touching iptables`);
  }

  private static async succeed(path: string, nextPath: string, pid: number): Promise<{ lock: InstanceLock; predecessor: Predecessor }> {
    let next = await listenOn(nextPath);
    if (next === null && (await ask(nextPath)) === 'dead') {
      await removeStale(nextPath);
      next = await listenOn(nextPath);
    }
    if (next === null)
      throw new KupError('KUP_ALREADY_RUNNING', `another kup is already taking over from pid ${pid}; not touching iptables`);
    const lock = new InstanceLock(nextPath, next);
    try {
      const conn = await HandoverConnection.open(path);
      conn.send(`HANDOVER ${HANDOVER_PROTOCOL}`);
      const answer = await conn.line(ASK_TIMEOUT_MS);
      const ports = answer.startsWith('PORTS ') ? parsePortState(answer.slice(6)) : null;
      if (ports === null) {
        conn.close();
        throw new KupError(
          'KUP_ALREADY_RUNNING',
          `kup pid ${pid} refused to hand over (${answer.slice(0, 80) || 'no answer'}); not touching iptables`,
        );
      }
      const predecessor: Predecessor = {
        pid,
        ports,
        release: async () => {
          conn.send('RELEASE');
          // A predecessor that dies instead of answering has freed everything too.
          await conn.line(RELEASE_TIMEOUT_MS).catch(() => undefined);
          conn.close();
          await lock.moveTo(path);
        },
      };
      return { lock, predecessor };
    } catch (err) {
      await lock.release();
      throw err instanceof KupError
        ? err
        : new KupError('KUP_ALREADY_RUNNING', `cannot reach kup pid ${pid} to take over: ${errorMessage(err)}`);
    }
  }

  /** Answers successors from now on (before: "not ready", so none takes over a kup still starting). */
  serveHandover(hooks: HandoverHooks): void {
    this.hooks = hooks;
  }

  /** Frees the lock (closing the server removes the socket file). */
  release(): Promise<void> {
    return closeServer(this.server);
  }

  /** Successor: binds kup.sock once the predecessor has closed it, then gives up kup.sock.next. */
  private async moveTo(path: string): Promise<void> {
    for (let attempt = 0; attempt < 100; attempt++) {
      const server = await listenOn(path);
      if (server !== null) {
        const old = this.server;
        this.server = server;
        this.where = path;
        server.on('connection', (c) => this.serve(c));
        await closeServer(old);
        return;
      }
      if ((await ask(path)) === 'dead') await removeStale(path);
      else await new Promise((r) => setTimeout(r, 20));
    }
    throw new KupError('KUP_ALREADY_RUNNING', `${path}: the predecessor did not free the lock; still holding ${SUCCESSOR_SOCKET}`);
  }

  private serve(c: net.Socket): void {
    c.on('error', () => undefined);
    c.setEncoding('utf8');
    c.write(`${JSON.stringify({ pid: process.pid, handover: HANDOVER_PROTOCOL })}\n`);
    // A prober (another kup checking the lock) reads the greeting and goes.
    const idle = setTimeout(() => c.destroy(), ASK_TIMEOUT_MS);
    let buf = '';
    let released = false;
    c.on('close', () => clearTimeout(idle));
    c.on('data', (d: string) => {
      buf += d;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line === `HANDOVER ${HANDOVER_PROTOCOL}`) {
          clearTimeout(idle);
          if (this.hooks === null) c.end('ERR not ready\n');
          else c.write(`PORTS ${formatPortState(this.hooks.ports())}\n`);
        } else if (line === 'RELEASE' && this.hooks !== null && !released) {
          released = true;
          void this.hooks.release().then(
            () => c.end('RELEASED\n'),
            (err: unknown) => c.end(`ERR ${errorMessage(err)}\n`),
          );
        } else if (!released) {
          c.end(`ERR unknown request (this kup speaks hand-over version ${HANDOVER_PROTOCOL})\n`);
        }
      }
    });
  }
}

/** The successor's side of the hand-over conversation. */
class HandoverConnection {
  private buf = '';
  private waiting: ((line: string | null) => void) | null = null;
  private closed = false;

  private constructor(private readonly sock: net.Socket) {
    sock.setEncoding('utf8');
    sock.on('error', () => undefined);
    sock.on('data', (d: string) => {
      this.buf += d;
      this.wake();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  static async open(path: string): Promise<HandoverConnection> {
    const sock = net.connect(path);
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    const conn = new HandoverConnection(sock);
    await conn.line(ASK_TIMEOUT_MS); // the greeting
    return conn;
  }

  send(line: string): void {
    this.sock.write(`${line}\n`);
  }

  close(): void {
    this.sock.destroy();
  }

  /** The next line; rejects when the peer closes first or after `ms`. */
  line(ms: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = null;
        reject(new Error('no answer in time'));
      }, ms);
      this.waiting = (line) => {
        clearTimeout(timer);
        this.waiting = null;
        if (line === null) reject(new Error('connection closed'));
        else resolve(line);
      };
      this.wake();
    });
  }

  private wake(): void {
    if (this.waiting === null) return;
    const nl = this.buf.indexOf('\n');
    if (nl >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      this.waiting(line);
    } else if (this.closed) this.waiting(null);
  }
}

/**
 * Closes a lock server. Its path is unlinked at once (libuv does it in
 * close()); the close callback would wait for open connections, among them
 * the hand-over connection still to be answered, so it is not awaited.
 */
function closeServer(server: net.Server): Promise<void> {
  server.close();
  return Promise.resolve();
}

/** Binds `path`; null when it already exists (held, or left by a dead kup). */
function listenOn(path: string): Promise<net.Server | null> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') resolve(null);
      else reject(new KupError('KUP_STATE_DIR', `cannot bind ${path}: ${err.code ?? errorMessage(err)}`));
    });
    server.listen(path, () => {
      // The lock must not keep the process alive on its own.
      server.unref();
      resolve(server);
    });
  });
}

type Answer = Holder | 'dead' | 'absent';

/** Who holds `path`: a live kup (its greeting), a dead one's file ('dead'), or nothing ('absent'). */
function ask(path: string): Promise<Answer> {
  return new Promise((resolve) => {
    const c = net.connect(path);
    let text = '';
    let done = false;
    const finish = (a: Answer): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      c.destroy();
      resolve(a);
    };
    const fromText = (): Holder => {
      const pid = /"pid":(\d+)/.exec(text)?.[1];
      const handover = /"handover":(\d+)/.exec(text)?.[1];
      return { pid: pid === undefined ? 0 : Number(pid), handover: handover === undefined ? 0 : Number(handover) };
    };
    const timer = setTimeout(() => finish(fromText()), ASK_TIMEOUT_MS);
    c.setEncoding('utf8');
    c.on('data', (d: string) => {
      text += d;
      if (text.includes('\n')) finish(fromText());
    });
    c.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ECONNREFUSED') finish('dead');
      else if (err.code === 'ENOENT') finish('absent');
      // Something answers but oddly: treat it as held, the side that touches no rules.
      else finish({ pid: 0, handover: 0 });
    });
    c.on('close', () => finish(fromText()));
  });
}

/**
 * Removes a dead kup's socket file. Two kups may find the same stale file at
 * once: the check-and-unlink runs under a mkdir marker, and only a file that
 * exists and refuses connections is removed (nobody can bind while it
 * exists), so one kup cannot unlink the socket the other has just bound.
 */
async function removeStale(path: string): Promise<void> {
  const marker = `${path}.takeover`;
  try {
    await mkdir(marker);
  } catch {
    const s = await stat(marker).catch(() => null);
    if (s !== null && Date.now() - s.mtimeMs > STALE_MARKER_MS) await rmdir(marker).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 100));
    return;
  }
  try {
    if ((await ask(path)) === 'dead') await unlink(path).catch(() => undefined);
  } finally {
    await rmdir(marker).catch(() => undefined);
  }
}
