import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { servicePortKey } from '../lib/core/types.js';
import { createLogger } from '../lib/log.js';
import { startProxy, type ProxyRuntime } from '../lib/runtime/proxy-runtime.js';
import { freePort, get, LOOPBACK } from './support/admin-fixture.js';
import { waitFor } from './support/wait.js';
import { ApiServerDouble } from './support/apiserver-double.js';
import { endpointSlice, node, service } from './support/objects.js';
import { testRunConfig } from './support/run-config.js';

/**
 * kube-proxy's health semantics with the live source: the real client-node
 * against the API server double, the health server and healthCheckNodePorts
 * read over HTTP as a load balancer would.
 */

interface Healthz {
  status: number;
  nodeEligible: boolean;
  lastUpdated: string;
  currentTime: string;
}

async function healthz(port: number): Promise<Healthz> {
  const r = await get(`http://${LOOPBACK}:${port}/healthz`);
  const b = JSON.parse(r.text) as Omit<Healthz, 'status'>;
  return { status: r.status, nodeEligible: b.nodeEligible, lastUpdated: b.lastUpdated, currentTime: b.currentTime };
}

async function echoBackend(): Promise<{ port: number; server: Server }> {
  const server = createServer((s) => s.end('pong\n'));
  await new Promise<void>((r) => server.listen(0, LOOPBACK, r));
  return { port: (server.address() as AddressInfo).port, server };
}

function ask(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, LOOPBACK);
    let d = '';
    const timer = setTimeout(() => (s.destroy(), resolve('timeout')), 3000);
    s.on('data', (x: Buffer) => (d += x.toString()));
    s.on('end', () => (clearTimeout(timer), resolve(d.trim())));
    s.on('error', (err: NodeJS.ErrnoException) => (clearTimeout(timer), resolve(err.code ?? 'error')));
  });
}

interface Setup {
  api: ApiServerDouble;
  kubeconfig: string;
  healthzPort: number;
  hcPort: number;
  backend: { port: number; server: Server };
}

