import { mkdir, rmdir, stat, unlink } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { errorMessage, KupError } from '../core/errors.js';

/** The socket a running kup holds in its state directory. */
export const LOCK_SOCKET = 'kup.sock';
/** A takeover marker older than this was left by a kup that died mid-takeover. */
const STALE_MARKER_MS = 10_000;
const ASK_TIMEOUT_MS = 2000;

interface Holder {
  readonly pid: number;
}

/**
 * One kup with iptables per state directory, checked before any rule is
 * touched: a second kup started by mistake must exit without flushing the
 * running one's chains.
 *
 * The lock is a Unix socket bound in the state directory (root's, mode 0700,
 * so no other user can squat it). bind() is atomic and fails while the file
 * exists; a live holder answers a connection with its pid, a dead one's file
 * refuses connections (the kernel closed its socket, even after SIGKILL), so
 * a stale lock is told from a live one without guessing from pids that may
 * have been reused. The same socket is where a successor kup will later ask
 * its predecessor to hand over.
 */
export class InstanceLock {
  private constructor(
    readonly path: string,
    private readonly server: net.Server,
  ) {}

  static async acquire(stateDir: string): Promise<InstanceLock> {
    try {
      await mkdir(stateDir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new KupError(
        'KUP_STATE_DIR',
        `--state-dir ${stateDir}: cannot create it (${(err as NodeJS.ErrnoException).code ?? errorMessage(err)})`,
      );
    }
    const path = join(stateDir, LOCK_SOCKET);
    for (let attempt = 0; attempt < 50; attempt++) {
      const server = await listenOn(path);
      if (server !== null) return new InstanceLock(path, server);
      const holder = await ask(path);
      if (typeof holder === 'object') {
        throw new KupError(
          'KUP_ALREADY_RUNNING',
          `another kup (pid ${holder.pid}) is running with --state-dir ${stateDir}; not touching iptables. Stop it first (or run this one with --no-iptables)`,
        );
      }
      if (holder === 'dead') await removeStale(path);
    }
    throw new KupError('KUP_ALREADY_RUNNING', `${path}: cannot take the lock (held, then freed, again and again); not touching iptables`);
  }

  /** Frees the lock (closing the server removes the socket file). */
  release(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** Binds `path`; null when it already exists (held, or left by a dead kup). */
function listenOn(path: string): Promise<net.Server | null> {
  return new Promise((resolve, reject) => {
    const server = net.createServer((c) => {
      c.on('error', () => undefined);
      c.end(`${JSON.stringify({ pid: process.pid })}\n`);
    });
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

/** Who holds `path`: a live kup (its pid), a dead one's file ('dead'), or nothing ('absent'). */
function ask(path: string): Promise<Answer> {
  return new Promise((resolve) => {
    const c = net.connect(path);
    let text = '';
    const timer = setTimeout(() => c.destroy(), ASK_TIMEOUT_MS);
    c.setEncoding('utf8');
    c.on('data', (d: string) => (text += d));
    c.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === 'ECONNREFUSED') resolve('dead');
      else if (err.code === 'ENOENT') resolve('absent');
      // Something answers but oddly: treat it as held, the side that touches no rules.
      else resolve({ pid: 0 });
    });
    c.on('close', (hadError) => {
      clearTimeout(timer);
      if (hadError) return;
      const pid = /"pid":(\d+)/.exec(text)?.[1];
      resolve({ pid: pid === undefined ? 0 : Number(pid) });
    });
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
