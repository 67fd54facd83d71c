import { readFile, writeFile } from 'node:fs/promises';
import t from 'tap';
import { HealthMonitor } from '../lib/admin/health.js';
import type { SyncState } from '../lib/sync/syncer.js';
import { get, LOOPBACK, startCluster } from './support/admin-fixture.js';
import { waitFor } from './support/wait.js';

t.test(
  '/healthz and /livez answer in kube-proxy shape; a failing source leaves them at 200 and shows on /status and in metrics',
  async (t) => {
    // A tiny sync period: the health limit (2 x sync period) is 600ms.
    const c = await startCluster(t.testdir(), { syncPeriodMs: 300 });
    t.teardown(() => c.close());
    const ok = await get(`${c.healthzUrl}/healthz`);
    t.equal(ok.status, 200);
    t.equal(ok.headers['content-type'], 'application/json');
    t.equal(ok.headers['x-content-type-options'], 'nosniff');
    const body = JSON.parse(ok.text) as Record<string, unknown>;
    t.same(Object.keys(body).sort(), ['currentTime', 'healthy', 'lastUpdated', 'nodeEligible']);
    t.equal(body.healthy, true);
    t.equal(body.nodeEligible, true);
    t.equal(body.lastUpdated, body.currentTime, 'lastUpdated is now while healthy (kube-proxy)');
    const live = await get(`${c.healthzUrl}/livez`);
    t.equal(live.status, 200);
    t.same(Object.keys(JSON.parse(live.text) as object).sort(), ['currentTime', 'lastUpdated'], "kube-proxy's /livez body");
    t.equal((await get(`${c.healthzUrl}/other`)).status, 404);

    const good = await readFile(c.file, 'utf8');
    await writeFile(c.file, 'items: [ this is : not yaml');
    const failing = async (): Promise<boolean> =>
      (JSON.parse((await get(`${c.metricsUrl}/status`)).text) as { source: { lastError: string | null } }).source.lastError !== null;
    await waitFor('the source error shows on /status', failing, 8000);
    // Three health limits (6 x sync period) with the source failing: the data plane still serves the last good table.
    await new Promise((r) => setTimeout(r, 1800));
    t.equal((await get(`${c.healthzUrl}/healthz`)).status, 200, 'still healthy: the source is not the proxy');
    t.equal((await get(`${c.healthzUrl}/livez`)).status, 200);
    const hc = await get(`http://${LOOPBACK}:${c.ports.hcLocal}/`);
    t.equal(hc.status, 200, 'service health checks stay up too');
    t.equal((JSON.parse(hc.text) as { serviceProxyHealthy: boolean }).serviceProxyHealthy, true);
    t.match((await get(`${c.metricsUrl}/metrics`)).text, /kup_source_healthy\{source="file"\} 0/);

    await writeFile(c.file, good);
    await waitFor('the error clears once the file is good', async () => !(await failing()), 8000);
    const metrics = (await get(`${c.metricsUrl}/metrics`)).text;
    t.match(metrics, /kup_source_healthy\{source="file"\} 1/);
    t.match(metrics, /kup_node_eligible 1/);
    t.match(metrics, /kubeproxy_proxy_healthz_total\{code="200"\} [1-9]/);
    t.notMatch(metrics, /kubeproxy_proxy_healthz_total\{code="503"\} [1-9]/);
  },
);

t.test('/healthz is 503 when a queued change is not applied within 2 x sync period', async (t) => {
  const c = await startCluster(t.testdir(), { syncPeriodMs: 200 });
  t.teardown(() => c.close());
  t.equal((await get(`${c.healthzUrl}/healthz`)).status, 200);
  await c.runtime.syncer.stop();
  const yaml = await readFile(c.file, 'utf8');
  await writeFile(c.file, yaml.replace('clusterIP: 10.96.0.10', 'clusterIP: 10.96.0.11'));
  await waitFor('unhealthy: the change waits and no sync runs', async () => (await get(`${c.healthzUrl}/healthz`)).status === 503, 8000);
  t.equal((await get(`${c.healthzUrl}/livez`)).status, 503, '/livez too: a stuck sync loop is what a liveness probe is for (kube-proxy)');
  const status = JSON.parse((await get(`${c.metricsUrl}/status`)).text) as { health: { healthy: boolean; reason: string } };
  t.equal(status.health.healthy, false);
  t.match(status.health.reason, /waited/);
});

