/**
 * NodePorts as kube-proxy's iptables mode accepts them (issue 13 item 6),
 * with real packets through `kup run` in namespaces the test builds: at
 * 127.0.0.1 from the node's own processes by default (TCP and UDP, the UDP
 * reply coming back from the address asked), not with
 * --iptables-localhost-nodeports=false, and with --nodeport-addresses only
 * on the node address it selects.
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
const NODE_IP = '10.200.0.1';
const NODE_IP_2 = '10.200.0.5';

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
        - { name: dns, protocol: UDP, port: 53, targetPort: 8053, nodePort: 30053 }
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: { name: web-1, namespace: default, labels: { kubernetes.io/service-name: web } }
    addressType: IPv4
    ports:
      - { name: http, protocol: TCP, port: 8080 }
      - { name: dns, protocol: UDP, port: 8053 }
    endpoints:
      - addresses: [10.201.0.2]
        conditions: { ready: true }
        nodeName: node-a
`;

interface ProbeResult {
  ok: boolean;
  reply?: string;
  error?: string;
  ms: number;
}

async function probe(ns: Netns, proto: 'tcp' | 'udp', host: string, port: number): Promise<ProbeResult> {
  const r = await ns.node(`${SUPPORT}/probe.js`, [proto, host, String(port), '1500']);
  if (r.code !== 0) throw new Error(`probe failed to run: ${r.stderr}`);
  return JSON.parse(r.stdout.trim()) as ProbeResult;
}

function firstLine(child: ChildProcess, timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no output')), timeoutMs);
    child.on('exit', (code) => (clearTimeout(timer), reject(new Error(`exited ${code}`))));
    createInterface({ input: child.stdout! }).once('line', (l) => (clearTimeout(timer), resolve(l)));
  });
}

/** Starts `kup run` in the node namespace and waits for its first sync; returns its log so far and a stop that expects exit 0. */
async function startKup(
  t: Test,
  node: Netns,
  extra: readonly string[],
): Promise<{ log: () => string; stop: () => Promise<number | null> }> {
  const dir = mkdtempSync(join(tmpdir(), 'kup-np13-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'cluster.yaml');
  writeFileSync(file, CLUSTER);
  const args = ['run', '--source', `file:${file}`, '--hostname-override', 'node-a', '--min-sync-period', '0'];
  const child = node.spawnNode(KUP, [...args, '--state-dir', join(dir, 'state'), '--metrics-bind-address', '', ...extra]);
  let text = '';
  child.stderr!.on('data', (d: Buffer) => (text += d.toString()));
  // Driven by the child's output, so nothing keeps polling once it has exited.
  await new Promise<void>((resolve, reject) => {
    const done = (err?: Error): void => {
      clearTimeout(timer);
      child.stderr!.off('data', check);
      child.off('exit', onExit);
      if (err === undefined) resolve();
      else reject(err);
    };
    const timer = setTimeout(() => done(new Error(`no sync; stderr: ${text.slice(-2000)}`)), 20_000);
    const onExit = (code: number | null): void => done(new Error(`exited ${code}; stderr: ${text.slice(-2000)}`));
    const check = (): void => {
      if (/"msg":"synced \d+ service ports/.test(text)) done();
    };
    child.stderr!.on('data', check);
    child.on('exit', onExit);
  });
  return {
    log: () => text,
    stop: async () => {
      child.kill('SIGTERM');
      const [code] = (await once(child, 'exit')) as [number | null];
      return code;
    },
  };
}

async function suite(t: Test): Promise<void> {
  const client = await createNetns(t, 'np13-client');
  const node = await createNetns(t, 'np13-node');
  const pods = await createNetns(t, 'np13-pods');
  // The node holds two addresses on the client's network: --nodeport-addresses picks one.
  await link(client, ['10.200.0.2/24'], node, [`${NODE_IP}/24`, `${NODE_IP_2}/24`]);
  await link(pods, ['10.201.0.2/24'], node, ['10.201.0.1/24']);
  await client.run('ip', ['route', 'add', 'default', 'via', NODE_IP]);
  const baseline = await node.iptablesSave('ipv4');
  // Off in the test's own node namespace, as on a node where nothing set it: kup must not need it.
  for (const dev of ['all', 'lo']) await node.run('sysctl', ['-qw', `net.ipv4.conf.${dev}.route_localnet=0`]);
  const sysctl = async (): Promise<string> => (await node.run('sysctl', ['-n', 'net.ipv4.conf.all.route_localnet'])).trim();
  t.equal(await firstLine(pods.spawnNode(`${SUPPORT}/echo-server.js`, ['10.201.0.2', 'tcp:8080:web', 'udp:8053:dns'])), 'ready');

  await t.test('default: 127.0.0.1:nodePort answers the node, TCP and UDP, without route_localnet', async (t) => {
    const kup = await startKup(t, node, []);
    t.match(await probe(node, 'tcp', '127.0.0.1', 30080), { ok: true, reply: 'web' }, 'TCP 127.0.0.1:30080');
    // The probe's UDP socket is connected to 127.0.0.1:30053: it only takes a reply from there.
    t.match(await probe(node, 'udp', '127.0.0.1', 30053), { ok: true, reply: 'dns' }, 'UDP 127.0.0.1:30053');
    t.match(await probe(node, 'tcp', NODE_IP, 30080), { ok: true, reply: 'web' }, 'and the node address');
    t.match(await probe(client, 'tcp', NODE_IP_2, 30080), { ok: true, reply: 'web' }, 'every local address from outside');
    t.match(await probe(client, 'udp', NODE_IP_2, 30053), { ok: true, reply: 'dns' });
    t.equal(await sysctl(), '0', 'route_localnet still 0: not needed, not set');
    t.equal(await kup.stop(), 0, 'exit 0');
  });

  await t.test('--iptables-localhost-nodeports=false: 127.0.0.1:nodePort refused', async (t) => {
    const kup = await startKup(t, node, ['--iptables-localhost-nodeports=false']);
    t.match(await probe(node, 'tcp', '127.0.0.1', 30080), { ok: false, error: 'ECONNREFUSED' }, 'TCP refused');
    t.match(await probe(node, 'udp', '127.0.0.1', 30053), { ok: false }, 'UDP unanswered');
    t.match(await probe(node, 'tcp', NODE_IP, 30080), { ok: true, reply: 'web' }, 'the node address still answers');
    t.equal(await kup.stop(), 0, 'exit 0');
  });

  await t.test(`--nodeport-addresses ${NODE_IP_2}/32: only that address answers`, async (t) => {
    const kup = await startKup(t, node, ['--nodeport-addresses', `${NODE_IP_2}/32`]);
    t.match(kup.log(), new RegExp(`NodePorts accepted on ${NODE_IP_2.replace(/\./g, '\\.')}"`), 'the log says where');
    t.match(await probe(client, 'tcp', NODE_IP_2, 30080), { ok: true, reply: 'web' }, `TCP ${NODE_IP_2}:30080`);
    t.match(await probe(client, 'udp', NODE_IP_2, 30053), { ok: true, reply: 'dns' }, `UDP ${NODE_IP_2}:30053`);
    t.match(await probe(client, 'tcp', NODE_IP, 30080), { ok: false, error: 'ECONNREFUSED' }, `TCP ${NODE_IP}:30080 refused`);
    t.match(await probe(client, 'udp', NODE_IP, 30053), { ok: false }, `UDP ${NODE_IP}:30053 unanswered`);
    t.match(await probe(node, 'tcp', NODE_IP_2, 30080), { ok: true, reply: 'web' }, 'the node itself, at the selected address');
    t.match(await probe(node, 'udp', NODE_IP_2, 30053), { ok: true, reply: 'dns' }, 'UDP too, the reply from the address asked');
    t.match(await probe(node, 'tcp', NODE_IP, 30080), { ok: false, error: 'ECONNREFUSED' }, 'not at the other');
    t.match(await probe(node, 'tcp', '127.0.0.1', 30080), { ok: false, error: 'ECONNREFUSED' }, 'nor at 127.0.0.1 (not selected)');
    t.equal(await kup.stop(), 0, 'exit 0');
  });

  await t.test('--nodeport-addresses 127.0.0.0/8: localhost only', async (t) => {
    const kup = await startKup(t, node, ['--nodeport-addresses', '127.0.0.0/8']);
    t.match(await probe(node, 'tcp', '127.0.0.1', 30080), { ok: true, reply: 'web' }, 'TCP 127.0.0.1');
    t.match(await probe(node, 'udp', '127.0.0.1', 30053), { ok: true, reply: 'dns' }, 'UDP 127.0.0.1');
    t.match(await probe(client, 'tcp', NODE_IP, 30080), { ok: false, error: 'ECONNREFUSED' }, 'not from outside');
    t.equal(await kup.stop(), 0, 'exit 0');
  });

  t.equal(await node.iptablesSave('ipv4'), baseline, 'nat and filter as before');
}

if (await requireNetns(t)) {
  await sweepLeftovers();
  await t.test('NodePorts on localhost and --nodeport-addresses, through kup run', suite);
}
