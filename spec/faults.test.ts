import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import { createInterface } from 'node:readline';
import t from 'tap';
import { startHarness } from './support/harness.js';
import { collect, connect, exchange, nameServer, whoAnswers } from './support/net.js';
import { service, slicesFor } from './support/objects.js';
import { waitFor } from './support/wait.js';

const KEY = 'default/web:http/TCP';
const svc = () => service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] });
const openFds = () => readdirSync('/proc/self/fd').length;

function server(onConn: (s: net.Socket) => void): Promise<{ port: number; close: () => Promise<void> }> {
  const open = new Set<net.Socket>();
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => {});
    onConn(s);
  });
  return new Promise((resolve) =>
    srv.listen(0, '127.0.0.1', () =>
      resolve({
        port: (srv.address() as AddressInfo).port,
        close: () => {
          for (const s of open) s.destroy();
          return new Promise((r) => srv.close(() => r()));
        },
      }),
    ),
  );
}

/**
 * A port that drops SYNs, without root: a listener in a child process whose
 * event loop is blocked never accepts, so once its backlog is full the kernel
 * stops answering, and connects hang as they would to a dead host.
 */
async function blackhole(t: { teardown(fn: () => void): void }): Promise<number> {
  const child = spawn(process.execPath, [
    '-e',
    `const s=require('net').createServer();s.listen({port:0,host:'127.0.0.1',backlog:1},()=>{console.log(s.address().port);setTimeout(()=>Atomics.wait(new Int32Array(new SharedArrayBuffer(4)),0,0,120000),50)})`,
  ]);
  t.teardown(() => child.kill('SIGKILL'));
  const line = await new Promise<string>((r) => createInterface({ input: child.stdout }).once('line', r));
  const port = Number(line);
  await new Promise((r) => setTimeout(r, 150));
  // Fill the accept queue (backlog 1 holds two); these are never accepted either.
  const fillers = Array.from({ length: 4 }, () => net.connect(port, '127.0.0.1'));
  for (const f of fillers) f.on('error', () => {});
  t.teardown(() => fillers.forEach((f) => f.destroy()));
  await new Promise((r) => setTimeout(r, 100));
  return port;
}

t.test('an endpoint that never answers (no SYN-ACK) costs one dial timeout, then the next endpoint serves', async (t) => {
  const hole = await blackhole(t);
  const probe = net.connect(hole, '127.0.0.1');
  const hung = await new Promise<boolean>((r) => {
    probe.once('connect', () => r(false));
    probe.once('error', () => r(false));
    setTimeout(() => r(true), 400);
  });
  probe.destroy();
  t.ok(hung, 'the blackhole really drops connections');
  const live = await nameServer('live');
  const h = await startHarness();
  t.teardown(async () => {
    await h.close();
    await live.close();
  });
  await h.set(
    [svc()],
    slicesFor(
      'web',
      'http',
      [hole, live.port].sort((a, b) => a - b),
    ),
  );
  const started = Date.now();
  const answers: string[] = [];
  for (let i = 0; i < 4; i++) answers.push(await whoAnswers(h.port(KEY)));
  const ms = Date.now() - started;
  t.same(answers, ['live', 'live', 'live', 'live']);
  t.equal(h.entry(KEY).internal.stats.dialFailures, 1, 'one timeout, then the dead endpoint is passed over');
  t.ok(ms >= 240 && ms < 2000, `four clients served in ${ms}ms (one 250ms connect timeout)`);
});

t.test('an endpoint that resets before any byte: the client is moved to another endpoint', async (t) => {
  const rst = await server((s) => s.resetAndDestroy());
  const live = await nameServer('live');
  const h = await startHarness();
  t.teardown(async () => {
    await h.close();
    await live.close();
    await rst.close();
  });
  await h.set(
    [svc()],
    slicesFor(
      'web',
      'http',
      [rst.port, live.port].sort((a, b) => a - b),
    ),
  );
  const answers: string[] = [];
  for (let i = 0; i < 4; i++) answers.push(await whoAnswers(h.port(KEY)));
  t.same(answers, ['live', 'live', 'live', 'live'], 'every client served');
  t.equal(h.entry(KEY).internal.stats.dialFailures, 1, 'the resetting endpoint failed once, then was passed over');
  t.equal(h.entry(KEY).internal.stats.exhausted, 0);
});

t.test('a reset mid-stream reaches the client as a reset', async (t) => {
  const backend = await server((s) => {
    s.write(Buffer.alloc(100_000, 1));
    setTimeout(() => s.resetAndDestroy(), 50);
  });
  const h = await startHarness();
  t.teardown(async () => {
    await h.close();
    await backend.close();
  });
  await h.set([svc()], slicesFor('web', 'http', [backend.port]));
  const s = await connect(h.port(KEY));
  const r = await collect(s, 5000);
  t.equal(r.ended, 'ECONNRESET', 'the client sees the reset');
  t.equal(r.data.length, 100_000, 'after every byte sent before it');
  await waitFor('its connections to close', () => h.entry(KEY).internal.connections === 0, 5000);
  t.pass('both proxy sockets closed');
});

t.test('a backend that closes half-way: the client gets its FIN, and can still finish sending', async (t) => {
  let received = 0;
  const got = new Promise<number>((resolve) => {
    void server((s) => {
      s.end('partial');
      s.on('data', (d: Buffer) => (received += d.length));
      s.on('end', () => resolve(received));
    }).then((b) => {
      backendPort = b.port;
      close = b.close;
      ready();
    });
  });
  let backendPort = 0;
  let close = async () => {};
  let ready = () => {};
  await new Promise<void>((r) => (ready = r));
  const h = await startHarness();
  t.teardown(async () => {
    await h.close();
    await close();
  });
  await h.set([svc()], slicesFor('web', 'http', [backendPort]));
  const s = await connect(h.port(KEY));
  const chunks: Buffer[] = [];
  s.on('data', (d) => chunks.push(d));
  await new Promise((r) => s.once('end', r));
  t.equal(Buffer.concat(chunks).toString(), 'partial', 'the reply, then FIN');
  s.write(Buffer.alloc(300_000, 2));
  s.end();
  t.equal(await got, 300_000, 'the backend still received everything the client sent after its FIN');
  await waitFor('its connections to close', () => h.entry(KEY).internal.connections === 0, 5000);
  t.pass('both proxy sockets closed once both directions were done');
});

t.test('no descriptor is left behind after faults and normal traffic', async (t) => {
  const live = await nameServer('a');
  const rst = await server((s) => s.resetAndDestroy());
  const h = await startHarness();
  t.teardown(async () => {
    await h.close();
    await live.close();
    await rst.close();
  });
  await h.set(
    [svc(), service({ name: 'bad', clusterIP: '10.96.0.11', ports: [{ name: 'http', port: 80 }] })],
    [...slicesFor('web', 'http', [live.port]), ...slicesFor('bad', 'http', [rst.port])],
  );
  await whoAnswers(h.port(KEY));
  const before = openFds();
  for (let i = 0; i < 50; i++) {
    await whoAnswers(h.port(KEY));
    await exchange(h.port('default/bad:http/TCP'), 'x');
    const c = await connect(h.port(KEY));
    c.destroy(); // a client that goes away at once
  }
  await waitFor(
    "both services' connections to close",
    () => h.entry(KEY).internal.connections === 0 && h.entry('default/bad:http/TCP').internal.connections === 0,
    5000,
  );
  await new Promise((r) => setTimeout(r, 100));
  t.ok(openFds() <= before + 2, `descriptors back to ${before} (now ${openFds()})`);
});
