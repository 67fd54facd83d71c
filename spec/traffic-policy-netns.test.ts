/**
 * Issue 13 items 1-3 with real packets through `kup run` and its iptables
 * rules, in namespaces this test builds: a node (kup), a pods namespace (one
 * endpoint, on another node as far as kup knows, and a pod client inside
 * --cluster-cidr), and an outside client. Checks what each source sees:
 *   1. the node's own connections to a NodePort / LB IP of a Service whose
 *      policies are both Local reach the remote endpoint (all cluster
 *      endpoints, as upstream), while its ClusterIP traffic keeps iTP;
 *   2. a pod's connection to an eTP-Local LB IP / NodePort is short-circuited
 *      to all endpoints (--detect-local-mode ClusterCIDR);
 *   3. the outside client gets nothing (DROP: a timeout, not a reset) from a
 *      Local policy without a local endpoint, and from a loadBalancerSourceRanges
 *      block; a service without any endpoint is still refused at once.
 */
import t, { type Test } from 'tap';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { KUP } from './support/cli.js';
import { createNetns, link, requireNetns, sweepLeftovers, type Netns } from './support/netns.js';

const SUPPORT = 'dist/spec/support';
/** Long enough for a local answer or reset (milliseconds), short enough that a DROP costs little. */
const DROP_WAIT_MS = 1500;

const slice = (service: string): string => `  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata:
      name: ${service}-1
      namespace: default
      labels: { kubernetes.io/service-name: ${service} }
    addressType: IPv4
    ports:
      - { name: http, protocol: TCP, port: 8080 }
    endpoints:
      - addresses: [10.201.0.2]
        conditions: { ready: true }
        nodeName: node-b
`;

const CLUSTER = `apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: { name: local, namespace: default }
    spec:
      type: LoadBalancer
      clusterIP: 10.96.0.81
      clusterIPs: [10.96.0.81]
      ipFamilies: [IPv4]
      internalTrafficPolicy: Local
      externalTrafficPolicy: Local
      ports:
        - { name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30081 }
    status:
      loadBalancer:
        ingress: [{ ip: 10.202.0.10 }]
${slice('local')}  - apiVersion: v1
    kind: Service
    metadata: { name: ranged, namespace: default }
    spec:
      type: LoadBalancer
      clusterIP: 10.96.0.82
      clusterIPs: [10.96.0.82]
      ipFamilies: [IPv4]
      loadBalancerSourceRanges: [10.201.0.0/24]
      ports:
        - { name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30082 }
    status:
      loadBalancer:
        ingress: [{ ip: 10.202.0.20 }]
${slice('ranged')}  - apiVersion: v1
    kind: Node
    metadata: { name: node-a }
    spec: { podCIDR: 10.201.0.0/24, podCIDRs: [10.201.0.0/24] }
  - apiVersion: v1
    kind: Service
    metadata: { name: empty, namespace: default }
    spec:
      type: ClusterIP
      clusterIP: 10.96.0.83
      clusterIPs: [10.96.0.83]
      ipFamilies: [IPv4]
      ports:
        - { name: http, protocol: TCP, port: 80, targetPort: 8080 }
`;

interface ProbeResult {
  ok: boolean;
  reply?: string;
  error?: string;
  ms: number;
}

async function tcp(ns: Netns, host: string, port: number, timeoutMs = 3000): Promise<ProbeResult> {
  const r = await ns.node(`${SUPPORT}/probe.js`, ['tcp', host, String(port), String(timeoutMs)]);
  return JSON.parse(r.stdout.trim()) as ProbeResult;
}

function firstLine(child: ChildProcess, timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no output')), timeoutMs);
    child.once('exit', (code) => (clearTimeout(timer), reject(new Error(`exited ${code}`))));
    createInterface({ input: child.stdout! }).once('line', (l) => (clearTimeout(timer), resolve(l)));
  });
}

