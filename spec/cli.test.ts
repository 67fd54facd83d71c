import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { finished, runKup, startKup, waitForOutput } from './support/cli.js';
import { DEMO_FILE } from '../lib/cli/demo.js';
import { deadPort, exchange, httpGet, nameServer, udpAsk, whoAnswers } from './support/net.js';
import { loopbackRunArgs, writeObjectsFile } from './support/kup-process.js';
import { service, slicesFor } from './support/objects.js';

/** Admin servers on kernel-chosen loopback ports, so tests never collide with a kup running on this machine. */
const ADMIN_ANY_PORT = ['--healthz-bind-address', '127.0.0.1:0', '--metrics-bind-address', '127.0.0.1:0'];

const oneLine = (s: string) => s.trim().split('\n').length === 1;

t.test('kup --version prints the version of the package.json beside it, exit 0', async (t) => {
  const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  for (const flag of ['--version', '-V']) {
    const r = await runKup([flag]);
    t.equal(r.code, 0, `${flag}: exit 0`);
    t.equal(r.stdout, `${pkg.version}\n`, `${flag}: prints ${pkg.version} and nothing else`);
    t.equal(r.stderr, '', `${flag}: nothing on stderr`);
  }
});

t.test('bad flags: one clear line, exit 2, no stack trace', async (t) => {
  const cases: [string[], RegExp][] = [
    [['run', '--bind-address', 'nope'], /--bind-address: "nope" is not an IP address/],
    [['run', '--udp-timeout', 'soon'], /--udp-timeout: "soon" is not a duration/],
    [['run', '--proxy-port-range', '9000-8000'], /--proxy-port-range: "9000-8000" ends before it begins/],
    [['run', '--source', 'etcd'], /--source: "etcd" is neither/],
    [['run', '--metrics-bind-address', 'localhost'], /--metrics-bind-address: "localhost" is not IP:PORT/],
    [['run', '--lb-strategy', 'random'], /argument 'random' is invalid/],
    [['run', '--no-such-flag'], /unknown option '--no-such-flag'/],
  ];
  for (const [args, re] of cases) {
    const r = await runKup(args);
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, re);
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

t.test('a missing or malformed file: one clear line, exit 1', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'kup-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // No admin servers: the health server starts before the file is read, and the default
  // 0.0.0.0:10256 may be another kup's on this machine (the test is about the file).
  const noAdmin = ['--healthz-bind-address', '', '--metrics-bind-address', ''];
  const missing = await runKup(['run', '--no-iptables', ...noAdmin, '--source', `file:${join(dir, 'nope.yaml')}`]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /kup: cannot read .*nope.yaml: ENOENT/);
  const bad = join(dir, 'bad.yaml');
  await writeFile(bad, 'kind: Service\nmetadata: {name: x\n');
  const r = await runKup(['run', '--no-iptables', ...noAdmin, '--source', `file:${bad}`, '--log-level', 'error']);
  t.equal(r.code, 1);
  t.ok(oneLine(r.stderr), `one line: ${r.stderr}`);
  t.match(r.stderr, /kup: .*bad.yaml:\d+:\d+: not valid YAML/);
});

t.test('kup run serves a file, logs each proxy port, and stops cleanly on SIGTERM', async (t) => {
  const backend = await nameServer('pod-1');
  t.teardown(() => backend.close());
  const file = await writeObjectsFile(t, [
    service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }),
    ...slicesFor('web', 'http', [backend.port]),
  ]);
  const child = startKup(loopbackRunArgs(file, { healthz: '127.0.0.1:0', metrics: '127.0.0.1:0' }));
  const done = finished(child);
  const m = await waitForOutput(child, /"servicePort":"default\/web:http\/TCP","proxyPort":(\d+)/);
  t.equal(await whoAnswers(Number(m[1])), 'pod-1', 'traffic flows through the logged proxy port');
  child.kill('SIGTERM');
  const r = await done;
  t.equal(r.code, 0, 'exit 0 on SIGTERM');
  t.match(r.stderr, /"msg":"stopped"/);
  t.notMatch(r.stderr, /"level":"error"/);
});

