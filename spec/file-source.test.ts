import { appendFile, mkdir, mkdtemp, rename, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { stringify } from 'yaml';
import type { RunConfig } from '../lib/runtime/config.js';
import { testRunConfig } from './support/run-config.js';
import { startProxy } from '../lib/runtime/proxy-runtime.js';
import { LogCapture } from './support/harness.js';
import { nameServer, whoAnswers, type TestServer } from './support/net.js';
import { endpointSlice, node, service, slicesFor } from './support/objects.js';
import { waitFor } from './support/wait.js';
import { runKup } from './support/cli.js';
import { parseServiceCIDR } from '../lib/core/cluster-ip-range.js';
import { clusterList } from './support/kubectl-list.js';

const config = (path: string): RunConfig => testRunConfig(path, { minSyncPeriodMs: 1000, logLevel: 'info' });

function yamlList(objects: unknown[]): string {
  return stringify({ apiVersion: 'v1', kind: 'List', items: objects });
}

async function setup(t: { teardown(fn: () => Promise<void>): void }) {
  const dir = await mkdtemp(join(tmpdir(), 'kup-file-'));
  const backends: TestServer[] = await Promise.all(['a', 'b', 'c'].map((n) => nameServer(n)));
  const file = join(dir, 'cluster.yaml');
  t.teardown(async () => {
    await Promise.all(backends.map((b) => b.close()));
    await rm(dir, { recursive: true, force: true });
  });
  return { dir, file, backends };
}

t.test('the file changes and new connections follow within a second', async (t) => {
  const { file, backends } = await setup(t);
  const [a, b, c] = backends as [TestServer, TestServer, TestServer];
  const svc = service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] });
  await writeFile(file, yamlList([svc, ...slicesFor('web', 'http', [a.port])]));
  const log = new LogCapture();
  const rt = await startProxy(config(file), log.logger);
  t.teardown(() => rt.stop());
  const port = rt.proxier.get('default/web:http/TCP' as never)!.internal.port;
  t.equal(await whoAnswers(port), 'a');
  await new Promise((r) => setTimeout(r, 1100)); // past min-sync-period since the first sync

  // An editor-style replace (write a new file, rename it over the old one).
  await writeFile(`${file}.tmp`, yamlList([svc, ...slicesFor('web', 'http', [b.port, c.port])]));
  await rename(`${file}.tmp`, file);
  const seen: string[] = [];
  const ms = await waitFor(
    'a connection answered by a new endpoint',
    async () => {
      seen.push(await whoAnswers(port));
      return seen.at(-1) !== 'a';
    },
    1000,
  );
  t.ok(ms < 1000, `new connections follow the change in ${ms}ms`);
  const next = [await whoAnswers(port), await whoAnswers(port)];
  t.same(
    [seen.at(-1), ...next].slice(0, 2).sort(),
    ['b', 'c'],
    `round-robin over the new endpoints: ${seen.join(',')} | ${next.join(',')}`,
  );
  t.equal(rt.proxier.get('default/web:http/TCP' as never)!.internal.port, port, 'same listener');

  // A second service appears; the first is untouched.
  await writeFile(
    file,
    yamlList([
      svc,
      ...slicesFor('web', 'http', [b.port, c.port]),
      service({ name: 'api', clusterIP: '10.96.0.20', ports: [{ port: 8080 }] }),
      ...slicesFor('api', '', [a.port]),
    ]),
  );
  await waitFor('the api listener', () => rt.proxier.get('default/api:8080/TCP' as never) !== undefined, 2500);
  t.equal(await whoAnswers(rt.proxier.get('default/api:8080/TCP' as never)!.internal.port), 'a', 'an unnamed port is keyed by its number');
});

