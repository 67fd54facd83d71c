import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import t, { type Test } from 'tap';
import { isKupError } from '../lib/core/errors.js';
import { KubeSource, type KubeSourceOptions } from '../lib/sources/kube-source.js';
import { loadKubeConfig } from '../lib/sources/kubeconfig.js';
import { ApiServerDouble } from './support/apiserver-double.js';
import { endpointSlice, HEADLESS_LABEL, node, service, ZONE_LABEL } from './support/objects.js';
import { RecordingStore } from './support/recording-store.js';
import { sleep, waitFor } from './support/wait.js';

interface Harness {
  api: ApiServerDouble;
  kubeconfig: string;
  dir: string;
  logs: string[];
  logger: Logger;
}

async function harness(t: Test, options: ConstructorParameters<typeof ApiServerDouble>[0] = {}): Promise<Harness> {
  const api = new ApiServerDouble(options);
  await api.start();
  t.teardown(() => api.stop());
  const dir = await mkdtemp(join(tmpdir(), 'kup-source-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const kubeconfig = join(dir, 'kubeconfig');
  await api.writeKubeconfig(kubeconfig);
  const logs: string[] = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => void logs.push(line) });
  return { api, kubeconfig, dir, logs, logger };
}

async function started(
  t: Test,
  h: Harness,
  extra: Partial<KubeSourceOptions> = {},
): Promise<{ source: KubeSource; store: RecordingStore }> {
  const source = new KubeSource({ kubeconfig: h.kubeconfig, nodeName: 'node-a', logger: h.logger, ...extra });
  t.teardown(() => source.stop());
  const store = new RecordingStore();
  await source.start(store);
  return { source, store };
}

const web = (port = 80) =>
  service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port, targetPort: 'http' }], selector: { app: 'web' } });
const webSlice = (ips: string[]) =>
  endpointSlice({ service: 'web', endpoints: ips.map((ip) => ({ ip, nodeName: 'node-a' })), ports: [{ name: 'http', port: 8080 }] });
const plain = (name: string, ip: string) => service({ name, clusterIP: ip, ports: [{ port: 80 }] });

function seed(api: ApiServerDouble): void {
  api.upsert(web());
  api.upsert(webSlice(['127.0.0.2', '127.0.0.3']));
  api.upsert(service({ name: 'elsewhere', clusterIP: '10.96.0.11', ports: [{ port: 80 }], proxyName: 'other-proxy' }));
  api.upsert(
    endpointSlice({
      service: 'elsewhere',
      endpoints: [{ ip: '127.0.0.9' }],
      ports: [{ port: 80 }],
      labels: { 'service.kubernetes.io/service-proxy-name': 'other-proxy' },
    }),
  );
  api.upsert(service({ name: 'headless', clusterIP: 'None', ports: [{ port: 80 }] }));
  api.upsert(service({ name: 'labelled-headless', clusterIP: '10.96.0.12', ports: [{ port: 80 }], labels: { [HEADLESS_LABEL]: '' } }));
  api.upsert(node({ name: 'node-a', zone: 'zone-a' }));
  api.upsert(node({ name: 'node-b', zone: 'zone-b' }));
}

t.test('the initial list is delivered, in plain JSON, before start() resolves', async (t) => {
  const h = await harness(t);
  seed(h.api);
  const { source, store } = await started(t, h);
  t.same([...store.services.keys()], ['default/web'], 'only services this proxy owns (no other proxy, no headless)');
  t.same([...store.slices.keys()], [`default/${webSlice([]).metadata?.name}`], 'slices of other proxies are left out');
  const svc = store.services.get('default/web')!;
  t.equal(svc.kind, 'Service', 'list items carry kind like watch objects do');
  t.equal(svc.apiVersion, 'v1');
  t.equal(Object.getPrototypeOf(svc), Object.prototype, 'plain JSON, not a deserialised model');
  t.equal(svc.spec?.ports?.[0]?.targetPort, 'http');
  t.equal(store.slices.values().next().value?.endpoints?.length, 2);
  const state = source.state();
  t.equal(state.kind, 'kubernetes');
  t.equal(state.synced, true);
  t.equal(state.lastError, null);
  t.ok(state.lastEventTime > 0);
  t.equal(state.detail.server, h.api.url);
  t.equal(state.detail.services, 1);
  await waitFor('the node', () => store.node !== undefined);
  t.equal(store.node?.metadata?.labels?.[ZONE_LABEL], 'zone-a', 'this node, with its zone label');
  t.same(store.deletions(), []);
});

