import net, { type AddressInfo } from 'node:net';
import t from 'tap';
import { finished, startKup, waitForOutput } from './support/cli.js';
import { collect, connect } from './support/net.js';
import { loopbackRunArgs, writeObjectsFile } from './support/kup-process.js';
import { service, slicesFor } from './support/objects.js';

/** Answers "done" `delayMs` after the client half-closes; or never, for clients that send "stuck". */
async function slowServer(delayMs: number) {
  const open = new Set<net.Socket>();
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    open.add(s);
    s.on('close', () => open.delete(s));
    s.on('error', () => {});
    let text = '';
    s.on('data', (d: Buffer) => (text += d.toString()));
    s.on('end', () => {
      if (!text.includes('stuck')) setTimeout(() => s.end('done'), delayMs);
    });
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

async function startProxyProcess(t: { teardown(fn: () => Promise<void>): void }, backendPort: number, grace: string) {
  const file = await writeObjectsFile(t, [
    service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }),
    ...slicesFor('web', 'http', [backendPort]),
  ]);
  const child = startKup(loopbackRunArgs(file, { healthz: '127.0.0.1:0', metrics: '' }, ['--shutdown-grace-period', grace]));
  const done = finished(child, 30_000);
  const m = await waitForOutput(child, /"proxyPort":(\d+)/);
  return { child, done, port: Number(m[1]) };
}

t.test('SIGTERM under traffic: stop accepting, let established connections finish, exit 0', async (t) => {
  const backend = await slowServer(800);
  t.teardown(() => backend.close());
  const { child, done, port } = await startProxyProcess(t, backend.port, '10s');
  const replies = [];
  for (let i = 0; i < 20; i++) {
    const s = await connect(port);
    const r = collect(s, 15_000);
    s.end(`request ${i}`);
    replies.push(r);
  }
  await new Promise((r) => setTimeout(r, 100));
  const signalled = Date.now();
  child.kill('SIGTERM');
  await waitForOutput(child, /"msg":"stopping"/);
  await new Promise((r) => setTimeout(r, 100));
  const late = await connect(port).then(
    (s) => (s.destroy(), 'accepted'),
    (e: NodeJS.ErrnoException) => e.code,
  );
  t.equal(late, 'ECONNREFUSED', 'no new connections once stopping');
  const results = await Promise.all(replies);
  t.same(
    results.map((r) => r.data.toString()),
    Array(20).fill('done'),
    'all 20 established connections finished',
  );
  const r = await done;
  t.equal(r.code, 0, 'exit 0');
  const ms = Date.now() - signalled;
  t.ok(ms < 5000, `exited ${ms}ms after SIGTERM, once the connections were done (not at the 10s grace)`);
  t.match(r.stderr, /"msg":"stopped"/);
});

t.test('SIGTERM with a connection that never finishes: closed at the grace period', async (t) => {
  const backend = await slowServer(100);
  t.teardown(() => backend.close());
  const { child, done, port } = await startProxyProcess(t, backend.port, '1s');
  const s = await connect(port);
  const stuck = collect(s, 15_000);
  s.end('stuck');
  await new Promise((r) => setTimeout(r, 200));
  const signalled = Date.now();
  child.kill('SIGTERM');
  const r = await done;
  const ms = Date.now() - signalled;
  t.equal(r.code, 0, 'exit 0');
  t.ok(ms >= 900 && ms < 4000, `exited after the 1s grace period (${ms}ms)`);
  t.not((await stuck).ended, 'TIMEOUT', 'the stuck client was closed, not left hanging');
});

t.test('SIGTERM while starting: kup finishes starting, then stops cleanly (exit 0, listener closed)', async (t) => {
  const backend = await slowServer(100);
  t.teardown(() => backend.close());
  const file = await writeObjectsFile(t, [
    service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }),
    ...slicesFor('web', 'http', [backend.port]),
  ]);
  const child = startKup(loopbackRunArgs(file, { healthz: '127.0.0.1:0', metrics: '' }, ['--shutdown-grace-period', '5s']));
  const done = finished(child, 30_000);
  // The first line kup logs, before it has read the source or opened anything.
  await waitForOutput(child, /"msg":"starting"/);
  child.kill('SIGTERM');
  const r = await done;
  t.equal(r.signal, null, 'not killed by the signal');
  t.equal(r.code, 0, 'exit 0');
  t.match(
    r.stderr + r.stdout,
    /"msg":"SIGTERM while starting: stopping once started \(again to exit at once\)"/,
    'says it will stop once started',
  );
  t.match(r.stderr + r.stdout, /"msg":"stopped"/, 'and stopped as on any SIGTERM');
});
