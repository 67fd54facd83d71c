import net, { type AddressInfo, type Socket } from 'node:net';
import t from 'tap';
import { startKupProcess } from './support/kup-process.js';

/**
 * Issue 10, item 1: an endpoint that answers a few requests, then closes
 * (shutdown both ways, then close) while its client is still sending as fast
 * as it can, as dnsmasq does after 100 queries on one TCP connection. The
 * endpoint's close comes as a FIN and then a reset (close() with unread data),
 * so kup half-closes the client and then fails its next write to the endpoint
 * (EPIPE or ECONNRESET). Every such connection must end: the client gets what
 * the endpoint sent, then a close; kup's counters and descriptors come back.
 */

const REQUEST_BYTES = 64;
const BATCH = Buffer.alloc(256 * REQUEST_BYTES, 0x71);
const REQUESTS_READ = 3;
const CONNECTIONS = 200;

/** The longest the endpoint waits for its client to have its answer before it resets (`closeAfterMs` > 0). */
const DELIVERY_WAIT_MS = 5000;

interface ClosingBackend {
  readonly port: number;
  readonly sent: Map<number, Buffer>;
  /** A client received this connection's whole answer. */
  delivered(id: number): void;
  close(): Promise<void>;
}

/**
 * Per connection: a distinct reply of a few hundred bytes, then shutdown, then
 * close with the client's bytes unread, which resets: at once (`closeAfterMs`
 * 0), or `closeAfterMs` after the shutdown and once the client has the whole
 * answer (at most DELIVERY_WAIT_MS). The TypeScript relay delivers only what it
 * read before a write to the endpoint failed (Node closes a socket whose write
 * failed, with its receive queue unread): a kup not scheduled between the
 * endpoint's FIN and its reset (a loaded machine) loses the answer, as in the
 * first case. Waiting for the delivery keeps the second case about what it
 * tests, a reset that comes after the answer and FIN were carried; an answer
 * kup never carries still fails it (after DELIVERY_WAIT_MS).
 */
async function closingBackend(closeAfterMs: number): Promise<ClosingBackend> {
  const open = new Set<Socket>();
  const sent = new Map<number, Buffer>();
  const waiting = new Map<number, () => void>();
  let next = 0;
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => {});
    const id = next++;
    let got = 0;
    const onData = (d: Buffer): void => {
      got += d.length;
      if (got < REQUESTS_READ * REQUEST_BYTES) return;
      s.off('data', onData);
      s.pause(); // what the client sends from now on stays unread, so close() resets
      const reply = Buffer.from(`answer ${id} `.padEnd(300, '.') + '\n');
      sent.set(id, reply);
      // end() is shutdown(SHUT_WR); destroy() once it went out is close().
      if (closeAfterMs === 0) {
        s.end(reply, () => s.destroy());
        return;
      }
      const delivered = new Promise<void>((r) => waiting.set(id, r));
      const bound = new Promise<void>((r) => setTimeout(r, DELIVERY_WAIT_MS));
      s.end(reply, () => {
        const after = new Promise<void>((r) => setTimeout(r, closeAfterMs));
        void Promise.race([Promise.all([after, delivered]), bound]).then(() => s.destroy());
      });
    };
    s.on('data', onData);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return {
    port: (srv.address() as AddressInfo).port,
    sent,
    delivered: (id) => waiting.get(id)?.(),
    close: () => {
      for (const s of open) s.destroy();
      return new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

interface ClientResult {
  readonly data: string;
  readonly ended: string;
}

/** Writes requests (in batches of 256) as fast as the socket takes them until the server's FIN, a reset or the timeout; then closes. */
function floodingClient(port: number, timeoutMs: number): Promise<ClientResult> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const chunks: Buffer[] = [];
    let ended = '';
    const timer = setTimeout(() => finish('TIMEOUT'), timeoutMs);
    const finish = (how: string): void => {
      if (ended === '') ended = how;
      clearTimeout(timer);
      // A DNS client closes its side once it has read the server's FIN (or was reset).
      s.destroy();
    };
    const pump = (): void => {
      while (ended === '' && !s.destroyed) {
        if (!s.write(BATCH)) {
          s.once('drain', pump);
          return;
        }
      }
    };
    s.on('connect', pump);
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => finish('end'));
    s.on('error', (e: NodeJS.ErrnoException) => finish(e.code ?? e.message));
    s.on('close', () => {
      finish('close');
      resolve({ data: Buffer.concat(chunks).toString('latin1'), ended });
    });
  });
}