t.test('a malformed object is skipped with a warning while the rest keep serving', async (t) => {
  const { file, backends } = await setup(t);
  const [a] = backends as [TestServer];
  const good = service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] });
  const bad = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'broken', namespace: 'default' },
    spec: { clusterIP: '10.96.0.99', ports: [{ name: 'http', port: 'eighty' }] },
  };
  const notAnObject = 'just a string';
  await writeFile(file, `${yamlList([good, bad, ...slicesFor('web', 'http', [a.port])])}---\n${JSON.stringify(notAnObject)}\n`);
  const log = new LogCapture();
  const rt = await startProxy(config(file), log.logger);
  t.teardown(() => rt.stop());
  t.equal(await whoAnswers(rt.proxier.get('default/web:http/TCP' as never)!.internal.port), 'a', 'the good service serves');
  const warnings = log.messages('warn');
  t.match(warnings, [/document 2: not a Kubernetes object/, /Service default\/broken port "http": port "eighty" is not a number/]);
  t.equal(rt.proxier.size, 1);

  // Now the whole file becomes unparseable: the last good state keeps serving.
  await new Promise((r) => setTimeout(r, 1100));
  await writeFile(file, 'items: [unclosed\n');
  await waitFor('an error logged', () => log.messages('error').length > 0, 3000);
  t.match(log.messages('error')[0], /cluster\.yaml:\d+:\d+: not valid YAML: .*[a-z\]]; keeping the last good state/);
  t.notMatch(log.messages('error')[0], /line \d+|:;/, 'the line number once, no ":;"');
  t.equal(await whoAnswers(rt.proxier.get('default/web:http/TCP' as never)!.internal.port), 'a', 'still serving');
  t.equal(rt.source.state().lastError !== null, true, 'the source reports the error');

  // The file disappears: the last good state keeps serving; it comes back: applied.
  await rm(file);
  await waitFor(
    'the ENOENT error logged',
    () => log.messages('error').some((m) => /cannot read .*ENOENT; keeping the last good state/.test(m)),
    5000,
  );
  t.equal(await whoAnswers(rt.proxier.get('default/web:http/TCP' as never)!.internal.port), 'a', 'still serving with the file gone');
  await writeFile(file, yamlList([good, ...slicesFor('web', 'http', [backends[1]!.port])]));
  await waitFor(
    'b to answer',
    async () => (await whoAnswers(rt.proxier.get('default/web:http/TCP' as never)!.internal.port)) === 'b',
    5000,
  );
  t.equal(rt.source.state().lastError, null, 'recovered once the file is back');
});

t.test('kup logs which services use topology hints', async (t) => {
  const { file, backends } = await setup(t);
  const [a, b] = backends as [TestServer, TestServer];
  // Both backends are on 127.0.0.1 (one per slice, told apart by port); only one is hinted for this node's zone.
  const hinted = (name: string, port: number, zone: string) =>
    endpointSlice({ service: 'web', name, endpoints: [{ ip: '127.0.0.1', hints: [zone] }], ports: [{ name: 'http', port }] });
  await writeFile(
    file,
    yamlList([
      node({ name: 'node-a', zone: 'zone-a' }),
      service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }),
      hinted('web-h', a.port, 'zone-a'),
      hinted('web-o', b.port, 'zone-b'),
    ]),
  );
  const log = new LogCapture();
  const rt = await startProxy(config(file), log.logger);
  t.teardown(() => rt.stop());
  t.match(
    log.lines.find((l) => l['msg'] === 'using topology hints for this zone'),
    { servicePort: 'default/web:http/TCP', zone: 'zone-a', endpoints: 1 },
  );
  const port = rt.proxier.get('default/web:http/TCP' as never)!.internal.port;
  t.same([await whoAnswers(port), await whoAnswers(port)], ['a', 'a'], "only the endpoint hinted for this node's zone is used");
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const reloads = (log: LogCapture) => log.lines.filter((l) => l['msg'] === 'file changed; objects reloaded');
const portOf = (rt: { proxier: { get(k: never): { internal: { port: number } } | undefined } }, key: string) =>
  rt.proxier.get(key as never)?.internal.port;