t.test('SIGTERM while kup is starting: it stops once started, exit 0, not killed by the signal', async (t) => {
  const backend = await nameServer('pod-1');
  t.teardown(() => backend.close());
  const file = await writeObjectsFile(t, [
    service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }),
    ...slicesFor('web', 'http', [backend.port]),
  ]);
  const child = startKup(loopbackRunArgs(file, { healthz: '127.0.0.1:0', metrics: '127.0.0.1:0' }));
  const done = finished(child);
  // Its first line: the first sync and the admin servers are still to come.
  await waitForOutput(child, /"msg":"starting"/);
  child.kill('SIGTERM');
  const r = await done;
  t.equal(r.signal, null, 'not ended by the signal (its default action would leave the rules behind)');
  t.equal(r.code, 0, 'exit 0');
  t.match(r.stderr, /"msg":"SIGTERM while starting: stopping once started \(again to exit at once\)"/);
  t.match(r.stderr, /"msg":"admin servers listening"[\s\S]*"msg":"stopped"/, 'started, then stopped');
  t.notMatch(r.stderr, /"level":"error"/);
});

/**
 * examples/demo.yaml with its backend ports (380xx) moved to free ones, so
 * the test never collides with a demo someone is running on this machine.
 */
async function demoCopy(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'kup-demo-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  let text = await readFile(DEMO_FILE, 'utf8');
  const ports = [...new Set(text.match(/\b380\d\d\b/g) ?? [])];
  for (const p of ports) text = text.replaceAll(p, String(await deadPort()));
  const file = join(dir, 'demo.yaml');
  await writeFile(file, text);
  return file;
}

t.test('kup demo serves the demo and stops on Ctrl-C', async (t) => {
  const child = startKup(['demo', '--source', `file:${await demoCopy(t)}`, ...ADMIN_ANY_PORT]);
  const done = finished(child);
  const m = await waitForOutput(child, /Press Ctrl-C to stop/, 15_000).catch(async (e) => {
    child.kill('SIGKILL');
    throw e;
  });
  t.ok(m);
  child.kill('SIGINT');
  const r = await done;
  t.equal(r.code, 0, 'exit 0 on Ctrl-C');
  const web = /demo\/web:http\/TCP .*proxy port (\d+)/.exec(r.stdout);
  t.ok(web, 'the web service is listed with its proxy port');
  t.match(r.stdout, /curl -s http:\/\/127\.0\.0\.1:\d+\//);
  t.match(r.stdout, /demo\/echo:echo\/UDP .*proxy port \d+/);
  t.match(r.stdout, /stopped/);
});

t.test('the demo answers: web rotates over its pods, echo echoes, empty refuses', async (t) => {
  const child = startKup(['demo', '--source', `file:${await demoCopy(t)}`, ...ADMIN_ANY_PORT]);
  const done = finished(child);
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  t.teardown(async () => {
    child.kill('SIGINT');
    await done;
  });
  await waitForOutput(child, /Press Ctrl-C to stop/, 15_000);
  const port = (name: string) => Number(new RegExp(`demo/${name}:[a-z]+/(?:TCP|UDP) .*proxy port (\\d+)`).exec(out)![1]);
  const names = [await httpGet(port('web')), await httpGet(port('web')), await httpGet(port('web'))];
  t.same([...names].sort(), ['web-1', 'web-2', 'web-3']);
  const sticky = [await httpGet(port('web-sticky')), await httpGet(port('web-sticky'))];
  t.equal(sticky[0], sticky[1], 'web-sticky keeps the client on one pod');
  t.match(String(await udpAsk(port('echo'), 'hello')), /^echo-[12]: hello$/);
  t.equal((await exchange(port('empty'), 'GET / HTTP/1.0\r\n\r\n')).ended, 'ECONNRESET', 'no endpoints: refused at once');
});
