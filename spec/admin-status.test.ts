import net from 'node:net';
import t from 'tap';
import type { StatusDocument } from '../lib/admin/status.js';
import { get, LOOPBACK, startCluster } from './support/admin-fixture.js';
import { waitFor } from './support/wait.js';

t.test('/status carries the whole table as the file source describes it', async (t) => {
  const c = await startCluster(t.testdir());
  t.teardown(() => c.close());
  const res = await get(`${c.metricsUrl}/status`);
  t.equal(res.status, 200);
  t.match(res.headers['content-type'], /^application\/json/);
  const doc = JSON.parse(res.text) as StatusDocument;
  t.equal(doc.apiVersion, 'kup.status/v1');
  t.equal(doc.node, 'node-a');
  t.equal(doc.proxyMode, 'userspace');
  t.same(
    doc.services.map((s) => s.key),
    ['shop/api:http/TCP', 'shop/dns:53/UDP', 'shop/lb-draining:web/TCP', 'shop/lb:web/TCP'],
  );
  t.equal(doc.source.kind, 'file');
  t.equal(doc.source.synced, true);
  t.equal(doc.source.detail.path, c.file);
  t.ok(doc.sync !== null && doc.sync.syncs >= 1 && doc.sync.lastSyncTime !== null, 'sync state is carried');
  t.equal(doc.health?.healthy, true);

  const api = doc.services.find((s) => s.key === 'shop/api:http/TCP');
  t.ok(api);
  if (api === undefined) return;
  t.equal(api.name, 'shop/api');
  t.equal(api.port, 'http');
  t.equal(api.portNumber, 80);
  t.equal(api.protocol, 'TCP');
  t.equal(api.clusterIP, '10.96.0.10');
  t.equal(api.proxyPort, c.runtime.proxier.get(api.key as never)?.internal.port);
  t.equal(api.strategy, 'round-robin');
  t.same(
    api.endpoints.map((e) => [e.port, e.ready, e.serving, e.terminating, e.nodeName, e.inUse]).sort((x, y) => Number(x[0]) - Number(y[0])),
    [
      [c.ports.echoA, true, true, false, 'node-a', true] as const,
      [c.ports.echoB, true, true, false, 'node-b', true] as const,
      [c.ports.dead, false, true, true, 'node-a', false] as const,
    ].sort((x, y) => x[0] - y[0]),
    'every endpoint of the slices, with conditions; the terminating one is not in use while ready ones exist',
  );
  const first = api.endpoints.find((e) => e.inUse);
  t.equal(api.nextEndpoint, `${LOOPBACK}:${first?.port}`, 'round robin starts at the first endpoint in use');

  const dns = doc.services.find((s) => s.key === 'shop/dns:53/UDP');
  t.equal(dns?.port, '53', 'an unnamed port is shown by its number');
  t.equal(dns?.nodePort, 30053);

  const lb = doc.services.find((s) => s.key === 'shop/lb:web/TCP');
  t.same(lb?.externalIPs, ['192.0.2.10']);
  t.same(lb?.loadBalancerIPs, ['198.51.100.7']);
  t.equal(lb?.healthCheckNodePort, c.ports.hcLocal);
  t.equal(lb?.externalTrafficPolicy, 'Local');
  t.ok(lb?.externalProxyPort !== null && lb?.externalProxyPort !== lb?.proxyPort, 'ETP Local gets its own external listener');
  t.same(
    lb?.endpoints.map((e) => [e.port, e.inUse, e.inUseExternal]).sort((x, y) => Number(x[0]) - Number(y[0])),
    [[c.ports.echoA, true, true] as const, [c.ports.echoB, true, false] as const].sort((x, y) => x[0] - y[0]),
    'external traffic only goes to the local endpoint',
  );

  t.notMatch(res.text, /token|password|BEGIN CERTIFICATE|kubeconfig/i, 'no secrets in /status');
});

t.test('/status counts a live connection against its endpoint and drops it when it closes', async (t) => {
  const c = await startCluster(t.testdir());
  t.teardown(() => c.close());
  const port = c.runtime.proxier.get('shop/api:http/TCP' as never)?.internal.port ?? 0;
  const sock = net.connect(port, LOOPBACK);
  await new Promise<void>((r) => sock.once('connect', () => r()));
  const status = async (): Promise<StatusDocument> => JSON.parse((await get(`${c.metricsUrl}/status`)).text) as StatusDocument;
  let doc = await status();
  await waitFor(
    'one active connection',
    async () => {
      doc = await status();
      return doc.totals.activeConnections === 1;
    },
    5000,
  );
  const api = doc.services.find((s) => s.key === 'shop/api:http/TCP');
  const busy = api?.endpoints.filter((e) => e.activeConnections === 1) ?? [];
  t.equal(busy.length, 1, 'on one endpoint');
  t.equal(busy[0]?.picks, 1, 'picked once');
  const other = api?.endpoints.find((e) => e.inUse && e !== busy[0]);
  t.equal(api?.nextEndpoint, `${LOOPBACK}:${other?.port}`, 'the next connection goes to the other ready endpoint');
  sock.destroy();
  await waitFor('back to none once closed', async () => (await status()).totals.activeConnections === 0, 5000);
});

t.test('/status?client= follows session affinity; a bad client is a 400', async (t) => {
  const c = await startCluster(t.testdir());
  t.teardown(() => c.close());
  const bad = await get(`${c.metricsUrl}/status?client=not-an-ip`);
  t.equal(bad.status, 400);
  t.match(bad.text, /not an IP address/);
  const other = await get(`${c.metricsUrl}/nope`);
  t.equal(other.status, 404);
});
