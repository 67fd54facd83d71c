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

export function startKup(args: string[]): ChildProcessWithoutNullStreams {
  return spawn(process.execPath, [...KUP_NODE_FLAGS, KUP, ...args], { stdio: 'pipe', env: { ...process.env, KUBECONFIG: '/nonexistent' } });
}

export function finished(child: ChildProcessWithoutNullStreams, timeoutMs = 20_000): Promise<Finished> {
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

/** Resolves with the first stdout/stderr text matching `re` (accumulated), or rejects after the timeout. */
export function waitForOutput(child: ChildProcessWithoutNullStreams, re: RegExp, timeoutMs = 10_000): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const on = (d: Buffer): void => {
      buf += d.toString();
      const m = re.exec(buf);
      if (m !== null) {
        cleanup();
        resolve(m);
      }
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no output matching ${re} within ${timeoutMs}ms; got:\n${buf}`));
    }, timeoutMs);
    const cleanup = (): void => {
      clearTimeout(timer);
      child.stdout.off('data', on);
      child.stderr.off('data', on);
    };
    child.stdout.on('data', on);
    child.stderr.on('data', on);
  });
}