t.test('objects are cut to what kup reads on arrival, listed or watched (memory at 10,000 services)', async (t) => {
  const h = await harness(t);
  const bulky = <T extends object>(o: T, tag: string): T => {
    const obj = o as T & { metadata: Record<string, unknown> };
    obj.metadata.managedFields = [{ manager: 'kubectl', operation: 'Update', fieldsV1: { 'f:spec': { x: 'y'.repeat(4096) } } }];
    obj.metadata.annotations = { 'kubectl.kubernetes.io/last-applied-configuration': tag.repeat(1024), 'kup.dev/proxy-protocol': 'v1' };
    obj.metadata.uid = `uid-${tag}`;
    return obj;
  };
  h.api.upsert(bulky(web(), 'l'));
  h.api.upsert(bulky(webSlice(['127.0.0.2']), 'l'));
  const { store } = await started(t, h);
  const check = (what: string): void => {
    const svc = store.services.get('default/web')!;
    t.same(
      Object.keys(svc.metadata ?? {}).sort(),
      ['annotations', 'name', 'namespace', 'resourceVersion'],
      `${what}: Service metadata kept`,
    );
    t.same(svc.metadata?.annotations, { 'kup.dev/proxy-protocol': 'v1' }, `${what}: only the annotation kup reads`);
    const slice = store.slices.values().next().value!;
    t.equal(slice.metadata?.managedFields, undefined, `${what}: no managedFields on the slice`);
    t.equal(slice.metadata?.annotations, undefined, `${what}: no last-applied configuration on the slice`);
    t.ok(JSON.stringify(svc).length < 1000 && JSON.stringify(slice).length < 1000, `${what}: small objects`);
  };
  check('listed');
  h.api.upsert(bulky(web(81), 'w'));
  h.api.upsert(bulky(webSlice(['127.0.0.3']), 'w'));
  await waitFor('watched changes', () => store.services.get('default/web')?.spec?.ports?.[0]?.port === 81);
  await waitFor('watched slice', () => store.slices.values().next().value?.endpoints?.[0]?.addresses?.[0] === '127.0.0.3');
  check('watched');
});

t.test('adds, updates, deletes and selector changes arrive', async (t) => {
  const h = await harness(t);
  seed(h.api);
  const { store } = await started(t, h);
  h.api.upsert(plain('api', '10.96.0.20'));
  await waitFor('a new service', () => store.services.has('default/api'));
  h.api.upsert(web(81));
  await waitFor('an updated service', () => store.services.get('default/web')?.spec?.ports?.[0]?.port === 81);
  h.api.upsert(webSlice(['127.0.0.2', '127.0.0.3', '127.0.0.4']));
  await waitFor('scaled endpoints', () => store.slices.values().next().value?.endpoints?.length === 3);
  h.api.upsert(service({ name: 'api', clusterIP: '10.96.0.20', ports: [{ port: 80 }], proxyName: 'other-proxy' }));
  await waitFor('a service handed to another proxy to go', () => !store.services.has('default/api'));
  h.api.upsert(service({ name: 'headless-2', clusterIP: 'None', ports: [{ port: 80 }] }));
  h.api.remove('Service', 'default', 'web');
  h.api.remove('EndpointSlice', 'default', webSlice([]).metadata!.name!);
  await waitFor('deletions', () => store.services.size === 0 && store.slices.size === 0);
  t.notOk(
    store.log.some((l) => l.includes('headless')),
    'headless services never arrive',
  );
  t.same(store.deletions(), [
    'deleteService default/api',
    'deleteService default/web',
    `deleteSlice default/${webSlice([]).metadata?.name}`,
  ]);
  h.api.upsert(node({ name: 'node-a', zone: 'zone-c' }));
  await waitFor('the node relabelled', () => store.node?.metadata?.labels?.[ZONE_LABEL] === 'zone-c');
  h.api.remove('Node', undefined, 'node-a');
  await waitFor('the node gone', () => store.node === null);
});

