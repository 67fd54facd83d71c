import { spawn } from 'node:child_process';

export interface CommandResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** True when the command was killed for running past its timeout. */
  readonly timedOut: boolean;
  /** Set when the binary could not be started at all (ENOENT, EACCES). */
  readonly spawnError: string | null;
}

/**
 * Runs a binary without a shell (arguments are never re-parsed), feeding
 * `input` on stdin. Never rejects: iptables failures are data the caller
 * logs, retries and reports, not exceptions.
 */
export function runCommand(
  file: string,
  args: readonly string[],
  options: { input?: string; timeoutMs?: number } = {},
): Promise<CommandResult> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    let settled = false;
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs ?? 10_000);
    const finish = (r: CommandResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err: NodeJS.ErrnoException) =>
      finish({ code: null, stdout, stderr, timedOut, spawnError: err.code ?? err.message }),
    );
    child.on('close', (code) => finish({ code, stdout, stderr, timedOut, spawnError: null }));
    // A binary that exits before reading stdin closes the pipe under us; the exit status says what went wrong.
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

/** One line describing a failed command, stderr included, for logs and health. */
export function describeFailure(file: string, args: readonly string[], r: CommandResult): string {
  const cmd = [file, ...args].join(' ');
  if (r.spawnError !== null) return `${cmd}: cannot run (${r.spawnError})`;
  if (r.timedOut) return `${cmd}: timed out`;
  const err = r.stderr.trim().replace(/\s*\n\s*/g, '; ');
  return `${cmd}: exit ${r.code}${err === '' ? '' : `: ${err}`}`;
}
