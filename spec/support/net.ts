import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import net, { type AddressInfo, type Server, type Socket } from 'node:net';

/** Loopback helpers for tests: tiny servers and clients with real sockets. */

export interface TestServer {
  readonly port: number;
  readonly name: string;
  /** Connections accepted so far. */
  accepted: number;
  /** Sockets open now. */
  readonly open: Set<Socket>;
  close(): Promise<void>;
}

async function listen(server: Server, name: string, port = 0): Promise<TestServer> {
  const open = new Set<Socket>();
  const ts = { port: 0, name, accepted: 0, open, close: () => closeServer(server, open) };
  server.on('connection', (s) => {
    ts.accepted++;
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => {});
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  ts.port = (server.address() as AddressInfo).port;
  return ts;
}

function closeServer(server: Server, open: Set<Socket>): Promise<void> {
  for (const s of open) s.destroy();
  return new Promise((r) => server.close(() => r()));
}

/** Answers every connection with "NAME\n" after the client half-closes (or at once with `eager`). */
export function nameServer(name: string, opts: { eager?: boolean } = {}): Promise<TestServer> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    if (opts.eager) {
      s.end(`${name}\n`);
      s.resume();
      return;
    }
    s.resume();
    s.on('end', () => s.end(`${name}\n`));
  });
  return listen(server, name);
}

/**
 * Reads everything the client sends, then replies with `reply` bytes of a
 * deterministic pattern followed by the sha256 of what it received (64 hex chars).
 */
export function hashingServer(name: string, replyBytes: number): Promise<TestServer & { received: string[] }> {
  const received: string[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    const h = createHash('sha256');
    s.on('data', (d) => h.update(d));
    s.on('end', () => {
      const digest = h.digest('hex');
      received.push(digest);
      writePattern(s, replyBytes, () => s.end(digest));
    });
  });
  return listen(server, name).then((ts) => Object.assign(ts, { received }));
}

const CHUNK = Buffer.alloc(64 * 1024);
for (let i = 0; i < CHUNK.length; i++) CHUNK[i] = (i * 31 + 7) & 0xff;

/** Writes `bytes` of a fixed pattern with backpressure, then calls `done`. */
export function writePattern(s: Socket, bytes: number, done: () => void): void {
  let left = bytes;
  const pump = (): void => {
    while (left > 0) {
      const n = Math.min(left, CHUNK.length);
      left -= n;
      if (!s.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) {
        s.once('drain', pump);
        return;
      }
    }
    done();
  };
  pump();
}

export function patternHash(bytes: number): string {
  const h = createHash('sha256');
  let left = bytes;
  while (left > 0) {
    const n = Math.min(left, CHUNK.length);
    h.update(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n));
    left -= n;
  }
  return h.digest('hex');
}

export function connect(port: number, host = '127.0.0.1'): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host, allowHalfOpen: true });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

export interface Exchange {
  readonly data: Buffer;
  /** How the connection ended: 'end' (FIN), or the error code (ECONNRESET, ...). */
  readonly ended: string;
}

/** Connects, sends `payload`, half-closes, and collects the reply until the connection ends. */
export async function exchange(port: number, payload: string | Buffer = '', timeoutMs = 10_000): Promise<Exchange> {
  const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  return collect(s, timeoutMs, () => {
    if (payload.length > 0) s.write(payload);
    s.end();
  });
}

export function collect(s: Socket, timeoutMs: number, onConnect?: () => void): Promise<Exchange> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = (ended: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      resolve({ data: Buffer.concat(chunks), ended });
    };
    const timer = setTimeout(() => finish('TIMEOUT'), timeoutMs);
    if (onConnect) s.once('connect', onConnect);
    s.on('data', (d) => chunks.push(d));
    s.on('end', () => finish('end'));
    s.on('error', (e: NodeJS.ErrnoException) => finish(e.code ?? e.message));
    s.on('close', () => finish('close'));
  });
}

/** The name a nameServer answered with. */
export async function whoAnswers(port: number): Promise<string> {
  const r = await exchange(port);
  return r.data.toString().trim();
}

export interface UdpTestServer {
  readonly port: number;
  readonly name: string;
  /** Distinct client source ports seen (one per proxy session). */
  readonly peers: Set<string>;
  close(): Promise<void>;
}

/** Replies "NAME:" + datagram. */
export async function udpEchoServer(name: string): Promise<UdpTestServer> {
  const sock = dgram.createSocket('udp4');
  const peers = new Set<string>();
  const prefix = Buffer.from(`${name}:`);
  sock.on('message', (m, r) => {
    peers.add(`${r.address}:${r.port}`);
    sock.send(Buffer.concat([prefix, m]), r.port, r.address);
  });
  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', () => resolve()));
  return { port: sock.address().port, name, peers, close: () => new Promise((r) => sock.close(() => r())) };
}

/** Sends one datagram from a fresh socket (or `from`) and waits for one reply. */
export async function udpAsk(port: number, payload: Buffer | string, timeoutMs = 2000, from?: dgram.Socket): Promise<Buffer | null> {
  const sock = from ?? dgram.createSocket('udp4');
  try {
    return await new Promise<Buffer | null>((resolve) => {
      const timer = setTimeout(() => {
        sock.off('message', on);
        resolve(null);
      }, timeoutMs);
      const on = (m: Buffer): void => {
        clearTimeout(timer);
        sock.off('message', on);
        resolve(m);
      };
      sock.on('message', on);
      sock.send(payload, port, '127.0.0.1');
    });
  } finally {
    if (from === undefined) sock.close();
  }
}

/** A loopback port nobody listens on (bound, then released). */
export async function deadPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** The body of an HTTP/1.0 GET / through `port` (the demo's backends answer with their pod's name). */
export async function httpGet(port: number): Promise<string> {
  const r = await exchange(port, 'GET / HTTP/1.0\r\nHost: kup\r\n\r\n');
  const text = r.data.toString();
  const i = text.indexOf('\r\n\r\n');
  return i < 0 ? '' : text.slice(i + 4).trim();
}