t.test('a shell redirect (truncate, then write) is applied only once written: no listener closes, same proxy port', async (t) => {
  const { file, backends } = await setup(t);
  const [a, b] = backends as [TestServer, TestServer];
  const svc = service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] });
  await writeFile(file, yamlList([svc, ...slicesFor('web', 'http', [a.port])]));
  const log = new LogCapture();
  const rt = await startProxy(testRunConfig(file, { logLevel: 'info' }), log.logger);
  t.teardown(() => rt.stop());
  const port = portOf(rt, 'default/web:http/TCP')!;
  // `kubectl get ... > cluster.yaml`: the shell truncates first, kubectl writes ~100 ms later.
  await writeFile(file, '');
  await sleep(100);
  await writeFile(file, yamlList([svc, ...slicesFor('web', 'http', [b.port])]));
  await waitFor('(await whoAnswers(port)) === "b"', async () => (await whoAnswers(port)) === 'b', 3000);
  t.same(
    log.messages().filter((m) => m === 'closed proxy port'),
    [],
    'no listener closed',
  );
  t.same(
    reloads(log).map((l) => l['services']),
    [1],
    'one reload, of the whole file',
  );
  t.equal(portOf(rt, 'default/web:http/TCP'), port, 'same proxy port');
});

t.test('an empty file is a failed read; an empty List removes everything', async (t) => {
  const { file, backends } = await setup(t);
  const [a] = backends as [TestServer];
  await writeFile(
    file,
    yamlList([
      service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }),
      ...slicesFor('web', 'http', [a.port]),
    ]),
  );
  const log = new LogCapture();
  const rt = await startProxy(testRunConfig(file, { logLevel: 'info' }), log.logger);
  t.teardown(() => rt.stop());
  const port = portOf(rt, 'default/web:http/TCP')!;
  await writeFile(file, '');
  await waitFor('log.messages("error").length > 0', () => log.messages('error').length > 0, 3000);
  await sleep(2500); // past a poll: still one line
  t.equal(log.messages('error').length, 1, `one error line: ${log.messages('error').join(' | ')}`);
  t.match(log.messages('error')[0], /no objects in the file.*empty List.*keeping the last good state/);
  t.match(rt.source.state().lastError, /no objects in the file/, 'lastError says why');
  t.equal(await whoAnswers(port), 'a', 'the last good state keeps serving');
  t.same(reloads(log), [], 'nothing applied');

  await writeFile(file, 'apiVersion: v1\nkind: List\nitems: []\n');
  await waitFor('rt.proxier.size === 0', () => rt.proxier.size === 0, 3000);
  t.equal(rt.source.state().lastError, null, 'an empty List is a good read');
});

