import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { errorMessage } from '../core/errors.js';

/** The file under --state-dir that remembers each service port's proxy port. */
export const PORT_STATE_FILE = 'proxy-ports.json';
const VERSION = 1;
/** Listener changes closer together than this are written once. */
const COALESCE_MS = 200;

/** Proxy port per owner (`${servicePortKey}|${scope}`, as the allocator names them). */
export type PortMap = ReadonlyMap<string, number>;

/**
 * Why a file and not a hash of the service port into --proxy-port-range: a
 * hash collides (two service ports, one proxy port: one of them moves, and
 * which one depends on the order they were opened in), cannot cover kernel-
 * chosen ports (no range set), and reshuffles every port when the range
 * changes. The file keeps whatever port each service port actually had, so
 * a restarted kup binds the ports the installed rules already point at.
 */
export async function readPortState(stateDir: string, log: Logger): Promise<Map<string, number>> {
  const path = join(stateDir, PORT_STATE_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
      log.warn({ file: path, err: errorMessage(err) }, 'cannot read the proxy port state; starting fresh');
    return new Map();
  }
  const ports = parsePortState(text);
  if (ports === null) {
    log.warn({ file: path }, 'proxy port state unreadable (corrupt or from another version); starting fresh');
    return new Map();
  }
  return ports;
}

/** The owner -> port map a state file (or a predecessor's answer) holds; null when it is not one. */
export function parsePortState(text: string): Map<string, number> | null {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof doc !== 'object' || doc === null) return null;
  const { version, ports } = doc as { version?: unknown; ports?: unknown };
  if (version !== VERSION || typeof ports !== 'object' || ports === null) return null;
  const out = new Map<string, number>();
  for (const [owner, port] of Object.entries(ports)) {
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) return null;
    out.set(owner, port);
  }
  return out;
}

export function formatPortState(ports: PortMap): string {
  return JSON.stringify({ version: VERSION, ports: Object.fromEntries([...ports].sort(([a], [b]) => (a < b ? -1 : 1))) });
}

/**
 * Writes the map when the listeners change, coalesced, atomically (a temp
 * file renamed over the old one: a crash mid-write leaves the previous map).
 */
export class PortStateWriter {
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<void> = Promise.resolve();
  private last = '';
  private stopped = false;

  constructor(
    private readonly stateDir: string,
    private readonly read: () => PortMap,
    private readonly log: Logger,
  ) {}

  /** Something changed: write within COALESCE_MS. */
  changed(): void {
    if (this.timer !== null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, COALESCE_MS);
    this.timer.unref();
  }

  /** No more writes (stopping: closing listeners must not erase the map a successor or restart needs). */
  stop(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.stopped = true;
  }

  /** Writes now if the map differs from what was last written. */
  flush(): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.writing = this.writing.then(async () => {
      if (this.stopped) return;
      const text = formatPortState(this.read());
      if (text === this.last) return;
      const path = join(this.stateDir, PORT_STATE_FILE);
      const tmp = `${path}.${process.pid}.tmp`;
      try {
        await writeFile(tmp, `${text}\n`, { mode: 0o600 });
        await rename(tmp, path);
        this.last = text;
      } catch (err) {
        this.log.warn({ file: path, err: errorMessage(err) }, 'cannot write the proxy port state');
      }
    });
    return this.writing;
  }
}
