import { readFile, writeFile } from 'node:fs/promises';
import t from 'tap';
import { HealthMonitor } from '../lib/admin/health.js';
import type { SourceState } from '../lib/sources/source.js';
import type { SyncState } from '../lib/sync/syncer.js';
import { get, LOOPBACK, startCluster } from './support/admin-fixture.js';
import { waitFor } from './support/wait.js';

t.test('/healthz and /livez answer in kube-proxy shape; 503 while the source fails, 200 once it recovers', async (t) => {
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
  t.ok(Date.parse(String(body.lastUpdated)) <= Date.parse(String(body.currentTime)), 'lastUpdated is a time not after currentTime');
  t.equal((await get(`${c.healthzUrl}/livez`)).status, 200);
  t.equal((await get(`${c.healthzUrl}/other`)).status, 404);

  const good = await readFile(c.file, 'utf8');
  await writeFile(c.file, 'items: [ this is : not yaml');
  await waitFor('unhealthy once the source has failed for 2 x sync period', async () => (await get(`${c.healthzUrl}/healthz`)).status === 503, 8000);
  const bad = await get(`${c.healthzUrl}/healthz`);
  t.equal((JSON.parse(bad.text) as { healthy: boolean }).healthy, false);
  t.equal((await get(`${c.healthzUrl}/livez`)).status, 200, 'still live: it still serves the last good table');
  const hc = await get(`http://${LOOPBACK}:${c.ports.hcLocal}/`);
  t.equal(hc.status, 503, 'service health checks follow proxy health');
  t.equal((JSON.parse(hc.text) as { serviceProxyHealthy: boolean }).serviceProxyHealthy, false);

  await writeFile(c.file, good);
  await waitFor('healthy again once the file is good', async () => (await get(`${c.healthzUrl}/healthz`)).status === 200, 8000);
  const metrics = (await get(`${c.metricsUrl}/metrics`)).text;
  t.match(metrics, /kubeproxy_proxy_healthz_total\{code="503"\} [1-9]/);
  t.match(metrics, /kubeproxy_proxy_healthz_total\{code="200"\} [1-9]/);
});

t.test('/healthz is 503 when a queued change is not applied within 2 x sync period', async (t) => {
  const c = await startCluster(t.testdir(), { syncPeriodMs: 200 });
  t.teardown(() => c.close());
  t.equal((await get(`${c.healthzUrl}/healthz`)).status, 200);
  await c.runtime.syncer.stop();
  const yaml = await readFile(c.file, 'utf8');
  await writeFile(c.file, yaml.replace('clusterIP: 10.96.0.10', 'clusterIP: 10.96.0.11'));
  await waitFor('unhealthy: the change waits and no sync runs', async () => (await get(`${c.healthzUrl}/healthz`)).status === 503, 8000);
  t.equal((await get(`${c.healthzUrl}/livez`)).status, 200);
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
  const src = (lastError: string | null): SourceState => ({ kind: 'file', synced: true, lastEventTime: 0, lastError, detail: {} });
  const m = new HealthMonitor(1000, 0);
  t.equal(m.report(sync({}), src(null), 10).healthy, true, 'healthy while starting up');
  t.equal(m.report(sync({ lastSyncTime: 5000, lastQueuedTime: 6000 }), src(null), 8000).healthy, true, 'a change queued 2s ago is within limits');
  t.equal(m.report(sync({ lastSyncTime: 5000, lastQueuedTime: 6000 }), src(null), 8001).healthy, false, '... not a moment more');
  t.equal(m.report(sync({ lastSyncTime: 5000, consecutiveFailures: 3, lastError: 'x' }), src(null), 6500).healthy, true, 'failing for 1.5s since the last good sync is ok');
  t.equal(m.report(sync({ lastSyncTime: 5000, consecutiveFailures: 3, lastError: 'x' }), src(null), 7001).healthy, false, 'failing syncs with a stale last sync');
  t.equal(m.report(sync({ lastSyncTime: 9000 }), src('broken'), 9000).healthy, true, 'a source error just now');
  t.equal(m.report(sync({ lastSyncTime: 9000 }), src('broken'), 11_001).healthy, false, 'a source error for longer than 2 x sync period');
  t.equal(m.report(sync({ lastSyncTime: 9000 }), src(null), 11_002).healthy, true, 'the source recovered');
});
