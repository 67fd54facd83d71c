/**
 * What the relay (either one: KUP_TEST_RELAY=native|js, see support/relay.ts)
 * does with the edges of a connection, seen from the two real peers: a
 * client's reset reaching the endpoint as a reset, a reader that stops
 * reading while the endpoint sends (kup's memory stays flat, then every byte
 * arrives), and --tcp-idle-timeout.
 */
import net, { type AddressInfo, type Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import t from 'tap';
import { startHarness } from './support/harness.js';
import { startKupProcess } from './support/kup-process.js';
import { testRelayChoice } from './support/relay.js';
import { collect, connect } from './support/net.js';
import { service, slicesFor } from './support/objects.js';
import { sleep, waitFor } from './support/wait.js';

const relay = testRelayChoice();

/** A server whose accepted sockets are handed to `onSocket`; closes them all at the end. */
async function server(onSocket: (s: Socket) => void): Promise<{ port: number; close(): Promise<void> }> {
  const open = new Set<Socket>();
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => {});
    onSocket(s);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return {
    port: (srv.address() as AddressInfo).port,
    close: () => {
      for (const s of open) s.destroy();
      return new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

t.test(`${relay} relay: a client's reset reaches the endpoint as a reset, after the bytes it sent`, async (t) => {
  let seen: { data: string; ended: string } | null = null;
  const backend = await server((s) => {
    let data = '';
    s.on('data', (d: Buffer) => (data += d.toString()));
    s.on('end', () => (seen ??= { data, ended: 'end' }));
    s.on('error', (e: NodeJS.ErrnoException) => (seen ??= { data, ended: e.code ?? e.message }));
  });
  t.teardown(() => backend.close());
  const h = await startHarness();
  t.teardown(() => h.close());
  await h.set([service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'p', port: 80 }] })], slicesFor('web', 'p', [backend.port]));
  const c = await connect(h.port('default/web:p/TCP'));
  c.write('hello before the reset');
  await sleep(200);
  c.resetAndDestroy();
  await waitFor('the endpoint saw the end', () => seen !== null, 5000);
  t.same(seen, { data: 'hello before the reset', ended: 'ECONNRESET' }, 'the endpoint read the bytes, then a reset (not a FIN)');
  await waitFor('no connection open', () => h.entry('default/web:p/TCP').internal.connections === 0, 5000);
  t.equal(h.entry('default/web:p/TCP').internal.stats.active, 0, 'the connection is no longer counted');
});

function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
}

t.test(`${relay} relay: a reader that stops reading: kup's memory stays flat, then every byte arrives`, async (t) => {
  const TOTAL = 256 * 1024 * 1024;
  const CHUNK = Buffer.alloc(64 * 1024, 'k');
  const backend = await server((s) => {
    let sent = 0;
    const pump = (): void => {
      while (sent < TOTAL) {
        sent += CHUNK.length;
        if (!s.write(CHUNK)) return void s.once('drain', pump);
      }
      s.end();
    };
    pump();
  });
  t.teardown(() => backend.close());
  const kup = await startKupProcess(t, { endpoints: [backend.port] });
  const pid = kup.child.pid ?? 0;
  const c = await connect(kup.port);
  c.pause();
  await sleep(500);
  const before = rssKiB(pid);
  await sleep(2500);
  const after = rssKiB(pid);
  t.ok(after - before < 16 * 1024, `kup's RSS grew ${after - before} KiB while the reader was paused (under 16 MiB)`);
  let got = 0;
  c.on('data', (d: Buffer) => (got += d.length));
  c.resume();
  await new Promise<void>((r) => c.once('end', () => r()));
  c.destroy();
  t.equal(got, TOTAL, 'all 256 MiB arrived once the reader read again');
  kup.child.kill('SIGTERM');
  t.equal((await kup.done).code, 0, 'kup exits 0');
});

t.test(`${relay} relay: --tcp-idle-timeout closes a silent connection and spares a talking one`, async (t) => {
  const backend = await server((s) => s.on('data', (d: Buffer) => s.write(d)));
  t.teardown(() => backend.close());
  const h = await startHarness({ tcpIdleTimeoutMs: 600 });
  t.teardown(() => h.close());
  await h.set([service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'p', port: 80 }] })], slicesFor('web', 'p', [backend.port]));
  const port = h.port('default/web:p/TCP');
  const silent = await connect(port);
  const silentEnd = collect(silent, 10_000);
  const talking = await connect(port);
  let echoed = 0;
  let talkingEnd = '';
  talking.on('data', (d: Buffer) => (echoed += d.length));
  talking.on('end', () => (talkingEnd ||= 'end'));
  talking.on('error', (e: NodeJS.ErrnoException) => (talkingEnd ||= e.code ?? e.message));
  const started = Date.now();
  const ticker = setInterval(() => talking.write('x'), 150);
  const r = await silentEnd;
  const ms = Date.now() - started;
  t.not(r.ended, 'TIMEOUT', `the silent connection was closed (${r.ended})`);
  t.ok(ms >= 500 && ms < 3000, `after about the timeout (${ms} ms)`);
  await sleep(600);
  t.equal(talkingEnd, '', 'the talking connection is still open a timeout later');
  clearInterval(ticker);
  t.ok(echoed >= 6, `its bytes were echoed all along (${echoed})`);
  talking.destroy();
  await waitFor('no connection open', () => h.entry('default/web:p/TCP').internal.connections === 0, 5000);
  t.pass('both connections are no longer counted');
});
