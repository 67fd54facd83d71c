import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import {
  ApiException,
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  ListWatch,
  Watch,
  type KubernetesListObject,
  type V1Service,
} from '@kubernetes/client-node';
import { ApiServerDouble } from './support/apiserver-double.js';
import { endpointSlice, HEADLESS_LABEL, node, service } from './support/objects.js';
import { sleep, waitFor } from './support/wait.js';

const PROXY_LABELS = '!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless';
const SERVICE_FIELDS = 'spec.clusterIP!=None';

async function started(
  t: Test,
  options: ConstructorParameters<typeof ApiServerDouble>[0] = {},
): Promise<{ api: ApiServerDouble; kc: KubeConfig }> {
  const api = new ApiServerDouble(options);
  await api.start();
  t.teardown(() => api.stop());
  const dir = await mkdtemp(join(tmpdir(), 'kup-double-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'kubeconfig');
  await api.writeKubeconfig(path);
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  return { api, kc };
}

function names(items: readonly { metadata?: { namespace?: string; name?: string } }[]): string[] {
  return items.map((i) => `${i.metadata?.namespace ?? ''}/${i.metadata?.name ?? ''}`).sort();
}

/** A ListWatch of Services with kube-proxy's selectors, recording what it reports. */
function serviceInformer(kc: KubeConfig) {
  const core = kc.makeApiClient(CoreV1Api);
  const listFn = (): Promise<KubernetesListObject<V1Service>> =>
    core.listServiceForAllNamespaces({ labelSelector: PROXY_LABELS, fieldSelector: SERVICE_FIELDS });
  const informer = new ListWatch<V1Service>('/api/v1/services', new Watch(kc), listFn, false, PROXY_LABELS, SERVICE_FIELDS);
  const seen = new Map<string, V1Service>();
  const log: string[] = [];
  const errors: unknown[] = [];
  const key = (s: V1Service): string => `${s.metadata?.namespace}/${s.metadata?.name}`;
  informer.on('add', (s) => {
    seen.set(key(s), s);
    log.push(`add ${key(s)}`);
  });
  informer.on('update', (s) => {
    seen.set(key(s), s);
    log.push(`update ${key(s)}`);
  });
  informer.on('delete', (s) => {
    seen.delete(key(s));
    log.push(`delete ${key(s)}`);
  });
  informer.on('error', (err) => errors.push(err));
  return { informer, seen, log, errors };
}

const web = (extra: Partial<Parameters<typeof service>[0]> = {}) =>
  service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80, targetPort: 8080 }], ...extra });

t.test('lists honour label and field selectors, namespaces and names', async (t) => {
  const { api, kc } = await started(t);
  api.upsert(web());
  api.upsert(service({ name: 'other-proxy', clusterIP: '10.96.0.11', ports: [{ port: 53, protocol: 'UDP' }], proxyName: 'someone-else' }));
  api.upsert(service({ name: 'headless', clusterIP: 'None', ports: [{ port: 80 }] }));
  api.upsert(service({ name: 'labelled-headless', clusterIP: '10.96.0.12', ports: [{ port: 80 }], labels: { [HEADLESS_LABEL]: '' } }));
  api.upsert(
    service({
      namespace: 'kube-system',
      name: 'dns',
      clusterIP: '10.96.0.53',
      ports: [{ port: 53, protocol: 'UDP' }],
      labels: { tier: 'infra' },
    }),
  );
  api.upsert(endpointSlice({ service: 'web', endpoints: [{ ip: '127.0.0.2' }], ports: [{ name: 'http', port: 8080 }] }));
  api.upsert(
    endpointSlice({
      service: 'other-proxy',
      endpoints: [{ ip: '127.0.0.3' }],
      ports: [{ port: 53, protocol: 'UDP' }],
      labels: { 'service.kubernetes.io/service-proxy-name': 'someone-else' },
    }),
  );
  api.upsert(node({ name: 'node-a', zone: 'zone-a' }));
  api.upsert(node({ name: 'node-b', zone: 'zone-b' }));

  const core = kc.makeApiClient(CoreV1Api);
  const discovery = kc.makeApiClient(DiscoveryV1Api);

  const all = await core.listServiceForAllNamespaces();
  t.same(names(all.items), ['default/headless', 'default/labelled-headless', 'default/other-proxy', 'default/web', 'kube-system/dns']);
  t.equal(all.metadata?.resourceVersion, api.currentResourceVersion, 'list carries the current resourceVersion');

  const proxied = await core.listServiceForAllNamespaces({ labelSelector: PROXY_LABELS, fieldSelector: SERVICE_FIELDS });
  t.same(names(proxied.items), ['default/web', 'kube-system/dns'], 'kube-proxy selectors leave out other proxies and headless services');

  t.same(names((await core.listServiceForAllNamespaces({ labelSelector: 'tier=infra' })).items), ['kube-system/dns']);
  t.same(names((await core.listServiceForAllNamespaces({ labelSelector: 'tier!=infra' })).items).length, 4);
  t.same(names((await core.listServiceForAllNamespaces({ labelSelector: 'tier' })).items), ['kube-system/dns']);
  t.same(names((await core.listServiceForAllNamespaces({ fieldSelector: 'metadata.name=web' })).items), ['default/web']);
  t.same(names((await core.listNamespacedService({ namespace: 'kube-system' })).items), ['kube-system/dns']);

  const one = await core.readNamespacedService({ namespace: 'default', name: 'web' });
  t.equal(one.spec?.clusterIP, '10.96.0.10');
  t.equal(one.metadata?.generation, 1);
  t.ok(one.metadata?.uid, 'the server sets a uid');
  t.ok(one.metadata?.creationTimestamp instanceof Date, 'creationTimestamp is a real timestamp');
  await t.rejects(core.readNamespacedService({ namespace: 'default', name: 'missing' }), { code: 404 });

  const slices = await discovery.listEndpointSliceForAllNamespaces({ labelSelector: PROXY_LABELS });
  t.same(names(slices.items), ['default/' + slices.items.find((s) => s.metadata?.name?.startsWith('web-'))?.metadata?.name]);
  t.equal(slices.items[0]?.endpoints?.[0]?.addresses[0], '127.0.0.2');

  const nodes = await core.listNode({ fieldSelector: 'metadata.name=node-b' });
  t.same(
    nodes.items.map((n) => n.metadata?.labels?.['topology.kubernetes.io/zone']),
    ['zone-b'],
  );

  await t.rejects(
    core.listServiceForAllNamespaces({ fieldSelector: 'spec.bogus=1' }),
    { code: 400 },
    'unsupported field labels are refused',
  );
});

