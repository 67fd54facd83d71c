/**
 * Dual-stack with real packets (issue 13 item 4): `kup run` with its
 * iptables/ip6tables rules in a node namespace, pods in another (an IPv4 and
 * an IPv6 backend, each answering with its own name), a client in a third.
 * Upstream keeps each family to its own endpoints and gives a Service rules
 * only in its own families; this checks what a client of each family sees.
 */
import t, { type Test } from 'tap';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { KUP } from './support/cli.js';
import { createNetns, link, requireNetns, sweepLeftovers, type Netns } from './support/netns.js';

const SUPPORT = 'dist/spec/support';

function svc(name: string, clusterIPs: string[], nodePort: number): string {
  return `  - apiVersion: v1
    kind: Service
    metadata: { name: ${name}, namespace: default }
    spec:
      type: NodePort
      clusterIP: ${clusterIPs[0]}
      clusterIPs: [${clusterIPs.join(', ')}]
      ipFamilies: [${clusterIPs.map((ip) => (ip.includes(':') ? 'IPv6' : 'IPv4')).join(', ')}]
      ports:
        - { name: http, protocol: TCP, port: 80, targetPort: 8080, nodePort: ${nodePort} }
`;
}

function slice(service: string, family: 'IPv4' | 'IPv6', ip: string): string {
  return `  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata:
      name: ${service}-${family.toLowerCase()}
      namespace: default
      labels: { kubernetes.io/service-name: ${service} }
    addressType: ${family}
    ports:
      - { name: http, protocol: TCP, port: 8080 }
    endpoints:
      - addresses: ['${ip}']
        conditions: { ready: true }
        nodeName: node-a
`;
}

const CLUSTER =
  'apiVersion: v1\nkind: List\nitems:\n' +
  // Dual-stack, pods of both families.
  svc('dual', ['10.96.0.10', 'fd00:96::10'], 30080) +
  slice('dual', 'IPv4', '10.201.0.2') +
  slice('dual', 'IPv6', 'fd00:201::2') +
  // Dual-stack, IPv4 pods only.
  svc('half', ['10.96.0.30', 'fd00:96::30'], 30081) +
  slice('half', 'IPv4', '10.201.0.2') +
  // Single-stack IPv4.
  svc('v4only', ['10.96.0.20'], 30090) +
  slice('v4only', 'IPv4', '10.201.0.2');

interface Probe {
  ok: boolean;
  reply?: string;
  error?: string;
  ms: number;
}

async function tcp(ns: Netns, host: string, port: number): Promise<Probe> {
  const r = await ns.node(`${SUPPORT}/probe.js`, ['tcp', host, String(port), '3000']);
  return JSON.parse(r.stdout.trim()) as Probe;
}

function waitForLine(child: ChildProcess, stream: 'stdout' | 'stderr', re: RegExp, timeoutMs = 20_000): Promise<string> {
  let text = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no line ${re}: ${text.slice(-2000)}`)), timeoutMs);
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${text.slice(-2000)}`)));
    createInterface({ input: child[stream]! }).on('line', (l) => {
      text += l + '\n';
      if (re.test(l)) {
        clearTimeout(timer);
        resolve(l);
      }
    });
  });
}

async function suite(t: Test): Promise<void> {
  const client = await createNetns(t, 'family13-client');
  const node = await createNetns(t, 'family13-node');
  const pods = await createNetns(t, 'family13-pods');
  await link(client, ['10.200.0.2/24', 'fd00:200::2/64'], node, ['10.200.0.1/24', 'fd00:200::1/64']);
  await link(pods, ['10.201.0.2/24', 'fd00:201::2/64'], node, ['10.201.0.1/24', 'fd00:201::1/64']);
  await client.run('ip', ['route', 'add', 'default', 'via', '10.200.0.1']);
  await client.run('ip', ['-6', 'route', 'add', 'default', 'via', 'fd00:200::1']);

  for (const [ip, label] of [
    ['10.201.0.2', 'pod-v4'],
    ['fd00:201::2', 'pod-v6'],
  ] as const) {
    t.equal(await waitForLine(pods.spawnNode(`${SUPPORT}/echo-server.js`, [ip, `tcp:8080:${label}`]), 'stdout', /^ready$/), 'ready');
  }
  const dir = mkdtempSync(join(tmpdir(), 'kup-family13-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'cluster.yaml');
  writeFileSync(file, CLUSTER);
  const proxy = node.spawnNode(KUP, [
    'run',
    '--source',
    `file:${file}`,
    '--hostname-override',
    'node-a',
    '--min-sync-period',
    '0',
    '--state-dir',
    join(dir, 'state'),
  ]);
  t.teardown(() => void proxy.kill('SIGTERM'));
  await waitForLine(proxy, 'stderr', /"msg":"synced \d+ service ports/);

  const answers = async (host: string, port: number, n = 4): Promise<string[]> => {
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      const r = await tcp(client, host, port);
      out.push(r.ok ? (r.reply ?? '') : (r.error ?? 'error'));
    }
    return out;
  };

  await t.test('a dual-stack Service: each family reaches its own pods only (ClusterIP and NodePort)', async (t) => {
    t.same(await answers('10.96.0.10', 80), ['pod-v4', 'pod-v4', 'pod-v4', 'pod-v4'], 'IPv4 ClusterIP');
    t.same(await answers('fd00:96::10', 80), ['pod-v6', 'pod-v6', 'pod-v6', 'pod-v6'], 'IPv6 ClusterIP');
    t.same(await answers('10.200.0.1', 30080), ['pod-v4', 'pod-v4', 'pod-v4', 'pod-v4'], 'IPv4 NodePort');
    t.same(await answers('fd00:200::1', 30080), ['pod-v6', 'pod-v6', 'pod-v6', 'pod-v6'], 'IPv6 NodePort');
  });

  await t.test('a dual-stack Service with IPv4 pods only: IPv6 clients are refused at once, IPv4 served', async (t) => {
    t.same(await answers('10.96.0.30', 80, 2), ['pod-v4', 'pod-v4']);
    const r = await tcp(client, 'fd00:96::30', 80);
    t.match(r, { ok: false, error: 'ECONNREFUSED' }, 'refused (REJECT in the IPv6 rules)');
    t.ok(r.ms < 1000, `in ${r.ms}ms`);
  });

  await t.test('a single-stack IPv4 Service has no IPv6 NodePort', async (t) => {
    t.same(await answers('10.200.0.1', 30090, 2), ['pod-v4', 'pod-v4'], 'IPv4 NodePort served');
    t.match(await tcp(client, 'fd00:200::1', 30090), { ok: false, error: 'ECONNREFUSED' }, 'nothing listens on the IPv6 NodePort');
    const v6rules = await node.iptablesSave('ipv6');
    t.notMatch(v6rules, /30090|v4only/, 'no IPv6 rule names it');
    t.match(v6rules, /--dport 30080/, 'while the dual-stack NodePort has its IPv6 rule');
  });
}

if (await requireNetns(t)) {
  await sweepLeftovers();
  await t.test('dual-stack, one family per virtual IP, real packets', suite);
}
