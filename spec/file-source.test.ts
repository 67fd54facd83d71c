import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { stringify } from 'yaml';
import type { RunConfig } from '../lib/cli/options.js';
import { testRunConfig } from './support/run-config.js';
import { startProxy } from '../lib/runtime/proxy-runtime.js';
import { LogCapture } from './support/harness.js';
import { nameServer, whoAnswers, type TestServer } from './support/net.js';
import { endpointSlice, node, service, slicesFor } from './support/objects.js';
import { waitFor } from './support/wait.js';

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
  const ms = await waitFor('a connection answered by a new endpoint', async () => {
    seen.push(await whoAnswers(port));
    return seen.at(-1) !== 'a';
  }, 1000);
  t.ok(ms < 1000, `new connections follow the change in ${ms}ms`);
  const next = [await whoAnswers(port), await whoAnswers(port)];
  t.same([seen.at(-1), ...next].slice(0, 2).sort(), ['b', 'c'], `round-robin over the new endpoints: ${seen.join(',')} | ${next.join(',')}`);
  t.equal(rt.proxier.get('default/web:http/TCP' as never)!.internal.port, port, 'same listener');

  // A second service appears; the first is untouched.
  await writeFile(file, yamlList([svc, ...slicesFor('web', 'http', [b.port, c.port]), service({ name: 'api', clusterIP: '10.96.0.20', ports: [{ port: 8080 }] }), ...slicesFor('api', '', [a.port])]));
  await waitFor('the api listener', () => rt.proxier.get('default/api:8080/TCP' as never) !== undefined, 2500);
  t.equal(await whoAnswers(rt.proxier.get('default/api:8080/TCP' as never)!.internal.port), 'a', 'an unnamed port is keyed by its number');
});

t.test('a malformed object is skipped with a warning while the rest keep serving', async (t) => {
  const { file, backends } = await setup(t);
  const [a] = backends as [TestServer];
  const good = service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] });
  const bad = { apiVersion: 'v1', kind: 'Service', metadata: { name: 'broken', namespace: 'default' }, spec: { clusterIP: '10.96.0.99', ports: [{ name: 'http', port: 'eighty' }] } };
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
  t.match(log.messages('error')[0], /not valid YAML.*keeping the last good state/);
  t.equal(await whoAnswers(rt.proxier.get('default/web:http/TCP' as never)!.internal.port), 'a', 'still serving');
  t.equal(rt.source.state().lastError !== null, true, 'the source reports the error');

  // The file disappears: the last good state keeps serving; it comes back: applied.
  await rm(file);
  await waitFor('the ENOENT error logged', () => log.messages('error').some((m) => /cannot read .*ENOENT; keeping the last good state/.test(m)), 5000);
  t.equal(await whoAnswers(rt.proxier.get('default/web:http/TCP' as never)!.internal.port), 'a', 'still serving with the file gone');
  await writeFile(file, yamlList([good, ...slicesFor('web', 'http', [backends[1]!.port])]));
  await waitFor('b to answer', async () => (await whoAnswers(rt.proxier.get('default/web:http/TCP' as never)!.internal.port)) === 'b', 5000);
  t.equal(rt.source.state().lastError, null, 'recovered once the file is back');
});

t.test('kup logs which services use topology hints', async (t) => {
  const { file, backends } = await setup(t);
  const [a, b] = backends as [TestServer, TestServer];
  // Both backends are on 127.0.0.1 (one per slice, told apart by port); only one is hinted for this node's zone.
  const hinted = (name: string, port: number, zone: string) =>
    endpointSlice({ service: 'web', name, endpoints: [{ ip: '127.0.0.1', hints: [zone] }], ports: [{ name: 'http', port }] });
  await writeFile(file, yamlList([
    node({ name: 'node-a', zone: 'zone-a' }),
    service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }),
    hinted('web-h', a.port, 'zone-a'),
    hinted('web-o', b.port, 'zone-b'),
  ]));
  const log = new LogCapture();
  const rt = await startProxy(config(file), log.logger);
  t.teardown(() => rt.stop());
  t.match(log.lines.find((l) => l['msg'] === 'using topology hints for this zone'), { servicePort: 'default/web:http/TCP', zone: 'zone-a', endpoints: 1 });
  const port = rt.proxier.get('default/web:http/TCP' as never)!.internal.port;
  t.same([await whoAnswers(port), await whoAnswers(port)], ['a', 'a'], "only the endpoint hinted for this node's zone is used");
});
