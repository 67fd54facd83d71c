/**
 * End to end with real parts: the real proxy (file source, tracker, syncer,
 * data plane) and the real iptables applier in a node namespace, real
 * backends in a third namespace, a client in a fourth. Checks what a user
 * sees: a ClusterIP balanced round-robin, a NodePort, an empty service
 * refused, and SIGTERM leaving the node's iptables as it found them.
 */
import t, { type Test } from 'tap';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { createNetns, link, requireNetns, sweepLeftovers, type Netns } from './support/netns.js';

const SUPPORT = 'dist/spec/support';

const CLUSTER = `apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: { name: web, namespace: default }
    spec:
      type: NodePort
      clusterIP: 10.96.0.10
      clusterIPs: [10.96.0.10]
      ipFamilies: [IPv4]
      ports:
        - { name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30080 }
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata:
      name: web-1
      namespace: default
      labels: { kubernetes.io/service-name: web }
    addressType: IPv4
    ports:
      - { name: http, protocol: TCP, port: 8080 }
    endpoints:
      - addresses: [10.201.0.2]
        conditions: { ready: true }
        nodeName: node-a
      - addresses: [10.201.0.3]
        conditions: { ready: true }
        nodeName: node-a
  - apiVersion: v1
    kind: Service
    metadata: { name: empty, namespace: default }
    spec:
      type: ClusterIP
      clusterIP: 10.96.0.20
      clusterIPs: [10.96.0.20]
      ipFamilies: [IPv4]
      ports:
        - { name: http, protocol: TCP, port: 80, targetPort: 8080 }
`;

async function tcp(ns: Netns, host: string, port: number): Promise<{ ok: boolean; reply?: string; error?: string; ms: number }> {
  const r = await ns.node(`${SUPPORT}/probe.js`, ['tcp', host, String(port), '3000']);
  return JSON.parse(r.stdout.trim()) as { ok: boolean; reply?: string; error?: string; ms: number };
}

function firstLine(child: ChildProcess, timeoutMs = 20_000): Promise<string> {
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no output; stderr: ${stderr.slice(-2000)}`)), timeoutMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited ${code}; stderr: ${stderr.slice(-2000)}`));
    });
    createInterface({ input: child.stdout! }).once('line', (l) => {
      clearTimeout(timer);
      resolve(l);
    });
  });
}

async function suite(t: Test): Promise<void> {
  const client = await createNetns(t, 'client');
  const node = await createNetns(t, 'node');
  const backends = await createNetns(t, 'pods');
  await link(client, ['10.200.0.2/24'], node, ['10.200.0.1/24']);
  await link(backends, ['10.201.0.2/24', '10.201.0.3/24'], node, ['10.201.0.1/24']);
  await client.run('ip', ['route', 'add', 'default', 'via', '10.200.0.1']);
  const baseline = await node.iptablesSave('ipv4');

  for (const [ip, label] of [
    ['10.201.0.2', 'pod-1'],
    ['10.201.0.3', 'pod-2'],
  ] as const) {
    t.equal(await firstLine(backends.spawnNode(`${SUPPORT}/echo-server.js`, [ip, `tcp:8080:${label}`])), 'ready', `${label} is up`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'kup-e2e-'));
  const file = join(dir, 'cluster.yaml');
  writeFileSync(file, CLUSTER);
  const proxy = node.spawnNode(`${SUPPORT}/proxy-with-rules.js`, [file]);
  t.match(await firstLine(proxy), /^synced /, 'the proxy synced its rules');

  await t.test('ClusterIP from another namespace, round-robin over both pods', async (t) => {
    const replies: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = await tcp(client, '10.96.0.10', 80);
      t.equal(r.ok, true, `request ${i + 1} answered`);
      replies.push(r.reply ?? '');
    }
    t.same([...replies].sort(), ['pod-1', 'pod-1', 'pod-2', 'pod-2'], 'each pod got two of four');
    t.not(replies[0], replies[1], 'consecutive requests go to different pods');
  });

  await t.test('NodePort on the node address', async (t) => {
    t.match((await tcp(client, '10.200.0.1', 30080)).reply, /^pod-[12]$/);
  });

  await t.test('a service without endpoints is refused at once', async (t) => {
    const r = await tcp(client, '10.96.0.20', 80);
    t.match(r, { ok: false, error: 'ECONNREFUSED' });
    t.ok(r.ms < 1000, `in ${r.ms}ms`);
  });

  await t.test('SIGTERM removes the rules', async (t) => {
    proxy.kill('SIGTERM');
    const [code] = (await once(proxy, 'exit')) as [number | null];
    t.equal(code, 0, 'exit 0');
    t.equal(await node.iptablesSave('ipv4'), baseline, 'nat and filter as before');
  });
}

if (await requireNetns(t)) {
  await sweepLeftovers();
  await t.test('proxy with iptables rules, end to end', suite);
}
