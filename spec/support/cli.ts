import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The compiled `kup` of this checkout, run with the Node running the tests (the pinned one). */
export const KUP = fileURLToPath(new URL('../../bin/kup.js', import.meta.url));

export interface Finished {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

export function runKup(args: string[], timeoutMs = 20_000): Promise<Finished> {
  return finished(startKup(args), timeoutMs);
}

/** Node flags kup is started with everywhere (its shebang, the image, npm scripts). */
export const KUP_NODE_FLAGS = ['--disable-sigusr1'] as const;

export function startKup(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcessWithoutNullStreams {
  return recordOutput(
    spawn(process.execPath, [...KUP_NODE_FLAGS, KUP, ...args], {
      stdio: 'pipe',
      env: { ...process.env, KUBECONFIG: '/nonexistent', ...env },
    }),
  );
}

export function finished(child: ChildProcessWithoutNullStreams, timeoutMs = 20_000): Promise<Finished> {
  recordOutput(child);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/**
 * Everything a child wrote to stdout and stderr since recording began, and how
 * far `waitForOutput` has read. A pipe delivers output whenever the child
 * writes it, not when a test gets round to waiting for it: a listener attached
 * only at the wait misses a line printed while the test was busy (fd-exhaustion
 * lost its "out of file descriptors" line that way while it was still
 * connecting clients), or printed in the same chunk as the line the previous
 * wait matched.
 */
interface OutputRecord {
  text: string;
  /** Where the next wait starts: just after the previous match. */
  readFrom: number;
  readonly waiters: Set<() => void>;
}

const records = new WeakMap<ChildProcessWithoutNullStreams, OutputRecord>();

/** Starts recording a child's output (idempotent); call it in the same tick as spawn. `startKup` and `finished` do. */
export function recordOutput(child: ChildProcessWithoutNullStreams): ChildProcessWithoutNullStreams {
  if (records.has(child)) return child;
  const rec: OutputRecord = { text: '', readFrom: 0, waiters: new Set() };
  records.set(child, rec);
  const on = (d: Buffer): void => {
    rec.text += d.toString();
    for (const w of [...rec.waiters]) w();
  };
  child.stdout.on('data', on);
  child.stderr.on('data', on);
  return child;
}

/**
 * Resolves with the first match of `re` in the output after the previous wait's
 * match on this child (so successive waits read the output in order, and none
 * misses a line printed before it was called), or rejects after the timeout.
 */
export function waitForOutput(child: ChildProcessWithoutNullStreams, re: RegExp, timeoutMs = 10_000): Promise<RegExpMatchArray> {
  recordOutput(child);
  const rec = records.get(child)!;
  const pattern = new RegExp(re.source, re.flags.replace(/[gy]/g, ''));
  return new Promise((resolve, reject) => {
    const start = rec.readFrom;
    const check = (): void => {
      const rest = rec.text.slice(start);
      const m = pattern.exec(rest);
      if (m === null) return;
      cleanup();
      rec.readFrom = Math.max(rec.readFrom, start + m.index + m[0].length);
      resolve(m);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no output matching ${re} within ${timeoutMs}ms; got:\n${rec.text.slice(start)}`));
    }, timeoutMs);
    const cleanup = (): void => {
      clearTimeout(timer);
      rec.waiters.delete(check);
    };
    rec.waiters.add(check);
    check();
  });
}
