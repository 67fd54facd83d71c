/**
 * The clients of a packet-flow case, run inside one namespace:
 * `flow-client.js JSON` where JSON is a list of probes
 * {id, proto, src, dst, port, tries, timeoutMs, parallel}. Each try is a new
 * connection (TCP) or a new socket (UDP) from `src`, so the proxy balances
 * every try afresh. Probes marked `parallel` (those expecting no answer) run
 * side by side at once; the others one after another, so round-robin stays
 * deterministic. Prints one JSON line: {id: [{reply?, error?, ms}, ...]}.
 *
 * `flow-client.js wait URL SINCE_MS TIMEOUT_MS` instead polls kup's /status
 * until a file change read at or after SINCE_MS has been synced; exit 1 on timeout.
 */
import { connect } from 'node:net';
import { createSocket } from 'node:dgram';

export interface Probe {
  readonly id: string;
  /** HTTP: a TCP connection that sends a GET and keeps the status line (the node's health check servers answer only a request). */
  readonly proto: 'TCP' | 'UDP' | 'HTTP';
  readonly src: string;
  readonly dst: string;
  readonly port: number;
  readonly tries: number;
  readonly timeoutMs: number;
  readonly parallel: boolean;
}

export interface TryResult {
  readonly reply?: string;
  readonly error?: string;
  readonly ms: number;
}

function once(p: Probe): Promise<TryResult> {
  const started = Date.now();
  return new Promise((resolve) => {
    let settled = false;
    let cleanup = (): void => undefined;
    const done = (r: { reply?: string; error?: string }): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      cleanup();
      resolve({ ...r, ms: Date.now() - started });
    };
    const timer = setTimeout(() => done({ error: 'TIMEOUT' }), p.timeoutMs);
    if (p.proto !== 'UDP') {
      let reply = '';
      const sock = connect({ host: p.dst, port: p.port, localAddress: p.src });
      if (p.proto === 'HTTP') sock.write(`GET / HTTP/1.0\r\nHost: ${p.dst}\r\n\r\n`);
      cleanup = () => sock.destroy();
      sock.setEncoding('utf8');
      sock.on('data', (d: string) => (reply += d));
      sock.on('end', () => done(reply.trim() === '' ? { error: 'EOF' } : { reply: reply.trim().split('\r\n')[0]! }));
      sock.on('error', (err: NodeJS.ErrnoException) => done({ error: err.code ?? err.message }));
    } else {
      const sock = createSocket('udp4');
      cleanup = () => sock.close();
      sock.on('message', (msg) => done({ reply: msg.toString('utf8') }));
      sock.on('error', (err: NodeJS.ErrnoException) => done({ error: err.code ?? err.message }));
      sock.bind(0, p.src, () => sock.connect(p.port, p.dst, () => sock.send('ping')));
    }
  });
}

async function run(p: Probe): Promise<TryResult[]> {
  const out: TryResult[] = [];
  for (let i = 0; i < p.tries; i++) out.push(await once(p));
  return out;
}

async function probes(list: readonly Probe[]): Promise<void> {
  const results: Record<string, TryResult[]> = {};
  const parallel = Promise.all(list.filter((p) => p.parallel).map(async (p) => (results[p.id] = await run(p))));
  for (const p of list.filter((q) => !q.parallel)) results[p.id] = await run(p);
  await parallel;
  process.stdout.write(JSON.stringify(results) + '\n');
}

interface StatusView {
  source?: { lastEventTime: string | null; lastError: string | null };
  sync?: { lastSyncTime: string | null; lastQueuedTime: string | null } | null;
}

async function wait(url: string, since: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const doc = (await (await fetch(url)).json()) as StatusView;
      last = JSON.stringify({ source: doc.source, sync: doc.sync });
      const event = Date.parse(doc.source?.lastEventTime ?? '');
      const synced = Date.parse(doc.sync?.lastSyncTime ?? '');
      // The file's read time is rounded to the millisecond; allow for that.
      if (event >= since - 1 && doc.sync?.lastQueuedTime === null && synced >= event) {
        process.stdout.write(`${last}\n`);
        return;
      }
    } catch (err) {
      last = String(err);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  process.stdout.write(`${last}\n`);
  process.exit(1);
}

const [mode = '', ...rest] = process.argv.slice(2);
if (mode === 'wait') await wait(rest[0] ?? '', Number(rest[1]), Number(rest[2] ?? 20000));
else await probes(JSON.parse(mode) as Probe[]);