t.test('a wrong bearer token gets 401 Unauthorized', async (t) => {
  const { api, kc } = await started(t);
  kc.loadFromOptions({
    clusters: kc.clusters,
    contexts: kc.contexts,
    currentContext: kc.currentContext,
    users: [{ name: 'kup', token: 'not-the-token' }],
  });
  const core = kc.makeApiClient(CoreV1Api);
  const err = await core.listServiceForAllNamespaces().catch((e: unknown) => e);
  t.ok(err instanceof ApiException, 'the client reports an API error');
  t.equal((err as ApiException<string>).code, 401);
  t.match((err as Error).message, /Unauthorized/);
  t.equal(api.counters.unauthorized, 1);
});

t.test('updates bump resourceVersion, keep uid and bump generation on spec change only', async (t) => {
  const { api } = await started(t);
  const first = api.upsert(web());
  const relabelled = api.upsert(web({ labels: { app: 'web' } }));
  const moved = api.upsert(web({ ports: [{ name: 'http', port: 81 }] }));
  t.equal(relabelled.metadata?.uid, first.metadata?.uid);
  t.equal(relabelled.metadata?.generation, 1, 'a label change leaves generation alone');
  t.equal(moved.metadata?.generation, 2, 'a spec change bumps generation');
  t.ok(Number(moved.metadata?.resourceVersion) > Number(relabelled.metadata?.resourceVersion));
  const allocated = api.upsert(service({ name: 'auto', ports: [{ port: 80 }], type: 'NodePort' }));
  const spec = allocated.spec as { clusterIP?: string; ports: { nodePort?: number }[] };
  t.match(spec.clusterIP, /^10\.96\.\d+\.\d+$/, 'a ClusterIP is allocated when none is given');
  t.ok((spec.ports[0]?.nodePort ?? 0) >= 30000, 'a node port is allocated');
});

t.test('an informer with kube-proxy selectors sees adds, updates, deletes and selector changes', async (t) => {
  const { api, kc } = await started(t);
  api.upsert(web());
  const { informer, seen, log, errors } = serviceInformer(kc);
  await informer.start();
  t.teardown(() => informer.stop());
  t.same([...seen.keys()], ['default/web'], 'initial list');

  api.upsert(service({ name: 'api', clusterIP: '10.96.0.20', ports: [{ port: 443 }] }));
  await waitFor('ADDED api', () => seen.has('default/api'));
  api.upsert(web({ ports: [{ name: 'http', port: 8080 }] }));
  await waitFor('MODIFIED web', () => seen.get('default/web')?.spec?.ports?.[0]?.port === 8080);
  api.upsert(service({ name: 'api', clusterIP: '10.96.0.20', ports: [{ port: 443 }], proxyName: 'other' }));
  await waitFor('api to stop matching', () => !seen.has('default/api'));
  api.upsert(service({ name: 'api', clusterIP: '10.96.0.20', ports: [{ port: 443 }] }));
  await waitFor('api to match again', () => seen.has('default/api'));
  api.remove('Service', 'default', 'web');
  await waitFor('DELETED web', () => !seen.has('default/web'));
  t.same(log, ['add default/web', 'add default/api', 'update default/web', 'delete default/api', 'add default/api', 'delete default/web']);
  t.same(errors, []);
  t.equal(api.counters.lists.Service, 1, 'no relist was needed');
});