t.test('a watch cut mid-stream plus compaction (410) converges with nothing lost', async (t) => {
  const h = await harness(t);
  seed(h.api);
  h.api.upsert(plain('doomed', '10.96.0.30'));
  const { source, store } = await started(t, h);
  await waitFor('watches open', () => h.api.openWatches === 3);
  const listsBefore = h.api.counters.lists.Service;
  h.api.dropWatches('destroy');
  h.api.remove('Service', 'default', 'doomed');
  h.api.upsert(plain('newcomer', '10.96.0.31'));
  h.api.upsert(web(82));
  h.api.compact();
  await waitFor(
    'convergence after relist',
    () =>
      store.services.has('default/newcomer') &&
      !store.services.has('default/doomed') &&
      store.services.get('default/web')?.spec?.ports?.[0]?.port === 82,
  );
  t.ok(h.api.counters.gone >= 1, 'the server answered 410 Gone');
  t.ok(h.api.counters.lists.Service > listsBefore, 'the source relisted');
  t.same(store.deletions(), ['deleteService default/doomed'], 'only the really deleted service is deleted');
  t.ok(store.slices.size === 1, 'slices kept');
  t.ok(
    h.logs.some((l) => /watching services failed.*restarting in 1s/.test(l)),
    'the restart is logged',
  );
  await waitFor('the error to clear', () => source.state().lastError === null);
  t.ok(Number(source.state().detail.servicesRestarts) >= 1);
});

t.test('repeated clean watch closes on an idle cluster never leave it unwatched for long', async (t) => {
  const h = await harness(t);
  seed(h.api);
  const { store } = await started(t, h, { maxWatchReconnectDelayMs: 1000 });
  // Uncapped, client-node's reconnect pause doubles to 30 s when no event resets it.
  for (let i = 0; i < 6; i++) {
    await waitFor('services watch open', () => h.api.openWatchesOf('Service') === 1);
    h.api.dropWatches('end');
  }
  await waitFor('services watch open again', () => h.api.openWatchesOf('Service') === 1, 5000);
  const before = Date.now();
  h.api.upsert(plain('quick', '10.96.0.40'));
  await waitFor('the change', () => store.services.has('default/quick'), 5000);
  t.ok(Date.now() - before < 5000, 'seen within the bound');
  t.same(store.deletions(), []);
});

t.test('API server down for 10 s: last state kept, error reported, changes made meanwhile arrive after', async (t) => {
  const h = await harness(t);
  seed(h.api);
  h.api.upsert(plain('doomed', '10.96.0.30'));
  const { source, store } = await started(t, h);
  await waitFor('watches open', () => h.api.openWatches === 3);
  await h.api.stop();
  await waitFor('the error in state()', () => source.state().lastError !== null);
  t.match(source.state().lastError, /services: /);
  // While down: the table must not be emptied.
  h.api.remove('Service', 'default', 'doomed');
  h.api.upsert(plain('newcomer', '10.96.0.31'));
  h.api.upsert(webSlice(['127.0.0.5']));
  h.api.compact();
  await sleep(10_000);
  t.same(store.deletions(), [], 'nothing deleted while the API server was away');
  t.ok(store.services.has('default/doomed') && store.services.has('default/web'), 'last known state kept');
  t.equal(source.state().synced, true);
  t.ok(h.logs.filter((l) => l.includes('restarting in')).length >= 3, 'each restart logged');
  await h.api.start();
  await waitFor(
    'changes made while down',
    () =>
      store.services.has('default/newcomer') &&
      !store.services.has('default/doomed') &&
      store.slices.values().next().value?.endpoints?.[0]?.addresses[0] === '127.0.0.5',
    40_000,
  );
  await waitFor('the error to clear', () => source.state().lastError === null, 40_000);
  t.same(store.deletions(), ['deleteService default/doomed']);
});

t.test('start() waits for an API server that is not up yet, and stop() ends the wait', async (t) => {
  const h = await harness(t);
  seed(h.api);
  await h.api.stop();
  const source = new KubeSource({
    kubeconfig: h.kubeconfig,
    nodeName: 'node-a',
    logger: h.logger,
    restartBackoff: { initialMs: 200, maxMs: 400 },
  });
  const store = new RecordingStore();
  let resolved = false;
  const starting = source.start(store).then(() => {
    resolved = true;
  });
  await sleep(1000);
  t.equal(resolved, false, 'not synced without an API server');
  t.equal(source.state().synced, false);
  t.not(source.state().lastError, null);
  await h.api.start();
  await starting;
  t.ok(store.services.has('default/web'), 'synced once it came up');
  await source.stop();

  const orphan = new KubeSource({ kubeconfig: h.kubeconfig, nodeName: 'node-a', logger: h.logger });
  await h.api.stop();
  const waiting = orphan.start(new RecordingStore());
  await sleep(200);
  await orphan.stop();
  await t.rejects(waiting, { code: 'KUP_NO_SOURCE' }, 'stopping before the first list rejects start()');
});

