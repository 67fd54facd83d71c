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
import { KUP } from './support/cli.js';
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

/** The child's stderr (kup's JSON log lines), collected; waitFor resolves with the first line matching. */
function stderrLog(child: ChildProcess) {
  let text = '';
  const waiters: { re: RegExp; resolve: (line: string) => void }[] = [];
  child.stderr!.on('data', (d: Buffer) => {
    text += d.toString();
    for (const w of [...waiters]) {
      const line = text.split('\n').find((l) => w.re.test(l));
      if (line !== undefined) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  return {
    text: () => text,
    waitFor(re: RegExp, timeoutMs = 20_000): Promise<string> {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no log line ${re}; stderr: ${text.slice(-2000)}`)), timeoutMs);
        child.once('exit', (code) => reject(new Error(`exited ${code}; stderr: ${text.slice(-2000)}`)));
        waiters.push({ re, resolve: (l) => (clearTimeout(timer), resolve(l)) });
      });
    },
  };
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
  // The real `kup run`, as a user starts it, inside the node namespace.
  // Its own --state-dir (lock): another test's kup in another namespace is not a second kup on this node.
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
  const log = stderrLog(proxy);
  t.match(await log.waitFor(/"msg":"synced \d+ service ports/), /servicePorts":2/, 'the proxy synced its listeners and rules');
  t.match(log.text(), /iptables backend (nft|legacy)/, 'the backend in use is logged');

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
