import dgram from 'node:dgram';
import { readFile, writeFile } from 'node:fs/promises';
import t from 'tap';
import { echoThrough, fixtureYaml, get, LOOPBACK, startCluster } from './support/admin-fixture.js';
import { waitFor } from './support/wait.js';

/** A strict reader of the Prometheus text format (0.0.4): every line must be a comment, blank, or a sample. */
function parseProm(text: string): { samples: Map<string, number>; types: Map<string, string> } {
  const samples = new Map<string, number>();
  const types = new Map<string, string>();
  const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?(?:[0-9.eE+-]+|NaN|\+Inf|-Inf))$/;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('# HELP ')) continue;
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ');
      types.set(name ?? '', type ?? '');
      continue;
    }
    const m = sample.exec(line);
    if (m === null) throw new Error(`not Prometheus text: ${line}`);
    samples.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return { samples, types };
}

const API = 'namespace="shop",service="api",port="http",protocol="TCP"';
const DNS = 'namespace="shop",service="dns",port="53",protocol="UDP"';

t.test('/metrics is Prometheus text whose counters move by exactly the traffic sent', async (t) => {
  const c = await startCluster(t.testdir());
  t.teardown(() => c.close());
  const scrape = async (): Promise<Map<string, number>> => {
    const res = await get(`${c.metricsUrl}/metrics`);
    t.equal(res.status, 200);
    return parseProm(res.text).samples;
  };
  const first = await get(`${c.metricsUrl}/metrics`);
  t.match(first.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  const { samples: before, types } = parseProm(first.text);
  for (const name of [
    'kubeproxy_sync_proxy_rules_duration_seconds',
    'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
    'kubeproxy_network_programming_duration_seconds',
    'kubeproxy_sync_proxy_rules_endpoint_changes_total',
    'kubeproxy_sync_proxy_rules_service_changes_total',
    'kubeproxy_sync_proxy_rules_no_local_endpoints_total',
  ]) {
    t.ok(types.has(name), `${name} is exported`);
  }
  t.equal(types.get('kubeproxy_sync_proxy_rules_duration_seconds'), 'histogram');
  t.ok((before.get('kubeproxy_sync_proxy_rules_duration_seconds_count') ?? 0) >= 1, 'the first sync was measured');
  t.ok(Math.abs((before.get('kubeproxy_sync_proxy_rules_last_timestamp_seconds') ?? 0) - Date.now() / 1000) < 60, 'last sync is now-ish');
  t.equal(
    before.get('kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="external"}'),
    0,
    'lb-draining falls back to its serving terminating local endpoint, as kube-proxy does',
  );
  t.equal(before.get(`kup_connections_accepted_total{${API},listener="internal"}`), 0);

  const port = c.runtime.proxier.get('shop/api:http/TCP' as never)?.internal.port ?? 0;
  const sizes = [1000, 2345, 77];
  for (const n of sizes) {
    const back = await echoThrough(port, Buffer.alloc(n, 7));
    t.equal(back.length, n, `${n} bytes echoed through the proxy`);
  }
  const sent = sizes.reduce((a, b) => a + b, 0);
  let after = await scrape();
  await waitFor(
    'bytes are counted once the connections close',
    async () => {
      after = await scrape();
      return (
        after.get(`kup_bytes_in_total{${API},listener="internal"}`) === sent &&
        after.get(`kup_connections_active{${API},listener="internal"}`) === 0
      );
    },
    5000,
  );
  t.equal(after.get(`kup_connections_accepted_total{${API},listener="internal"}`), 3, 'accepted moved by exactly 3');
  t.equal(after.get(`kup_bytes_in_total{${API},listener="internal"}`), sent, 'bytes in = bytes sent');
  t.equal(after.get(`kup_bytes_out_total{${API},listener="internal"}`), sent, 'bytes out = bytes echoed');
  t.equal(after.get(`kup_dial_failures_total{${API},listener="internal"}`), 0);
  let picks = 0;
  for (const [k, v] of after) if (k.startsWith(`kup_endpoint_picks_total{${API}`)) picks += v;
  t.equal(picks, 3, 'picks per endpoint add up to the connections');
  t.equal(
    after.get(`kup_endpoint_picks_total{${API},endpoint="${LOOPBACK}:${c.ports.dead}"}`),
    undefined,
    'no series for an endpoint not in use',
  );

  // UDP: one session, two datagrams each way.
  const udpPort = c.runtime.proxier.get('shop/dns:53/UDP' as never)?.internal.port ?? 0;
  const sock = dgram.createSocket('udp4');
  t.teardown(() => sock.close());
  let replies = 0;
  sock.on('message', () => replies++);
  await new Promise<void>((r) => sock.bind(0, LOOPBACK, () => r()));
  sock.send('one', udpPort, LOOPBACK);
  await waitFor('first reply', () => replies === 1, 5000);
  sock.send('two', udpPort, LOOPBACK);
  await waitFor('second reply', () => replies === 2, 5000);
  after = await scrape();
  t.equal(after.get(`kup_connections_accepted_total{${DNS},listener="internal"}`), 1, 'one UDP session');
  t.equal(after.get(`kup_connections_active{${DNS},listener="internal"}`), 1, 'still live');
  t.equal(after.get(`kup_udp_datagrams_in_total{${DNS},listener="internal"}`), 2);
  t.equal(after.get(`kup_udp_datagrams_out_total{${DNS},listener="internal"}`), 2);
});

t.test('series of a service go when the service goes', async (t) => {
  const c = await startCluster(t.testdir());
  t.teardown(() => c.close());
  const has = async (): Promise<boolean> => (await get(`${c.metricsUrl}/metrics`)).text.includes('service="dns"');
  t.ok(await has(), 'dns is there');
  const yaml = fixtureYaml(c.ports);
  // Drop the dns Service (its slice stays, as during a real deletion race).
  await writeFile(
    c.file,
    yaml.replace(/ {2}- apiVersion: v1\n {4}kind: Service\n {4}metadata: \{ name: dns[\s\S]*?(?= {2}- apiVersion: discovery)/, ''),
  );
  await waitFor('no dns series any more', async () => !(await has()), 8000);
  const m = parseProm((await get(`${c.metricsUrl}/metrics`)).text).samples;
  t.ok((m.get('kubeproxy_sync_proxy_rules_service_changes_total') ?? 0) >= 5, 'service changes counted');
});

t.test("network programming latency starts at the slice's last-change-trigger-time", async (t) => {
  const c = await startCluster(t.testdir());
  t.teardown(() => c.close());
  const before = parseProm((await get(`${c.metricsUrl}/metrics`)).text).samples;
  t.equal(before.get('kubeproxy_network_programming_duration_seconds_count'), 0, 'no slice carried a trigger time yet');
  // Trigger times from before kup started are ignored (kube-proxy's rule): let the proxy be older than the change.
  await new Promise((r) => setTimeout(r, 2500));
  const trigger = new Date(Date.now() - 2000).toISOString();
  await writeFile(
    c.file,
    fixtureYaml(c.ports).replace(
      'metadata: { name: api-1, namespace: shop, labels: { kubernetes.io/service-name: api } }',
      `metadata: { name: api-1, namespace: shop, labels: { kubernetes.io/service-name: api }, annotations: { endpoints.kubernetes.io/last-change-trigger-time: "${trigger}" } }`,
    ),
  );
  let m = before;
  await waitFor(
    'the change to be measured',
    async () => {
      m = parseProm((await get(`${c.metricsUrl}/metrics`)).text).samples;
      return (m.get('kubeproxy_network_programming_duration_seconds_count') ?? 0) >= 1;
    },
    8000,
  );
  t.equal(m.get('kubeproxy_network_programming_duration_seconds_count'), 1, 'one observation: one slice changed');
  const sum = m.get('kubeproxy_network_programming_duration_seconds_sum') ?? 0;
  t.ok(sum >= 2 && sum < 10, `observed ${sum}s: from the trigger time 2 s ago, not from when kup read the file`);
  t.equal(m.get('kubeproxy_network_programming_duration_seconds_bucket{le="1"}'), 0, 'nothing under a second');
});

t.test("kubernetes_build_info names kup's version", async (t) => {
  const c = await startCluster(t.testdir());
  t.teardown(() => c.close());
  const pkg = JSON.parse(await readFile('package.json', 'utf8')) as { version: string };
  const [major, minor] = pkg.version.split('.');
  const m = parseProm((await get(`${c.metricsUrl}/metrics`)).text).samples;
  const arch = process.arch === 'x64' ? 'amd64' : process.arch;
  t.equal(
    m.get(
      `kubernetes_build_info{major="${major}",minor="${minor}",git_version="v${pkg.version}",git_commit="",git_tree_state="",build_date="",go_version="",compiler="",platform="${process.platform}/${arch}"}`,
    ),
    1,
  );
});

t.test('no_local_endpoints counts service ports, and only those with endpoints elsewhere', async (t) => {
  const c = await startCluster(t.testdir());
  t.teardown(() => c.close());
  const scrape = async (): Promise<Map<string, number>> => parseProm((await get(`${c.metricsUrl}/metrics`)).text).samples;
  const gauge = (m: Map<string, number>, policy: string): number | undefined =>
    m.get(`kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy="${policy}"}`);
  const first = await scrape();
  t.equal(gauge(first, 'internal'), 0);
  t.equal(gauge(first, 'external'), 0);
  // remote: three ports, Local both ways, its one endpoint on node-b. none: Local, no endpoints anywhere.
  const extra = `  - apiVersion: v1
    kind: Service
    metadata: { name: remote, namespace: shop }
    spec:
      type: NodePort
      clusterIP: 10.96.0.30
      internalTrafficPolicy: Local
      externalTrafficPolicy: Local
      ports:
        - { name: a, protocol: TCP, port: 81, targetPort: 8080, nodePort: 30091 }
        - { name: b, protocol: TCP, port: 82, targetPort: 8080, nodePort: 30092 }
        - { name: c, protocol: TCP, port: 83, targetPort: 8080, nodePort: 30093 }
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: { name: remote-1, namespace: shop, labels: { kubernetes.io/service-name: remote } }
    addressType: IPv4
    ports: [{ name: a, protocol: TCP, port: ${c.ports.echoB} }, { name: b, protocol: TCP, port: ${c.ports.echoB} }, { name: c, protocol: TCP, port: ${c.ports.echoB} }]
    endpoints:
      - { addresses: [127.0.0.1], conditions: { ready: true }, nodeName: node-b }
  - apiVersion: v1
    kind: Service
    metadata: { name: none, namespace: shop }
    spec:
      type: NodePort
      clusterIP: 10.96.0.31
      internalTrafficPolicy: Local
      externalTrafficPolicy: Local
      ports: [{ name: a, protocol: TCP, port: 84, targetPort: 8080, nodePort: 30094 }]
`;
  await writeFile(c.file, fixtureYaml(c.ports) + extra);
  let m = first;
  await waitFor(
    'the services to be in',
    async () =>
      (m = await scrape()).has(
        `kup_connections_accepted_total{namespace="shop",service="remote",port="c",protocol="TCP",listener="internal"}`,
      ),
    8000,
  );
  t.equal(gauge(m, 'internal'), 3, 'three ports of remote; none has no endpoints at all, so it is not counted');
  t.equal(gauge(m, 'external'), 3, 'the same for the NodePorts');
});

t.test('/proxyMode and the metrics server /healthz', async (t) => {
  const c = await startCluster(t.testdir());
  t.teardown(() => c.close());
  const mode = await get(`${c.metricsUrl}/proxyMode`);
  t.equal(mode.status, 200);
  t.equal(mode.text, 'userspace');
  const ping = await get(`${c.metricsUrl}/healthz`);
  t.equal(ping.status, 200);
  t.equal(ping.text, 'ok');
});