t.test('a kubectl List cut short, or written in two halves, is never applied half-way', async (t) => {
  const { file, backends } = await setup(t);
  const [a, b] = backends as [TestServer, TestServer];
  const objects = (p: number) => [
    service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }),
    ...slicesFor('web', 'http', [p]),
    service({ name: 'api', clusterIP: '10.96.0.20', ports: [{ port: 8080 }] }),
    ...slicesFor('api', '', [p]),
  ];
  // kubectl prints `kind: List` after the items.
  const kubectl = (objs: unknown[]) => stringify({ apiVersion: 'v1', items: objs, kind: 'List', metadata: { resourceVersion: '' } });
  await writeFile(file, kubectl(objects(a.port)));
  const log = new LogCapture();
  const rt = await startProxy(testRunConfig(file, { logLevel: 'info' }), log.logger);
  t.teardown(() => rt.stop());
  const apiPort = portOf(rt, 'default/api:8080/TCP')!;

  const whole = kubectl(objects(b.port));
  const cut = whole.slice(0, whole.lastIndexOf('  - apiVersion: v1\n    kind: Service\n')); // before the api Service
  t.ok(cut.length > 100 && cut.length < whole.length / 2 + 200, 'cut at an item boundary');
  await writeFile(file, cut);
  await waitFor('log.messages("error").length > 0', () => log.messages('error').length > 0, 3000);
  t.match(log.messages('error')[0], /has items but no kind \(a List cut short/);
  t.ok(rt.source.state().lastError !== null, 'lastError set');
  t.equal(await whoAnswers(apiPort), 'a', 'api still served from the last good state');

  // Multi-document YAML written in two halves 200 ms apart.
  const half1 = yamlList(objects(b.port).slice(0, 2));
  const half2 = `---\n${yamlList(objects(b.port).slice(2))}`;
  await writeFile(file, half1);
  await sleep(200);
  await appendFile(file, half2);
  await waitFor('(await whoAnswers(apiPort)) === "b"', async () => (await whoAnswers(apiPort)) === 'b', 3000);
  t.same(
    log.messages().filter((m) => m === 'closed proxy port'),
    [],
    'api never removed',
  );
  t.same(
    reloads(log).map((l) => l['services']),
    [2],
    'applied once, whole',
  );
});

t.test('a service port that disappears and comes back keeps its proxy port', async (t) => {
  const { file, backends } = await setup(t);
  const [a] = backends as [TestServer];
  const web = [
    service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }),
    ...slicesFor('web', 'http', [a.port]),
  ];
  const api = [service({ name: 'api', clusterIP: '10.96.0.20', ports: [{ port: 8080 }] }), ...slicesFor('api', '', [a.port])];
  await writeFile(file, yamlList([...web, ...api]));
  const log = new LogCapture();
  const rt = await startProxy(testRunConfig(file, { logLevel: 'info' }), log.logger);
  t.teardown(() => rt.stop());
  const before = portOf(rt, 'default/api:8080/TCP')!;
  await writeFile(file, yamlList(web));
  await waitFor('portOf(rt, "default/api:8080/TCP") === undefined', () => portOf(rt, 'default/api:8080/TCP') === undefined, 3000);
  await writeFile(file, yamlList([...web, ...api]));
  await waitFor('portOf(rt, "default/api:8080/TCP") !== undefined', () => portOf(rt, 'default/api:8080/TCP') !== undefined, 3000);
  t.equal(portOf(rt, 'default/api:8080/TCP'), before, 'the same proxy port as before');
  t.equal(await whoAnswers(before), 'a');
});

t.test('UTF-16 (PowerShell >) and UTF-8 with a BOM are read; other bytes are refused in one line', async (t) => {
  const { dir, backends } = await setup(t);
  const [a] = backends as [TestServer];
  const text = yamlList([
    service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }),
    ...slicesFor('web', 'http', [a.port]),
  ]);
  const be = Buffer.from(`\ufeff${text}`, 'utf16le').swap16();
  const cases: [string, Buffer][] = [
    ['utf16le', Buffer.from(`\ufeff${text}`, 'utf16le')],
    ['utf16be', be],
    ['utf8bom', Buffer.from(`\ufeff${text}`, 'utf8')],
  ];
  for (const [name, bytes] of cases) {
    const file = join(dir, `${name}.yaml`);
    await writeFile(file, bytes);
    const rt = await startProxy(config(file), new LogCapture().logger);
    t.equal(await whoAnswers(portOf(rt, 'default/web:http/TCP')!), 'a', `${name}: served`);
    await rt.stop();
  }
  const latin1 = join(dir, 'latin1.yaml');
  await writeFile(latin1, Buffer.concat([Buffer.from('# caf'), Buffer.from([0xe9]), Buffer.from(`\n${text}`)]));
  await t.rejects(startProxy(config(latin1), new LogCapture().logger), {
    code: 'KUP_BAD_FILE',
    message: /latin1\.yaml: not UTF-8 text .*save it as UTF-8$/,
  });
  const nobom = join(dir, 'nobom.yaml');
  await writeFile(nobom, Buffer.from(text, 'utf16le'));
  await t.rejects(startProxy(config(nobom), new LogCapture().logger), { message: /NUL bytes \(UTF-16 without a byte-order mark\?\)/ });
});

