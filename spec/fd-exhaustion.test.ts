import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import t from 'tap';
import { FdBudget } from '../lib/dataplane/fd-budget.js';
import { finished, KUP, recordOutput, waitForOutput } from './support/cli.js';
import { LogCapture, startHarness } from './support/harness.js';
import { collect, connect, exchange, nameServer } from './support/net.js';
import { loopbackRunArgs, writeObjectsFile } from './support/kup-process.js';
import { service, slicesFor } from './support/objects.js';
import { waitFor } from './support/wait.js';

const KEY = 'default/web:http/TCP';

t.test('at the descriptor budget new clients are shed, established ones carry on, accepting resumes', async (t) => {
  const backend = await nameServer('a');
  // One listener + two connections of two descriptors each.
  const log = new LogCapture();
  const budget = new FdBudget(5, log.logger);
  const h = await startHarness({ budget, log });
  t.teardown(async () => {
    await h.close();
    await backend.close();
  });
  await h.set(
    [service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] })],
    slicesFor('web', 'http', [backend.port]),
  );
  const port = h.port(KEY);
  const held: Socket[] = [await connect(port), await connect(port)];
  await waitFor('two backend connections open', () => backend.open.size === 2, 5000);
  const shed = await exchange(port, 'x');
  t.equal(shed.ended, 'ECONNRESET', 'the third client is reset at once');
  t.equal(h.entry(KEY).internal.stats.shed, 1, 'and counted');
  t.match(h.log.messages('warn'), [/out of file descriptors: shedding new connections/]);
  const answers = held.map((s) => collect(s, 5000));
  for (const s of held) s.end();
  t.same(
    (await Promise.all(answers)).map((r) => r.data.toString()),
    ['a\n', 'a\n'],
    'established connections finished normally',
  );
  await waitFor('one descriptor in use', () => budget.inUse === 1, 5000);
  t.equal((await exchange(port)).data.toString(), 'a\n', 'accepting resumed');
  t.match(h.log.messages('info'), [/opened proxy port/, /descriptors available again/]);
});

t.test('kup run under a tiny open-files limit: no crash, established connections carry on', async (t) => {
  const backend = await nameServer('pod');
  t.teardown(() => backend.close());
  const file = await writeObjectsFile(t, [
    service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }),
    ...slicesFor('web', 'http', [backend.port]),
  ]);
  const args = loopbackRunArgs(file);
  // Recorded from spawn: kup says it is out of descriptors while the loop below is still connecting.
  const child = recordOutput(spawn('sh', ['-c', `ulimit -n 160 && exec "$0" "$@"`, process.execPath, KUP, ...args], { stdio: 'pipe' }));
  const done = finished(child, 60_000);
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  const m = await waitForOutput(child, /"proxyPort":(\d+)/);
  const port = Number(m[1]);
  // Far more clients than descriptors: each proxied connection costs two.
  const sockets: Socket[] = [];
  const outcomes: Promise<string>[] = [];
  for (let i = 0; i < 150; i++) {
    const s = await connect(port).catch(() => null);
    if (s === null) continue;
    sockets.push(s);
    outcomes.push(collect(s, 15_000).then((r) => (r.data.toString() === 'pod\n' ? 'served' : r.ended)));
  }
  await waitForOutput(child, /out of file descriptors/, 10_000);
  t.equal(child.exitCode, null, 'still running');
  for (const s of sockets) s.end();
  const results = await Promise.all(outcomes);
  const served = results.filter((r) => r === 'served').length;
  t.ok(served >= 40, `established connections were served (${served} of ${results.length})`);
  t.ok(served < results.length, `the rest were shed (${results.length - served})`);
  t.notOk(results.includes('TIMEOUT'), 'nobody was left hanging');
  await new Promise((r) => setTimeout(r, 300));
  t.equal((await exchange(port)).data.toString(), 'pod\n', 'new connections are accepted again');
  child.kill('SIGTERM');
  const r = await done;
  t.equal(r.code, 0, 'a clean exit on SIGTERM');
  t.notMatch(r.stderr, /EMFILE.*\n\s+at /, 'no stack trace');
});