t.test('a cleanly closed watch reconnects from its resourceVersion and converges', async (t) => {
  const { api, kc } = await started(t);
  api.upsert(web());
  const { informer, seen, errors } = serviceInformer(kc);
  await informer.start();
  t.teardown(() => informer.stop());
  const watchesBefore = api.counters.watches.Service;
  t.equal(api.dropWatches('end'), 1);
  api.upsert(service({ name: 'late', clusterIP: '10.96.0.30', ports: [{ port: 80 }] }));
  await waitFor('the change made while disconnected', () => seen.has('default/late'));
  t.ok(api.counters.watches.Service > watchesBefore, 'the client opened a new watch');
  t.equal(api.counters.lists.Service, 1, 'resuming from the resourceVersion needs no relist');
  t.same(errors, []);
});

t.test('a watch cut mid-stream is an informer error; restarting resumes from history', async (t) => {
  const { api, kc } = await started(t);
  api.upsert(web());
  const { informer, seen, errors } = serviceInformer(kc);
  await informer.start();
  t.teardown(() => informer.stop());
  api.dropWatches('destroy');
  await waitFor('the informer to report the cut', () => errors.length === 1);
  api.remove('Service', 'default', 'web');
  await informer.start();
  await waitFor('the deletion replayed from history', () => !seen.has('default/web'));
  t.equal(api.counters.lists.Service, 1, 'no relist was needed');
});

for (const goneAs of ['event', 'status'] as const) {
  t.test(`compaction then a dropped watch makes the informer relist (410 as ${goneAs})`, async (t) => {
    const { api, kc } = await started(t, { goneAs });
    api.upsert(web());
    api.upsert(service({ name: 'doomed', clusterIP: '10.96.0.40', ports: [{ port: 80 }] }));
    const { informer, seen, log, errors } = serviceInformer(kc);
    await informer.start();
    t.teardown(() => informer.stop());
    api.dropWatches('destroy');
    await waitFor('the informer to report the cut', () => errors.length === 1);
    api.remove('Service', 'default', 'doomed');
    api.upsert(service({ name: 'newcomer', clusterIP: '10.96.0.41', ports: [{ port: 80 }] }));
    api.compact();
    await informer.start();
    await waitFor('relist to converge', () => seen.has('default/newcomer') && !seen.has('default/doomed'));
    t.equal(api.counters.gone, 1, 'the server answered 410 Gone once');
    t.equal(api.counters.lists.Service, 2, 'the client relisted');
    t.ok(log.includes('delete default/doomed'), 'the relist reports the deletion');
    t.same([...seen.keys()].sort(), ['default/newcomer', 'default/web']);
    t.equal(errors.length, 1, '410 is not an error to the informer');
  });
}

t.test('an API server restart makes the informer emit error; objects survive the restart', async (t) => {
  const { api, kc } = await started(t);
  api.upsert(web());
  const { informer, seen, errors } = serviceInformer(kc);
  await informer.start();
  t.teardown(() => informer.stop());
  const port = new URL(api.url).port;
  await api.stop();
  await waitFor('the informer to report the lost server', () => errors.length >= 1);
  api.upsert(service({ name: 'while-down', clusterIP: '10.96.0.50', ports: [{ port: 80 }] }));
  await api.start();
  t.equal(new URL(api.url).port, port, 'same port after restart');
  await informer.start();
  await waitFor('the change made while down', () => seen.has('default/while-down'));
  t.ok(seen.has('default/web'), 'objects kept across the restart');
});

t.test('watch parameters: bookmarks, timeoutSeconds and namespaced paths', async (t) => {
  const { api, kc } = await started(t, { bookmarkIntervalMs: 100 });
  api.upsert(web());
  api.upsert(service({ namespace: 'other', name: 'x', clusterIP: '10.96.0.60', ports: [{ port: 80 }] }));
  const events: string[] = [];
  let done: unknown = 'not yet';
  const started_ = Date.now();
  await new Watch(kc).watch(
    '/api/v1/namespaces/other/services',
    { allowWatchBookmarks: true, timeoutSeconds: 1 },
    (type, obj: { metadata?: { name?: string } }) => events.push(`${type} ${obj.metadata?.name ?? ''}`),
    (err) => {
      done = err;
    },
  );
  await waitFor('the server to end the watch after timeoutSeconds', () => done !== 'not yet', 5000);
  t.equal(done, null, 'a server-side timeout ends the stream cleanly');
  t.ok(Date.now() - started_ >= 900, 'not before timeoutSeconds');
  t.equal(events[0], 'ADDED x', 'a watch without resourceVersion starts with the current state of its namespace');
  t.notOk(events.includes('ADDED web'), 'other namespaces are not watched');
  t.ok(events.filter((e) => e.startsWith('BOOKMARK')).length >= 3, 'bookmarks arrive');
  await sleep(10);
});
