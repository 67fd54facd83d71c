import { Worker } from 'node:worker_threads';
import { KupError } from '../core/errors.js';
import type { ParsedObjects } from './kube-yaml.js';
import type { ParseMessage, ParseRequest } from './parse-protocol.js';

export type FileRead = { readonly kind: 'unchanged' } | { readonly kind: 'parsed'; readonly hash: string; readonly parsed: ParsedObjects };

// Next to this file both in lib/ (ts) and dist/lib/ (js): the compiled worker sits beside the compiled caller.
const WORKER_URL = new URL('./parse-worker.js', import.meta.url);

/**
 * Parses source files in a worker thread, one at a time. The worker is kept
 * for a few seconds after a read (an editor saving twice, a write in several
 * steps: no new thread each time), then ended, so the memory a large file's
 * parse took goes back.
 */
export class OffThreadParser {
  private worker: Worker | null = null;
  private idle: NodeJS.Timeout | null = null;
  private readonly idleMs: number;

  constructor(idleMs = 5000) {
    this.idleMs = idleMs;
  }

  /** Reads, decodes and parses `req.path`; rejects with one KUP_BAD_FILE line. Callers do not overlap reads. */
  read(req: ParseRequest): Promise<FileRead> {
    if (this.idle !== null) clearTimeout(this.idle);
    this.idle = null;
    const worker = (this.worker ??= this.spawn());
    worker.ref(); // a read in flight keeps the process alive (`kup rules` has nothing else)
    return new Promise<FileRead>((resolve, reject) => {
      const services: ParsedObjects['services'] = [];
      const slices: ParsedObjects['slices'] = [];
      const done = (fn: () => void): void => {
        worker.off('message', onMessage);
        worker.off('exit', onExit);
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
      const onExit = (code: number): void => done(() => reject(new KupError('KUP_BAD_FILE', `${req.path}: the parser stopped (exit ${code})`)));
      worker.on('message', onMessage);
      worker.on('exit', onExit);
      worker.postMessage(req);
    }).finally(() => {
      worker.unref();
      if (this.worker === null) return;
      this.idle = setTimeout(() => void this.close(), this.idleMs);
      this.idle.unref();
    });
  }

  async close(): Promise<void> {
    if (this.idle !== null) clearTimeout(this.idle);
    this.idle = null;
    const w = this.worker;
    this.worker = null;
    if (w !== null) await w.terminate();
  }

  private spawn(): Worker {
    const w = new Worker(WORKER_URL);
    w.on('error', () => {
      // Reported through 'exit' to the read in flight.
    });
    w.once('exit', () => {
      if (this.worker === w) this.worker = null;
    });
    return w;
  }
}
