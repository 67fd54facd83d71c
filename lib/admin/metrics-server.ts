import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { isValidIP } from '../core/address.js';
import { errorMessage } from '../core/errors.js';
import { DASHBOARD_HTML } from './dashboard-page.js';
import type { DashboardFeed } from './dashboard.js';
import { closeHttp, listenHttp } from './http-listen.js';
import type { ProxyMetrics } from './metrics.js';
import type { StatusDocument } from './status.js';

export interface MetricsServerOptions {
  readonly host: string;
  readonly port: number;
  readonly metrics: ProxyMetrics;
  readonly feed: DashboardFeed;
  /** clientIP: whose session affinity `nextEndpoint` follows ("" = a new client). */
  readonly status: (clientIP: string) => Promise<StatusDocument>;
  readonly rules: () => string | null;
  readonly logger: Logger;
}

const SECURITY_HEADERS = { 'X-Content-Type-Options': 'nosniff', 'Cache-Control': 'no-store' } as const;

/**
 * The metrics server (--metrics-bind-address, loopback by default as in
 * kube-proxy): /metrics, /proxyMode and /healthz as kube-proxy has them, plus
 * /status (the table as JSON), /rules, and the dashboard at / fed by /events.
 */
export class MetricsServer {
  private readonly server: Server;
  private readonly opts: MetricsServerOptions;
  private boundPort = 0;

  constructor(opts: MetricsServerOptions) {
    this.opts = opts;
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        opts.logger.error({ url: req.url, err: errorMessage(err) }, 'admin request failed');
        if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain; charset=utf-8' });
        res.end('internal error\n');
      });
    });
  }

  get port(): number {
    return this.boundPort;
  }

  async start(): Promise<number> {
    this.boundPort = await listenHttp(this.server, this.opts.host, this.opts.port, 'metrics server (--metrics-bind-address)');
    return this.boundPort;
  }

  close(): Promise<void> {
    return closeHttp(this.server);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain; charset=utf-8' }).end('method not allowed\n');
      return;
    }
    const text = (code: number, body: string, type = 'text/plain; charset=utf-8'): void => {
      res.writeHead(code, { 'Content-Type': type, ...SECURITY_HEADERS }).end(req.method === 'HEAD' ? undefined : body);
    };
    switch (url.pathname) {
      case '/':
      case '/index.html':
        res.writeHead(200, {
          'Content-Type': 'text/html; charset=utf-8',
          // The page loads nothing from anywhere: say so, so a injected name in a table can't either.
          'Content-Security-Policy':
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'",
          ...SECURITY_HEADERS,
        });
        res.end(req.method === 'HEAD' ? undefined : DASHBOARD_HTML);
        return;
      case '/events':
        this.opts.feed.attach(res);
        return;
      case '/metrics':
        text(200, await this.opts.metrics.text(), this.opts.metrics.contentType);
        return;
      case '/proxyMode':
        text(200, 'userspace');
        return;
      case '/healthz':
        // kube-proxy's metrics server answers a plain ping here; proxy health is on the health server.
        text(200, 'ok');
        return;
      case '/status': {
        const client = url.searchParams.get('client') ?? '';
        if (client !== '' && !isValidIP(client)) {
          text(400, JSON.stringify({ error: `client: "${client}" is not an IP address` }), 'application/json');
          return;
        }
        text(200, `${JSON.stringify(await this.opts.status(client), null, 2)}\n`, 'application/json');
        return;
      }
      case '/rules': {
        const rules = this.opts.rules();
        text(200, rules ?? '# running without iptables rules\n');
        return;
      }
      default:
        text(404, '404 page not found\n');
    }
  }
}