t.test('YAML merge keys work; an alias error at start-up is one line, no stack', async (t) => {
  const { dir, file, backends } = await setup(t);
  const [a] = backends as [TestServer];
  await writeFile(
    file,
    `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: default}
  spec: &spec
    clusterIP: 10.96.0.10
    ports: [{name: http, port: 80}]
- apiVersion: v1
  kind: Service
  metadata: {name: api, namespace: default}
  spec:
    <<: *spec
    clusterIP: 10.96.0.11
---
${yamlList(slicesFor('api', 'http', [a.port]))}`,
  );
  const rt = await startProxy(config(file), new LogCapture().logger);
  t.teardown(() => rt.stop());
  t.equal(await whoAnswers(portOf(rt, 'default/api:http/TCP')!), 'a', 'the merged ports are served');

  const bad = join(dir, 'alias.yaml');
  await writeFile(bad, 'apiVersion: v1\nkind: List\nitems: *nope\n');
  const r = await runKup([
    'run',
    '--no-iptables',
    '--source',
    `file:${bad}`,
    '--healthz-bind-address=',
    '--metrics-bind-address=',
    '--log-level=error',
  ]);
  t.equal(r.code, 1);
  t.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
  t.match(r.stderr, /^kup: .*alias\.yaml: not valid YAML: .*nope/);
  t.notMatch(r.stderr, /internal error|\n\s+at /);
});

t.test('a Service without a clusterIP gets a stable one from --service-cluster-ip-range, logged once', async (t) => {
  const { file, backends } = await setup(t);
  const [a, b] = backends as [TestServer, TestServer];
  // What `kubectl create service clusterip web --tcp=80 --dry-run=client -o yaml` prints: no clusterIP.
  const svc = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: 'web', namespace: 'default' },
    spec: { ports: [{ name: 'http', port: 80, protocol: 'TCP', targetPort: 80 }], type: 'ClusterIP' },
  };
  const taken = service({ name: 'other', clusterIP: '10.96.0.10', ports: [{ port: 81 }] });
  await writeFile(file, yamlList([svc, taken, ...slicesFor('web', 'http', [a.port])]));
  const log = new LogCapture();
  const rt = await startProxy(testRunConfig(file, { logLevel: 'info' }), log.logger);
  t.teardown(() => rt.stop());
  const sp = rt.proxier.get('default/web:http/TCP' as never);
  t.ok(sp !== undefined, 'served');
  const ip = sp!.sp.clusterIPs[0]!;
  t.match(ip, /^10\.(9[6-9]|10[0-9]|11[01])\.\d+\.\d+$/, `inside 10.96.0.0/12: ${ip}`);
  t.not(ip, '10.96.0.10');
  t.equal(await whoAnswers(sp!.internal.port), 'a');
  await writeFile(file, yamlList([svc, taken, ...slicesFor('web', 'http', [b.port])]));
  await waitFor('(await whoAnswers(sp!.internal.port)) === "b"', async () => (await whoAnswers(sp!.internal.port)) === 'b', 3000);
  t.equal(rt.proxier.get('default/web:http/TCP' as never)!.sp.clusterIPs[0], ip, 'the same address after a reload');
  t.same(
    log.lines.filter((l) => /has no clusterIP; assigned/.test(String(l['msg']))).map((l) => l['clusterIP']),
    [ip],
    'logged once',
  );

  // Deterministic: another kup (another node) gives the same address; another range gives one inside it.
  const again = await startProxy(config(file), new LogCapture().logger);
  t.equal(again.proxier.get('default/web:http/TCP' as never)!.sp.clusterIPs[0], ip, 'the same on every node');
  await again.stop();
  const other = await startProxy(
    testRunConfig(file, { serviceClusterIPRange: parseServiceCIDR('--service-cluster-ip-range', '172.20.0.0/16') }),
    new LogCapture().logger,
  );
  t.match(other.proxier.get('default/web:http/TCP' as never)!.sp.clusterIPs[0], /^172\.20\.\d+\.\d+$/);
  await other.stop();
});

