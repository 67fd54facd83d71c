/**
 * Native accept (native/accept.c): the relay thread accepts and dials, while
 * TypeScript still picks each endpoint and decides each retry. The data-plane
 * suites run over it under KUP_TEST_RELAY=native; these cases cover what only
 * it has: who accepts, and connections aborted while their dial is in flight.
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import { createInterface } from 'node:readline';
import t from 'tap';
import { FdBudget } from '../lib/dataplane/fd-budget.js';
import { loadNativeRelay } from '../lib/dataplane/native-relay.js';
import { TcpProxy } from '../lib/dataplane/tcp-proxy.js';
import { LogCapture, startHarness } from './support/harness.js';
import { collect, connect, nameServer, whoAnswers } from './support/net.js';
import { service, slicesFor } from './support/objects.js';
import { waitFor } from './support/wait.js';

const KEY = 'default/web:http/TCP';
const { relay, why } = loadNativeRelay();
const missing = relay === null ? why : relay.acceptor === null ? 'the addon has no native accept (KUP_NATIVE_ACCEPT=0?)' : null;

/** A port whose full backlog drops SYNs (as faults.test.ts): a dial to it hangs until its timeout. */
async function blackhole(t: { teardown(fn: () => void): void }): Promise<number> {
  const child = spawn(process.execPath, [
    '-e',
    `const s=require('net').createServer();s.listen({port:0,host:'127.0.0.1',backlog:1},()=>{console.log(s.address().port);setTimeout(()=>Atomics.wait(new Int32Array(new SharedArrayBuffer(4)),0,0,120000),50)})`,
  ]);
  t.teardown(() => child.kill('SIGKILL'));
  const line = await new Promise<string>((r) => createInterface({ input: child.stdout }).once('line', r));
  const port = Number(line);
  await new Promise((r) => setTimeout(r, 150));
  const fillers = Array.from({ length: 4 }, () => net.connect(port, '127.0.0.1'));
  for (const f of fillers) f.on('error', () => {});
  t.teardown(() => fillers.forEach((f) => f.destroy()));
  await new Promise((r) => setTimeout(r, 100));
  return port;
}

t.test('the relay thread accepts and dials; the TypeScript balancer picks round-robin', async (t) => {
  if (missing !== null) {
    if (process.env.CI === 'true') return t.fail(`CI=true but ${missing} (npm run build:native)`);
    return t.plan(0, missing);
  }
  const a = await nameServer('a');
  const b = await nameServer('b');
  const h = await startHarness({ nativeRelay: relay });
  t.teardown(async () => {
    await h.close();
    await a.close();
    await b.close();
  });
  await h.set(
    [service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] })],
    slicesFor('web', 'http', [a.port, b.port]),
  );
  const l = h.entry(KEY).internal;
  if (!(l instanceof TcpProxy)) throw new Error('not a TCP listener');
  t.equal(l.accepting, 'native', 'the listener was handed to the relay thread');
  const names: string[] = [];
  for (let i = 0; i < 6; i++) names.push(await whoAnswers(h.port(KEY)));
  t.same(names.filter((n) => n === 'a').length, 3, `round-robin: each endpoint answered every other connection (${names.join(' ')})`);
  t.ok(
    names.every((n, i) => i === 0 || n !== names[i - 1]),
    'alternating',
  );
  await waitFor('connections over', () => l.connections === 0, 5000);
  t.equal(l.stats.accepted, 6, 'six accepted');
  t.equal(l.stats.active, 0, 'none active');
});

t.test('connections still being dialled when the listener aborts its connections: reset, and every count back to 0', async (t) => {
  if (missing !== null) {
    if (process.env.CI === 'true') return t.fail(`CI=true but ${missing} (npm run build:native)`);
    return t.plan(0, missing);
  }
  const hole = await blackhole(t);
  const budget = new FdBudget(100, new LogCapture().logger);
  const h = await startHarness({ nativeRelay: relay, budget });
  t.teardown(() => h.close());
  await h.set([service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] })], slicesFor('web', 'http', [hole]));
  const l = h.entry(KEY).internal;
  if (!(l instanceof TcpProxy)) throw new Error('not a TCP listener');
  const clients = await Promise.all([connect(h.port(KEY)), connect(h.port(KEY))]);
  const outcomes = clients.map((c) => collect(c, 5000));
  await waitFor('both clients picked for and being dialled', () => l.stats.active === 2, 2000);
  const before = budget.inUse;
  t.ok(before >= 4, `two descriptors each, taken at the pick (${before} in use)`);
  l.destroyConnections();
  const ends = (await Promise.all(outcomes)).map((r) => r.ended);
  t.same(ends, ['ECONNRESET', 'ECONNRESET'], 'each client is reset');
  await waitFor('counts back', () => l.connections === 0 && l.stats.active === 0 && budget.inUse === before - 4, 2000).catch(() =>
    t.fail(`connections ${l.connections}, active ${l.stats.active}, budget ${budget.inUse} of ${before}`),
  );
  const ep = l.balancer.endpointsOf(0)[0]!;
  t.equal(ep.active, 0, "the endpoint's least-connections count is back to 0");
  t.equal(l.stats.dialFailures, 0, 'an abort is no dial failure');
});
