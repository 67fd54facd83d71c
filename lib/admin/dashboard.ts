import type { ServerResponse } from 'node:http';
import type { StatusDocument } from './status.js';

export interface DashboardFeedOptions {
  /** Builds the current status (reads counters; cheap enough for a few times a second). */
  readonly status: () => StatusDocument;
  readonly rules: () => string | null;
  /** At most one update per this many ms, whatever the traffic. */
  readonly intervalMs?: number;
  readonly heartbeatMs?: number;
}

interface Client {
  readonly res: ServerResponse;
  /** The socket's buffer is full: skip updates until it drains (a slow tab never piles up memory). */
  blocked: boolean;
  /** An update was skipped while blocked: send the next one even if nothing changed since. */
  missed: boolean;
}

/**
 * Pushes the live table to dashboard tabs over Server-Sent Events. One timer
 * runs only while a tab is connected; each tick builds the status once for
 * every tab and sends it only when something changed, so a busy proxy costs
 * the same as an idle one: at most 1000/intervalMs updates per second.
 */
export class DashboardFeed {
  private readonly opts: DashboardFeedOptions;
  private readonly clients = new Set<Client>();
  private timer: NodeJS.Timeout | null = null;
  private heartbeat: NodeJS.Timeout | null = null;
  private lastStatus = '';
  private lastRules: string | null | undefined = undefined;

  constructor(opts: DashboardFeedOptions) {
    this.opts = opts;
  }

  get size(): number {
    return this.clients.size;
  }

  attach(res: ServerResponse): void {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      Connection: 'keep-alive',
      'X-Content-Type-Options': 'nosniff',
    });
    // Reconnect after 2s if the stream drops.
    res.write('retry: 2000\n\n');
    const client: Client = { res, blocked: false, missed: false };
    this.clients.add(client);
    res.on('drain', () => (client.blocked = false));
    res.on('close', () => {
      this.clients.delete(client);
      if (this.clients.size === 0) this.idle();
    });
    // A new tab gets the whole picture at once.
    this.send(client, 'status', this.statusJson().json);
    this.send(client, 'rules', JSON.stringify({ rules: this.opts.rules() }));
    this.ensureRunning();
  }

  close(): void {
    this.idle();
    for (const c of this.clients) c.res.end();
    this.clients.clear();
  }

  private statusJson(): { json: string; fingerprint: string } {
    const doc = this.opts.status();
    const json = JSON.stringify(doc);
    // generatedAt changes every time; it alone is not news.
    return { json, fingerprint: json.slice(json.indexOf(',"node"')) };
  }

  private ensureRunning(): void {
    if (this.timer !== null) return;
    this.timer = setInterval(() => this.tick(), this.opts.intervalMs ?? 500);
    this.timer.unref();
    this.heartbeat = setInterval(() => {
      for (const c of this.clients) if (!c.blocked) c.res.write(': keep-alive\n\n');
    }, this.opts.heartbeatMs ?? 15_000);
    this.heartbeat.unref();
  }

  private idle(): void {
    if (this.timer !== null) clearInterval(this.timer);
    if (this.heartbeat !== null) clearInterval(this.heartbeat);
    this.timer = this.heartbeat = null;
    this.lastStatus = '';
    this.lastRules = undefined;
  }

  private tick(): void {
    if (this.clients.size === 0) return;
    const { json, fingerprint } = this.statusJson();
    const changed = fingerprint !== this.lastStatus;
    this.lastStatus = fingerprint;
    for (const c of this.clients) {
      if (changed || (c.missed && !c.blocked)) this.send(c, 'status', json);
    }
    const rules = this.opts.rules();
    if (rules !== this.lastRules) {
      this.lastRules = rules;
      const data = JSON.stringify({ rules });
      for (const c of this.clients) this.send(c, 'rules', data);
    }
  }

  private send(c: Client, event: string, data: string): void {
    if (c.blocked) {
      c.missed = true;
      return;
    }
    c.missed = false;
    // data is one line of JSON (JSON.stringify never emits a raw newline).
    if (!c.res.write(`event: ${event}\ndata: ${data}\n\n`)) c.blocked = true;
  }
}
