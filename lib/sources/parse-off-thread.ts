import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { KupError } from '../core/errors.js';
import type { ParsedObjects } from './kube-yaml.js';
import type { ParseMessage, ParseRequest } from './parse-protocol.js';

export type FileRead = { readonly kind: 'unchanged' } | { readonly kind: 'parsed'; readonly hash: string; readonly parsed: ParsedObjects };

// Next to this file both in lib/ (ts) and dist/lib/ (js): the compiled worker sits beside the compiled caller.
const WORKER_PATH = fileURLToPath(new URL('./parse-worker.js', import.meta.url));

/**
 * Parses source files in a child process, one at a time. The process is kept
 * for a few seconds after a read (an editor saving twice, a write in several
 * steps: no new process each time), then ended, so the memory a large file's
 * parse took goes back to the system.
 */
export class OffThreadParser {
  private child: ChildProcess | null = null;
  private idle: NodeJS.Timeout | null = null;
  private readonly idleMs: number;

  constructor(idleMs = 5000) {
    this.idleMs = idleMs;
  }

  /** Reads, decodes and parses `req.path`; rejects with one KUP_BAD_FILE line. Callers do not overlap reads. */
  read(req: ParseRequest): Promise<FileRead> {
    if (this.idle !== null) clearTimeout(this.idle);
    this.idle = null;
    const child = (this.child ??= this.spawn());
    // A read in flight keeps kup alive (`kup rules` has nothing else); an idle worker does not.
    child.ref();
    child.channel?.ref();
    return new Promise<FileRead>((resolve, reject) => {
      const services: ParsedObjects['services'] = [];
      const slices: ParsedObjects['slices'] = [];
      const done = (fn: () => void): void => {
        child.off('message', onMessage);
        child.off('exit', onExit);
        fn();
      };
      const onMessage = (m: ParseMessage): void => {
        switch (m.type) {
          case 'services':
            for (const s of m.items) services.push(s);
            return;
          case 'slices':
            for (const s of m.items) slices.push(s);
            return;
          case 'done':
            done(() => resolve({ kind: 'parsed', hash: m.hash, parsed: { services, slices, nodes: m.nodes, warnings: m.warnings } }));
            return;
          case 'unchanged':
            done(() => resolve({ kind: 'unchanged' }));
            return;
          case 'error':
            done(() => reject(new KupError('KUP_BAD_FILE', m.message)));
        }
      };
      // A parse that runs out of memory ends the worker: one line, and a new worker next time.
      const onExit = (code: number | null, signal: NodeJS.Signals | null): void =>
        done(() => reject(new KupError('KUP_BAD_FILE', `${req.path}: the parser stopped (${signal ?? `exit ${code}`})`)));
      child.on('message', onMessage);
      child.on('exit', onExit);
      child.send(req);
    }).finally(() => {
      child.unref();
      child.channel?.unref();
      if (this.child === null) return;
      this.idle = setTimeout(() => void this.close(), this.idleMs);
      this.idle.unref();
    });
  }

  async close(): Promise<void> {
    if (this.idle !== null) clearTimeout(this.idle);
    this.idle = null;
    const c = this.child;
    this.child = null;
    if (c === null || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    // Held until it has gone: an unref'd child would let a caller awaiting
    // close() (kup rules, kup explain) end with the await unsettled.
    c.ref();
    c.disconnect();
    await exited;
  }

  private spawn(): ChildProcess {
    const c = fork(WORKER_PATH, [], {
      // Not the parent's flags (a debugger, test loaders); never an inspector on SIGUSR1.
      execArgv: ['--disable-sigusr1'],
      serialization: 'advanced',
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    });
    c.on('error', () => {
      // Reported through 'exit' to the read in flight.
    });
    c.once('exit', () => {
      if (this.child === c) this.child = null;
    });
    return c;
  }
}