t.test('a missing node is reported as null', async (t) => {
  const h = await harness(t);
  h.api.upsert(web());
  const { store } = await started(t, h, { nodeName: 'Node-Z' });
  await waitFor('applyNode(null)', () => store.node === null);
  t.ok(
    h.logs.some((l) => l.includes('node node-z not found')),
    'the node name is lowercased and its absence logged',
  );
  h.api.upsert(node({ name: 'node-z', zone: 'zone-z' }));
  await waitFor('the node once it registers', () => store.node?.metadata?.name === 'node-z');
});

t.test('a bad token never syncs and says why', async (t) => {
  const h = await harness(t, { token: 'right' });
  h.api.upsert(web());
  const badConfig = join(h.dir, 'bad-kubeconfig');
  await writeFile(badConfig, (await import('node:fs')).readFileSync(h.kubeconfig, 'utf8').replace('token: right', 'token: wrong'));
  const source = new KubeSource({
    kubeconfig: badConfig,
    nodeName: 'node-a',
    logger: h.logger,
    restartBackoff: { initialMs: 100, maxMs: 200 },
  });
  t.teardown(() => source.stop());
  void source.start(new RecordingStore()).catch(() => {});
  await waitFor('an error', () => source.state().lastError !== null);
  t.match(source.state().lastError, /401/);
  t.equal(source.state().synced, false);
});

t.test('kubeconfig lookup: flag, $KUBECONFIG, ~/.kube/config, in-cluster, none', async (t) => {
  const h = await harness(t);
  h.api.upsert(web());
  const empty = join(h.dir, 'empty-home');
  await mkdir(empty);

  const none = (() => {
    try {
      loadKubeConfig({ env: {}, homeDir: empty, inClusterRoot: empty });
      return null;
    } catch (err) {
      return err;
    }
  })();
  t.ok(isKupError(none), 'a KupError, not a stack trace');
  t.match(none, { code: 'KUP_NO_SOURCE' });
  t.match((none as Error).message, /--kubeconfig/);
  t.match((none as Error).message, /kup demo/);
  t.match((none as Error).message, /--source file:PATH/);
  t.notMatch((none as Error).message, /\n/, 'one line');

  t.throws(() => loadKubeConfig({ kubeconfig: join(h.dir, 'nope') }), { code: 'KUP_BAD_FILE' });
  await writeFile(join(h.dir, 'garbage'), 'clusters: [oops\n');
  t.throws(() => loadKubeConfig({ kubeconfig: join(h.dir, 'garbage') }), { code: 'KUP_BAD_FILE' });

  t.equal(loadKubeConfig({ kubeconfig: h.kubeconfig, env: {} }).server, h.api.url, '--kubeconfig');
  t.equal(
    loadKubeConfig({ env: { KUBECONFIG: `${join(h.dir, 'missing')}:${h.kubeconfig}` }, homeDir: empty }).server,
    h.api.url,
    '$KUBECONFIG, missing entries skipped',
  );
  const home = join(h.dir, 'home');
  await mkdir(join(home, '.kube'), { recursive: true });
  await writeFile(join(home, '.kube', 'config'), (await import('node:fs')).readFileSync(h.kubeconfig));
  t.equal(loadKubeConfig({ env: {}, homeDir: home }).origin, join(home, '.kube', 'config'), '~/.kube/config');

  // In-cluster: the service account files, with the double's CA and token, and the service env.
  const root = join(h.dir, 'pod');
  const sa = join(root, 'var/run/secrets/kubernetes.io/serviceaccount');
  await mkdir(sa, { recursive: true });
  await writeFile(join(sa, 'token'), h.api.token);
  await writeFile(join(sa, 'ca.crt'), h.api.caPem);
  await writeFile(join(sa, 'namespace'), 'kube-system');
  const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
  process.env.KUBERNETES_SERVICE_HOST = '127.0.0.1';
  process.env.KUBERNETES_SERVICE_PORT = new URL(h.api.url).port;
  t.teardown(() => {
    if (saved.host === undefined) delete process.env.KUBERNETES_SERVICE_HOST;
    else process.env.KUBERNETES_SERVICE_HOST = saved.host;
    if (saved.port === undefined) delete process.env.KUBERNETES_SERVICE_PORT;
    else process.env.KUBERNETES_SERVICE_PORT = saved.port;
  });
  const inCluster = loadKubeConfig({ homeDir: empty, inClusterRoot: root, env: { ...process.env, KUBECONFIG: '' } });
  t.equal(inCluster.origin, 'in-cluster service account');
  const source = new KubeSource({ kubeConfig: inCluster.kc, nodeName: 'node-a', logger: h.logger });
  t.teardown(() => source.stop());
  const store = new RecordingStore();
  await source.start(store);
  t.ok(store.services.has('default/web'), 'the in-cluster config talks to the API server');
});