function waitForLog(child: ChildProcess, re: RegExp, timeoutMs = 20_000): Promise<{ line: string; text: () => string }> {
  let text = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no log line ${re}; stderr: ${text.slice(-2000)}`)), timeoutMs);
    child.once('exit', (code) => reject(new Error(`exited ${code}; stderr: ${text.slice(-2000)}`)));
    child.stderr!.on('data', (d: Buffer) => {
      text += d.toString();
      const line = text.split('\n').find((l) => re.test(l));
      if (line !== undefined) {
        clearTimeout(timer);
        resolve({ line, text: () => text });
      }
    });
  });
}

/** Nothing comes back: no answer, no reset, no ICMP error, for the whole wait. */
function assertDropped(t: Test, r: ProbeResult, what: string): void {
  t.match(r, { ok: false, error: 'TIMEOUT' }, `${what}: no answer and no reset (dropped)`);
  t.ok(r.ms >= DROP_WAIT_MS - 50, `${what}: waited the whole ${DROP_WAIT_MS}ms (${r.ms}ms)`);
}

async function suite(t: Test): Promise<void> {
  const client = await createNetns(t, 'drop13-client');
  const node = await createNetns(t, 'drop13-node');
  const pods = await createNetns(t, 'drop13-pods');
  await link(client, ['10.200.0.2/24'], node, ['10.200.0.1/24']);
  const podLink = await link(pods, ['10.201.0.2/24', '10.201.0.3/24'], node, ['10.201.0.1/24']);
  await client.run('ip', ['route', 'add', 'default', 'via', '10.200.0.1']);
  // The pod client speaks from 10.201.0.3 (inside --cluster-cidr); the endpoint listens on 10.201.0.2.
  await pods.run('ip', ['route', 'add', 'default', 'via', '10.201.0.1', 'src', '10.201.0.3']);
  // The load balancers' addresses are out there (beyond the client link), as in a cloud; the node
  // forwards, so a packet to them that no rule catches would be forwarded, not silently lost.
  await node.run('ip', ['route', 'add', '10.202.0.0/24', 'via', '10.200.0.2']);
  // A real node has a default route that ClusterIPs follow until OUTPUT's DNAT; this one needs one for them.
  await node.run('ip', ['route', 'add', '10.96.0.0/16', 'via', '10.200.0.2']);
  await node.run('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);

  t.equal(
    await firstLine(pods.spawnNode(`${SUPPORT}/echo-server.js`, ['10.201.0.2', 'tcp:8080:pod-b'])),
    'ready',
    'the remote endpoint is up',
  );
  const dir = mkdtempSync(join(tmpdir(), 'kup-drop13-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'cluster.yaml');
  writeFileSync(file, CLUSTER);
  const run = (detect: readonly string[]): ChildProcess =>
    node.spawnNode(KUP, [
      'run',
      '--source',
      `file:${file}`,
      '--hostname-override',
      'node-a',
      '--min-sync-period',
      '0',
      '--state-dir',
      join(dir, 'state'),
      ...detect,
    ]);
  const proxy = run(['--detect-local-mode', 'ClusterCIDR', '--cluster-cidr', '10.201.0.0/24']);
  const log = await waitForLog(proxy, /"msg":"synced \d+ service ports/);
  t.match(log.line, /servicePorts":3/, 'the proxy synced its listeners and rules');
  t.match(log.text(), /local-traffic detector: sources 10\.201\.0\.0\/24/, 'the detector in force is logged');

  await t.test("item 1: the node's own traffic to a NodePort or LB IP reaches the remote endpoint", async (t) => {
    t.match(await tcp(node, '10.200.0.1', 30081), { ok: true, reply: 'pod-b' }, 'NodePort on the node address');
    t.match(await tcp(node, '10.202.0.10', 80), { ok: true, reply: 'pod-b' }, 'LB IP');
    // Its ClusterIP traffic keeps iTP Local: no endpoint here, dropped as upstream.
    assertDropped(t, await tcp(node, '10.96.0.81', 80, DROP_WAIT_MS), 'ClusterIP from the node (iTP Local)');
  });

  await t.test('item 2: pod traffic to an eTP-Local LB IP or NodePort is short-circuited to all endpoints', async (t) => {
    t.match(await tcp(pods, '10.202.0.10', 80), { ok: true, reply: 'pod-b' }, 'LB IP from the pod CIDR');
    t.match(await tcp(pods, '10.201.0.1', 30081), { ok: true, reply: 'pod-b' }, 'NodePort from the pod CIDR');
  });

  await t.test('item 3: DROP for Local without a local endpoint and for blocked source ranges; REJECT for no endpoint', async (t) => {
    assertDropped(t, await tcp(client, '10.202.0.10', 80, DROP_WAIT_MS), 'LB IP from outside (eTP Local)');
    assertDropped(t, await tcp(client, '10.200.0.1', 30081, DROP_WAIT_MS), 'NodePort from outside (eTP Local)');
    assertDropped(t, await tcp(client, '10.202.0.20', 80, DROP_WAIT_MS), 'LB IP from a source outside loadBalancerSourceRanges');
    t.match(await tcp(pods, '10.202.0.20', 80), { ok: true, reply: 'pod-b' }, 'a source inside the range is served');
    const refused = await tcp(client, '10.96.0.83', 80);
    t.match(refused, { ok: false, error: 'ECONNREFUSED' }, 'no endpoint at all: refused');
    t.ok(refused.ms < 1000, `at once (${refused.ms}ms)`);
  });

  proxy.kill('SIGTERM');
  const [code] = (await once(proxy, 'exit')) as [number | null];
  t.equal(code, 0, 'kup exits 0 on SIGTERM');

  await t.test('item 2 with --detect-local-mode BridgeInterface: pods are told by the interface they arrive on', async (t) => {
    const bridged = run(['--detect-local-mode', 'BridgeInterface', '--pod-bridge-interface', podLink.bIf]);
    const l = await waitForLog(bridged, /"msg":"synced \d+ service ports/);
    t.match(l.text(), new RegExp(`local-traffic detector: input interface ${podLink.bIf}`));
    t.match(await tcp(pods, '10.202.0.10', 80), { ok: true, reply: 'pod-b' }, 'LB IP from the pods interface');
    assertDropped(t, await tcp(client, '10.202.0.10', 80, DROP_WAIT_MS), 'LB IP from the client interface');
    bridged.kill('SIGTERM');
    t.equal(((await once(bridged, 'exit')) as [number | null])[0], 0, 'exits 0');
  });

  await t.test("item 2 with --detect-local-mode NodeCIDR: pods are told by the Node's spec.podCIDRs", async (t) => {
    const byNode = run(['--detect-local-mode', 'NodeCIDR']);
    const l = await waitForLog(byNode, /"msg":"synced \d+ service ports/);
    t.match(l.text(), /local-traffic detector: sources 10\.201\.0\.0\/24/);
    t.match(await tcp(pods, '10.202.0.10', 80), { ok: true, reply: 'pod-b' }, 'LB IP from the node pod CIDR');
    assertDropped(t, await tcp(client, '10.202.0.10', 80, DROP_WAIT_MS), 'LB IP from outside');
    byNode.kill('SIGTERM');
    t.equal(((await once(byNode, 'exit')) as [number | null])[0], 0, 'exits 0');
  });
}

if (await requireNetns(t)) {
  await sweepLeftovers();
  await t.test('traffic policies with real packets (issue 13 items 1-3)', suite);
}
