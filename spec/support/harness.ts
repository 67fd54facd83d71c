import { Writable } from 'node:stream';
import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { ChangeTracker } from '../../lib/core/change-tracker.js';
import type { ServicePortKey } from '../../lib/core/types.js';
import { Proxier, type ProxierOptions, type ServicePortListeners } from '../../lib/dataplane/proxier.js';
import { createLogger } from '../../lib/log.js';
import { testNativeRelay } from './relay.js';

/** Log lines captured as parsed JSON, for asserting on what a user reads. */
export class LogCapture {
  readonly lines: Record<string, unknown>[] = [];
  readonly logger: Logger;
  constructor(level: 'debug' | 'info' | 'warn' = 'info') {
    const lines = this.lines;
    const stream = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const l of chunk.toString().split('\n')) if (l.trim() !== '') lines.push(JSON.parse(l) as Record<string, unknown>);
        cb();
      },
    });
    this.logger = createLogger(level, stream);
  }
  messages(level?: string): string[] {
    return this.lines.filter((l) => level === undefined || l['level'] === level).map((l) => String(l['msg']));
  }
}

export interface Harness {
  readonly tracker: ChangeTracker;
  readonly proxier: Proxier;
  readonly log: LogCapture;
  /** Replaces the objects and applies the resulting diff, like one sync. */
  set(services: V1Service[], slices: V1EndpointSlice[]): Promise<void>;
  entry(key: string): ServicePortListeners;
  /** The internal proxy port of a service port. */
  port(key: string): number;
  close(): Promise<void>;
}

export async function startHarness(opts: Partial<ProxierOptions> & { nodeName?: string; log?: LogCapture } = {}): Promise<Harness> {
  const log = opts.log ?? new LogCapture('info');
  const tracker = new ChangeTracker({ nodeName: opts.nodeName ?? 'node-a' });
  const proxier = new Proxier({
    bindAddress: '127.0.0.1',
    portRange: null,
    lbStrategy: 'round-robin',
    udpTimeoutMs: 30_000,
    udpMaxSessions: 4096,
    tcpIdleTimeoutMs: 0,
    nativeRelay: testNativeRelay(),
    logger: log.logger,
    ...opts,
  });
  const h: Harness = {
    tracker,
    proxier,
    log,
    async set(services, slices) {
      tracker.replaceAll({ services, slices });
      const r = tracker.flush();
      for (const w of r.warnings) log.logger.warn(w);
      await proxier.apply(r.diff);
    },
    entry(key) {
      const p = proxier.get(key as ServicePortKey);
      if (p === undefined) throw new Error(`no listener for ${key}; have ${[...proxier.entries()].map((e) => e.sp.key).join(', ')}`);
      return p;
    },
    port(key) {
      return h.entry(key).internal.port;
    },
    close: () => proxier.close(0),
  };
  return h;
}