t.test('a ConfigMap-mounted file (kubelet swaps the ..data symlink) is applied within a second', async (t) => {
  const { dir, backends } = await setup(t);
  const [a, b, c] = backends as [TestServer, TestServer, TestServer];
  const content = (p: number) =>
    yamlList([service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }), ...slicesFor('web', 'http', [p])]);
  // Kubelet's layout: cluster.yaml -> ..data/cluster.yaml, ..data -> ..<timestamp>/
  await mkdir(join(dir, '..2026_01_01_00_00_00.1'));
  await writeFile(join(dir, '..2026_01_01_00_00_00.1', 'cluster.yaml'), content(a.port));
  await symlink('..2026_01_01_00_00_00.1', join(dir, '..data'));
  await symlink('..data/cluster.yaml', join(dir, 'cluster.yaml'));
  const rt = await startProxy(config(join(dir, 'cluster.yaml')), new LogCapture().logger);
  t.teardown(() => rt.stop());
  const port = portOf(rt, 'default/web:http/TCP')!;
  t.equal(await whoAnswers(port), 'a');
  let current = '..2026_01_01_00_00_00.1';
  for (const [i, next] of [
    [2, b],
    [3, c],
  ] as const) {
    await sleep(1100); // past min-sync-period
    // The atomic writer: new timestamped dir, ..data_tmp -> it, rename over ..data, old dir removed.
    const dirName = `..2026_01_01_00_00_00.${i}`;
    await mkdir(join(dir, dirName));
    const newFile = join(dir, dirName, 'cluster.yaml');
    await writeFile(newFile, content(next.port));
    // Same size and mtime as the old file: only the directory watch can see this swap (the poll compares mtimes).
    const old = await stat(join(dir, current, 'cluster.yaml'));
    await utimes(newFile, old.atime, old.mtime);
    await symlink(dirName, join(dir, '..data_tmp'));
    const t0 = Date.now();
    await rename(join(dir, '..data_tmp'), join(dir, '..data'));
    await rm(join(dir, current), { recursive: true });
    current = dirName;
    await waitFor('(await whoAnswers(port)) === next.name', async () => (await whoAnswers(port)) === next.name, 3000);
    const ms = Date.now() - t0;
    t.ok(ms < 1000, `swap ${i - 1} applied in ${ms}ms`);
  }
});

t.test('a 1,000-service kubectl List is parsed off the main thread: the event loop never stalls', async (t) => {
  const { file } = await setup(t);
  const list = (g: number) => stringify(clusterList(1000, g));
  await writeFile(file, list(0));
  const log = new LogCapture();
  const rt = await startProxy(testRunConfig(file, { logLevel: 'info', nodeName: 'node-0' }), log.logger);
  t.teardown(() => rt.stop());
  t.equal(rt.proxier.size, 1000);
  const next = list(1); // generated before measuring: stringify is slow
  let worst = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    worst = Math.max(worst, now - last - 5);
    last = now;
  }, 5);
  t.teardown(() => clearInterval(timer));
  await writeFile(`${file}.tmp`, next);
  await rename(`${file}.tmp`, file);
  await waitFor('reloads(log).length === 1', () => reloads(log).length === 1, 30_000);
  await sleep(300); // and the sync after it
  clearInterval(timer);
  t.ok(worst < 250, `worst event-loop stall during the reload: ${worst.toFixed(0)}ms`);
});
