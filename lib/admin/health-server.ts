import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { HealthReport } from './health.js';
import { closeHttp, listenHttp } from './http-listen.js';

export interface HealthServerOptions {
  readonly host: string;
  readonly port: number;
  /** Proxy health now (kube-proxy's /healthz). */
  readonly health: () => HealthReport;
  /** False once the proxy is shutting down. */
  readonly live: () => boolean;
  readonly count: (path: 'healthz' | 'livez', code: number) => void;
}

/** kube-proxy's body: the two times, plus the newer `healthy` and `nodeEligible`. */
export function healthBody(r: HealthReport): string {
  return JSON.stringify({ lastUpdated: r.lastUpdated, currentTime: r.currentTime, nodeEligible: r.nodeEligible, healthy: r.healthy });
}

/**
 * The health server (--healthz-bind-address): /healthz is what load
 * balancers and kubelet probes read; /livez says only whether the process
 * still serves, so a proxy cut off from its source is not restarted for it.
 */
export class HealthServer {
  private readonly server: Server;
  private readonly opts: HealthServerOptions;
  private boundPort = 0;

  constructor(opts: HealthServerOptions) {
    this.opts = opts;
    this.server = createServer((req, res) => this.handle(req, res));
  }

  get port(): number {
    return this.boundPort;
  }

  async start(): Promise<number> {
    this.boundPort = await listenHttp(this.server, this.opts.host, this.opts.port, 'health server (--healthz-bind-address)');
    return this.boundPort;
  }

  close(): Promise<void> {
    return closeHttp(this.server);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    if (path !== '/healthz' && path !== '/livez') {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('404 page not found\n');
      return;
    }
    const r = this.opts.health();
    const ok = path === '/healthz' ? r.healthy && this.opts.live() : this.opts.live();
    const code = ok ? 200 : 503;
    this.opts.count(path === '/healthz' ? 'healthz' : 'livez', code);
    res.writeHead(code, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' });
    res.end(healthBody({ ...r, healthy: ok }));
  }
}