for (const [closeAfterMs, what] of [
  [0, "at once (its answer and FIN cross the client's requests)"],
  [200, '200ms after its FIN'],
] as const) {
  t.test(`an endpoint that closes ${what} while its client is still sending: nothing leaks, SIGTERM exits`, async (t) => {
    const backend = await closingBackend(closeAfterMs);
    t.teardown(() => backend.close());
    const kup = await startKupProcess(t, { endpoints: [backend.port], grace: '2s' });
    // The baseline once the metrics endpoint has been asked (its keep-alive connection stays open).
    await kup.metric('kup_connections_active');
    const baseline = kup.openFds();

    const results: ClientResult[] = [];
    // 20 at a time, as a resolver's pool would; bounded either way.
    for (let i = 0; i < CONNECTIONS; i += 20) {
      const batch = Array.from({ length: 20 }, () =>
        floodingClient(kup.port, 10_000).then((r) => {
          const id = /^answer (\d+) /.exec(r.data);
          if (id !== null && r.data === backend.sent.get(Number(id[1]))?.toString()) backend.delivered(Number(id[1]));
          return r;
        }),
      );
      results.push(...(await Promise.all(batch)));
    }
    t.equal(backend.sent.size, CONNECTIONS, `the endpoint answered and closed ${CONNECTIONS} connections`);
    const timedOut = results.filter((r) => r.ended === 'TIMEOUT').length;
    t.equal(timedOut, 0, 'no client was left waiting for kup to close its connection');
    const resets = results.filter((r) => r.ended !== 'end').length;
    t.equal(resets, 0, `every client got a FIN, not a reset (${resets} did not)`);

    const answers = new Set([...backend.sent.values()].map((b) => b.toString()));
    const got = results.map((r) => r.data);
    t.ok(
      got.every((g) => g === '' || answers.has(g)),
      'no client received a partial or foreign answer',
    );
    const complete = got.filter((g) => answers.has(g)).length;
    if (closeAfterMs > 0)
      t.equal(complete, CONNECTIONS, `every client received the endpoint's whole answer (${complete} of ${CONNECTIONS})`);
    else
      t.comment(
        `${complete} of ${CONNECTIONS} answers arrived (see splice.ts: bytes still unread when a write to the endpoint fails are lost)`,
      );
    const receivedBytes = got.reduce((n, g) => n + g.length, 0);

    let active = Number.NaN;
    let endpointActive = Number.NaN;
    const settled = async (): Promise<boolean> => {
      active = await kup.metric('kup_connections_active');
      endpointActive = await kup.metric('kup_endpoint_active_connections');
      return active === 0 && endpointActive === 0 && kup.openFds() <= baseline + 2;
    };
    const deadline = Date.now() + 5000;
    while (!(await settled()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    t.equal(active, 0, `kup_connections_active back to 0 (${active} after ${CONNECTIONS} connections)`);
    t.equal(endpointActive, 0, "the endpoint's active count back to 0 (least-connections sees it idle)");
    const fds = kup.openFds();
    // Two of slack for descriptors Node opens lazily; a leak costs one per connection.
    t.ok(fds <= baseline + 2, `kup's descriptors back to the baseline of ${baseline} (now ${fds})`);
    t.equal(await kup.metric('kup_bytes_out_total'), receivedBytes, 'every byte kup read from the endpoint reached a client');

    const signalled = Date.now();
    kup.child.kill('SIGTERM');
    const r = await kup.done;
    const ms = Date.now() - signalled;
    t.equal(r.code, 0, 'SIGTERM: exit 0');
    t.ok(ms < 2000 + 1500, `exited ${ms}ms after SIGTERM, within the 2s grace period and a margin`);
  });
}
