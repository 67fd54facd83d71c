import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { HealthReport } from './health.js';
import { closeHttp, listenHttp } from './http-listen.js';

export interface HealthServerOptions {
  readonly host: string;
  readonly port: number;
  /** Proxy health now (kube-proxy's /healthz), including shutdown. */
  readonly health: () => HealthReport;
  readonly count: (path: 'healthz' | 'livez', code: number) => void;
}

/** kube-proxy's /healthz body: the two times and `nodeEligible`, plus `healthy`. */
export function healthBody(r: HealthReport): string {
  return JSON.stringify({ lastUpdated: r.lastUpdated, currentTime: r.currentTime, nodeEligible: r.nodeEligible, healthy: r.healthy });
}

/** kube-proxy's /livez body: proxy health only, so lastUpdated follows the proxy, not the node. */
export function livezBody(r: HealthReport): string {
  return JSON.stringify({ lastUpdated: r.proxyHealthy ? r.currentTime : r.lastSyncTime, currentTime: r.currentTime });
}

/**
 * The health server (--healthz-bind-address), listening from start-up:
 * /healthz is what load balancers read (proxy health and node eligibility);
 * /livez is what a liveness probe reads: proxy health only, as kube-proxy,
 * so a node being drained does not get its proxy restarted.
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
    const healthz = path === '/healthz';
    const code = (healthz ? r.healthy : r.proxyHealthy) ? 200 : 503;
    this.opts.count(healthz ? 'healthz' : 'livez', code);
    res.writeHead(code, { 'Content-Type': 'application/json', 'X-Content-Type-Options': 'nosniff' });
    res.end(healthz ? healthBody(r) : livezBody(r));
  }
}
