import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { accessSync, constants, readFileSync, readdirSync } from 'node:fs';
import net from 'node:net';

/**
 * Every process the benchmark starts, so that a failure or Ctrl-C still ends
 * them all (each by its own pid; long-lived ones get their own process group
 * so forked children such as socat's go too).
 */
const started = new Set<ChildProcess>();

export interface Started {
  readonly child: ChildProcess;
  readonly pid: number;
  /** stdout + stderr so far (capped), for errors and log parsing. */
  output(): string;
  stop(): Promise<void>;
}

/** Starts a long-lived process in its own process group. */
export function startProcess(cmd: string, args: readonly string[], opts: SpawnOptions = {}): Started {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...opts });
  started.add(child);
  let out = '';
  // kup logs one line per proxy port: 10,000 services are ~2 MB of log.
  const collect = (b: Buffer): void => {
    out += b.toString('utf8');
    if (out.length > 64_000_000) out = out.slice(-8_000_000);
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('exit', () => started.delete(child));
  if (child.pid === undefined) throw new Error(`cannot start ${cmd}`);
  const pid = child.pid;
  return {
    child,
    pid,
    output: () => out,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      killGroup(pid, 'SIGTERM');
      const t = setTimeout(() => killGroup(pid, 'SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
      killGroup(pid, 'SIGKILL'); // forked children left in the group
    },
  };
}

function killGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    // already gone
  }
}

/** Ends every process still running (on exit or failure). */
export function stopAll(): void {
  for (const c of started) if (c.pid !== undefined) killGroup(c.pid, 'SIGKILL');
  started.clear();
}

export interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a bounded command to completion (killed after `timeoutMs`). */
export function runCommand(cmd: string, args: readonly string[], timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    started.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString('utf8')));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (err) => {
      clearTimeout(t);
      started.delete(child);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(t);
      started.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}

/** A port the kernel says is free on loopback now. */
export function freePort(udp = false): Promise<number> {
  if (udp) return freeUdpPort();
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

async function freeUdpPort(): Promise<number> {
  const dgram = await import('node:dgram');
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.once('error', reject);
    s.bind(0, '127.0.0.1', () => {
      const port = s.address().port;
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once a TCP connect to 127.0.0.1:port succeeds. */
export async function waitForPort(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs}ms`);
    await sleep(50);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The pid and every descendant of it. */
export function processTree(pid: number): number[] {
  const out: number[] = [pid];
  for (let i = 0; i < out.length; i++) {
    const p = out[i]!;
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${p}/task`);
    } catch {
      continue;
    }
    for (const t of tasks) {
      try {
        const kids = readFileSync(`/proc/${p}/task/${t}/children`, 'utf8').trim();
        if (kids !== '') for (const k of kids.split(/\s+/)) out.push(Number(k));
      } catch {
        // exited meanwhile
      }
    }
  }
  return out;
}

function rollupKiB(pid: number, field: 'Rss' | 'Pss'): number {
  try {
    const text = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
    return m === null ? 0 : Number(m[1]);
  } catch {
    return 0;
  }
}

/**
 * Memory of a process and its descendants in KiB: RSS, and PSS, which shares
 * the pages forked children (socat) have in common fairly between them.
 */
export function treeMemoryKiB(pid: number): { rss: number; pss: number } {
  let rss = 0;
  let pss = 0;
  for (const p of processTree(pid)) {
    rss += rollupKiB(p, 'Rss');
    pss += rollupKiB(p, 'Pss');
  }
  return { rss, pss };
}

/** Descriptors open in a process. */
export function openFiles(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

export function commandExists(cmd: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin'])) {
    try {
      accessSync(`${dir}/${cmd}`, constants.X_OK);
      return true;
    } catch {
      // not here
    }
  }
  return false;
}

/** CPU seconds (user + system) used so far by a process and its live descendants. */
export function treeCpuSeconds(pid: number): { user: number; system: number } {
  let user = 0;
  let system = 0;
  for (const p of processTree(pid)) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      // Fields after the command name, which may hold spaces: utime is the 14th field, stime the 15th.
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      user += Number(rest[11]) / 100;
      system += Number(rest[12]) / 100;
    } catch {
      // exited meanwhile
    }
  }
  return { user, system };
}