t.test('health rules (pure)', async (t) => {
  const sync = (s: Partial<SyncState>): SyncState => ({
    lastSyncTime: 0,
    lastQueuedTime: 0,
    lastSyncDurationMs: 0,
    syncs: 0,
    failures: 0,
    consecutiveFailures: 0,
    lastError: null,
    ...s,
  });
  const m = new HealthMonitor({ syncPeriodMs: 1000, nodeName: 'node-a', sourceKind: 'kubernetes' });
  t.equal(m.report(sync({}), 100_000).healthy, true, 'healthy while starting up: nothing is queued before the first sync');
  t.equal(
    m.report(sync({ lastQueuedTime: 1000, consecutiveFailures: 3, lastError: 'x' }), 3000).healthy,
    false,
    'a first sync that keeps failing counts',
  );
  t.equal(
    m.report(sync({ lastSyncTime: 5000, lastQueuedTime: 6000 }), 7999).healthy,
    true,
    'a change queued just under 2s ago is within limits',
  );
  const late = m.report(sync({ lastSyncTime: 5000, lastQueuedTime: 6000 }), 8000);
  t.equal(late.healthy, false, '... not at 2 x syncPeriod');
  t.equal(late.proxyHealthy, false);
  t.equal(late.lastUpdated, new Date(5000).toISOString(), 'lastUpdated is the last sync when unhealthy');
  const fine = m.report(sync({ lastSyncTime: 5000 }), 9000);
  t.equal(fine.lastUpdated, fine.currentTime, 'lastUpdated is now when healthy');
  t.match(
    m.report(sync({ lastSyncTime: 5000, lastQueuedTime: 5500, consecutiveFailures: 3, lastError: 'x' }), 7600).reason,
    /failing \(3 in a row\): x/,
  );

  t.equal(m.syncNode({ metadata: { name: 'node-a' } }), false, 'eligible at start, and still');
  t.equal(
    m.syncNode({
      metadata: { name: 'node-a' },
      spec: { taints: [{ key: 'ToBeDeletedByClusterAutoscaler', value: '1', effect: 'NoSchedule' }] },
    }),
    true,
  );
  const tainted = m.report(sync({ lastSyncTime: 5000 }), 9000);
  t.same([tainted.healthy, tainted.proxyHealthy, tainted.nodeEligible], [false, true, false]);
  t.equal(tainted.lastUpdated, new Date(5000).toISOString());
  t.match(tainted.reason, /tainted ToBeDeletedByClusterAutoscaler/);
  m.syncNode({ metadata: { name: 'node-a', deletionTimestamp: new Date('2025-01-01T00:00:00Z') } });
  t.match(m.report(sync({}), 1).reason, /being deleted/);
  m.syncNode(null);
  t.match(m.report(sync({}), 1).reason, /does not exist/);
  m.syncNode({ metadata: { name: 'node-a' }, spec: { taints: [{ key: 'node.kubernetes.io/unschedulable', effect: 'NoSchedule' }] } });
  t.equal(m.report(sync({}), 1).healthy, true, 'other taints (a cordon) do not matter');

  const f = new HealthMonitor({ syncPeriodMs: 1000, nodeName: 'node-a', sourceKind: 'file' });
  f.syncNode(null);
  t.equal(f.report(sync({}), 1).nodeEligible, true, 'a file without this Node says nothing about it');
});