/** The double with this node, and a LoadBalancer Service (externalTrafficPolicy Local) with one local pod. */
async function setup(t: Test): Promise<Setup> {
  const api = new ApiServerDouble();
  await api.start();
  t.teardown(() => api.stop());
  const dir = await mkdtemp(join(tmpdir(), 'kup-health-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const kubeconfig = join(dir, 'kubeconfig');
  await api.writeKubeconfig(kubeconfig);
  const backend = await echoBackend();
  t.teardown(() => new Promise<void>((r) => backend.server.close(() => r())));
  const hcPort = await freePort();
  api.upsert(node({ name: 'node-a' }));
  api.upsert(
    service({
      name: 'lb',
      type: 'LoadBalancer',
      clusterIP: '10.96.0.20',
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: hcPort,
      ports: [{ name: 'tcp', port: 80, nodePort: await freePort() }],
    }),
  );
  api.upsert(
    endpointSlice({ service: 'lb', endpoints: [{ ip: LOOPBACK, nodeName: 'node-a' }], ports: [{ name: 'tcp', port: backend.port }] }),
  );
  return { api, kubeconfig, healthzPort: await freePort(), hcPort, backend };
}

function start(s: Setup, syncPeriodMs: number): Promise<ProxyRuntime> {
  return startProxy(
    testRunConfig('', {
      source: { kind: 'kubernetes' },
      kubeconfig: s.kubeconfig,
      nodeName: 'node-a',
      syncPeriodMs,
      healthzBindAddress: { host: LOOPBACK, port: s.healthzPort },
      metricsBindAddress: { host: LOOPBACK, port: 0 },
    }),
    createLogger('silent'),
  );
}

t.test(
  'health answers from start-up; an API outage longer than 2 x syncPeriod (6 s at --sync-period 2s, as 90 s at 30s) keeps /healthz and the healthCheckNodePort at 200 while the data plane serves',
  async (t) => {
    const s = await setup(t);
    // The API server is away when kup starts: no initial list, no first sync.
    await s.api.stop();
    const starting = start(s, 2000);
    let runtime: ProxyRuntime | null = null;
    t.teardown(async () => {
      // A start-up still waiting for the initial list ends once the API server answers.
      if (!s.api.running) await s.api.start();
      await (runtime ?? (await starting.catch(() => null)))?.stop();
    });
    await waitFor(
      '/healthz answers 200 before the first sync',
      async () => (await healthz(s.healthzPort).catch(() => null))?.status === 200,
      5000,
    );
    const early = await healthz(s.healthzPort);
    t.equal(early.nodeEligible, true, 'eligible while starting up');
    t.equal(early.lastUpdated, early.currentTime);
    await s.api.start();
    runtime = await starting;
    const proxyPort = runtime.proxier.get(servicePortKey('default', 'lb', 'tcp', 'TCP'))?.internal.port;
    t.ok(proxyPort, 'the service has a listener');
    t.equal(await ask(proxyPort!), 'pong');
    t.equal((await get(`http://${LOOPBACK}:${s.hcPort}/`)).status, 200);

    await s.api.stop();
    const seen = { healthz: new Set<number>(), hc: new Set<number>(), data: new Set<string>(), livez: new Set<number>() };
    const until = Date.now() + 7000;
    while (Date.now() < until) {
      seen.healthz.add((await healthz(s.healthzPort)).status);
      seen.livez.add((await get(`http://${LOOPBACK}:${s.healthzPort}/livez`)).status);
      seen.hc.add((await get(`http://${LOOPBACK}:${s.hcPort}/`)).status);
      seen.data.add(await ask(proxyPort!));
      await new Promise((r) => setTimeout(r, 250));
    }
    t.same([...seen.healthz], [200], '/healthz stayed 200 through the outage');
    t.same([...seen.livez], [200], '/livez stayed 200');
    t.same([...seen.hc], [200], 'the healthCheckNodePort stayed 200');
    t.same([...seen.data], ['pong'], 'the data plane served every connection');
    const metricsUrl = `http://${LOOPBACK}:${runtime.admin.metricsAddress!.port}`;
    const status = JSON.parse((await get(`${metricsUrl}/status`)).text) as {
      source: { lastError: string | null };
      health: { healthy: boolean };
    };
    t.not(status.source.lastError, null, 'the outage shows on /status');
    t.equal(status.health.healthy, true);
    t.match((await get(`${metricsUrl}/metrics`)).text, /kup_source_healthy\{source="kubernetes"\} 0/, 'and in metrics');
    await s.api.start();
    await waitFor(
      'the source is healthy again once the API server is back',
      async () => /kup_source_healthy\{source="kubernetes"\} 1/.test((await get(`${metricsUrl}/metrics`)).text),
      20_000,
    );
  },
);

t.test(
  'node eligibility: Node deleted, deletionTimestamp set, autoscaler taint -> 503 with nodeEligible false; back to 200 when restored',
  async (t) => {
    const s = await setup(t);
    const runtime = await start(s, 1000);
    t.teardown(() => runtime.stop());
    const h = (): Promise<Healthz> => healthz(s.healthzPort);
    t.same([(await h()).status, (await h()).nodeEligible], [200, true]);
    // Within one sync period (1 s) of the change reaching the API server.
    const becomes = async (status: number, eligible: boolean): Promise<boolean> =>
      waitFor(
        `status ${status}, nodeEligible ${eligible}`,
        async () => {
          const r = await h();
          return r.status === status && r.nodeEligible === eligible;
        },
        1000,
      ).then(
        () => true,
        () => false,
      );
    const base = node({ name: 'node-a' });

    const cases: [string, () => void][] = [
      [
        'tainted ToBeDeletedByClusterAutoscaler',
        () =>
          s.api.upsert({
            ...base,
            spec: { taints: [{ key: 'ToBeDeletedByClusterAutoscaler', value: '1700000000', effect: 'NoSchedule' }] },
          }),
      ],
      [
        'deletionTimestamp set',
        () =>
          s.api.upsert({
            ...base,
            metadata: {
              ...base.metadata,
              deletionTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
              finalizers: ['example.com/hold'],
            },
          }),
      ],
      ['Node deleted', () => s.api.remove('Node', undefined, 'node-a')],
    ];
    for (const [what, change] of cases) {
      change();
      t.ok(await becomes(503, false), `${what}: 503, nodeEligible false`);
      const r = await h();
      t.not(r.lastUpdated, r.currentTime, `${what}: lastUpdated is the last sync, not now`);
      t.equal((await get(`http://${LOOPBACK}:${s.healthzPort}/livez`)).status, 200, `${what}: /livez is proxy health only`);
      t.equal(
        (await get(`http://${LOOPBACK}:${s.hcPort}/`)).status,
        200,
        `${what}: the healthCheckNodePort follows endpoints, as kube-proxy's`,
      );
      s.api.upsert(base);
      t.ok(await becomes(200, true), `${what} undone: 200, nodeEligible true`);
    }
    const metrics = (await get(`http://${LOOPBACK}:${runtime.admin.metricsAddress!.port}/metrics`)).text;
    t.match(metrics, /kubeproxy_proxy_healthz_total\{code="503"\} [1-9]/);
    t.match(metrics, /kup_node_eligible 1/);
  },
);

t.test('healthCheckNodePort counts distinct local ready endpoint IPs per Service: 2 ports, dual-stack pods weigh 1 each', async (t) => {
  const s = await setup(t);
  const hcPort = await freePort();
  const ports = [
    { name: 'http', port: 80, nodePort: await freePort() },
    { name: 'admin', port: 81, nodePort: await freePort() },
  ];
  s.api.upsert(
    service({
      name: 'dual',
      type: 'LoadBalancer',
      clusterIPs: ['10.96.0.30', 'fd00:96::30'],
      externalTrafficPolicy: 'Local',
      healthCheckNodePort: hcPort,
      ports,
    }),
  );
  const slicePorts = [
    { name: 'http', port: 8080 },
    { name: 'admin', port: 8081 },
  ];
  // Two local pods with an IPv4 and an IPv6 address each, one pod on another node.
  s.api.upsert(
    endpointSlice({
      service: 'dual',
      addressType: 'IPv4',
      ports: slicePorts,
      endpoints: [
        { ip: '10.244.0.5', nodeName: 'node-a' },
        { ip: '10.244.0.6', nodeName: 'node-a' },
        { ip: '10.244.1.7', nodeName: 'node-b' },
      ],
    }),
  );
  s.api.upsert(
    endpointSlice({
      service: 'dual',
      addressType: 'IPv6',
      ports: slicePorts,
      endpoints: [
        { ip: 'fd00:244::5', nodeName: 'node-a' },
        { ip: 'fd00:244::6', nodeName: 'node-a' },
        { ip: 'fd00:244:1::7', nodeName: 'node-b' },
      ],
    }),
  );
  const runtime = await start(s, 30_000);
  t.teardown(() => runtime.stop());
  const r = await get(`http://${LOOPBACK}:${hcPort}/`);
  t.equal(r.status, 200);
  t.equal((JSON.parse(r.text) as { localEndpoints: number }).localEndpoints, 2, 'two local pods');
  t.equal(r.headers['x-load-balancing-endpoint-weight'], '2');
});

t.test(
  'a healthCheckNodePort already in use: one FailedToStartServiceHealthcheck event on the Service, as kube-proxy words it',
  async (t) => {
    const s = await setup(t);
    const squatter = createServer();
    await new Promise<void>((r) => squatter.listen(s.hcPort, LOOPBACK, r));
    t.teardown(() => new Promise<void>((r) => squatter.close(() => r())));
    // A short sync period: the port is retried every sync, the event is not repeated.
    const runtime = await start(s, 300);
    t.teardown(() => runtime.stop());
    await waitFor(
      'the event reached the API server',
      () => s.api.events.some((e) => e.body.reason === 'FailedToStartServiceHealthcheck'),
      5000,
    );
    await new Promise((r) => setTimeout(r, 1500));
    const failed = s.api.events.filter((e) => e.body.reason === 'FailedToStartServiceHealthcheck');
    t.equal(failed.length, 1, 'once, though retried at every sync');
    const e = failed[0]!;
    t.equal(e.api, 'events.k8s.io/v1');
    t.equal(e.namespace, 'default');
    t.equal(e.body.type, 'Warning');
    t.equal(e.body.action, 'Listen');
    t.same(e.body.regarding, { kind: 'Service', namespace: 'default', name: 'lb', uid: 'default/lb' });
    t.equal(
      e.body.note,
      `node node-a failed to start healthcheck "default/lb" on port ${s.hcPort}: listen tcp ${LOOPBACK}:${s.hcPort}: bind: address already in use`,
    );
    t.equal(e.body.reportingController, 'kup');
    t.equal(e.body.reportingInstance, 'kup-node-a');
    const started = s.api.events.filter((x) => x.body.reason === 'Starting');
    t.equal(started.length, 1, "kube-proxy's Starting event on the Node");
    t.same(started[0]?.body.regarding, { kind: 'Node', name: 'node-a', uid: 'node-a' });
    t.equal(started[0]?.namespace, 'default');

    // The data plane is not held up by any of it.
    const proxyPort = runtime.proxier.get(servicePortKey('default', 'lb', 'tcp', 'TCP'))?.internal.port;
    t.equal(await ask(proxyPort!), 'pong');
  },
);
