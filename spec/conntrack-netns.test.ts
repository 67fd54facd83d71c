/**
 * Stale UDP conntrack entries after a restart, with real iptables and the
 * real conntrack table in network namespaces. A resolver that reuses its
 * source port keeps matching the conntrack entry its first datagram made,
 * and that entry still carries the NAT to the old kup's proxy port: without
 * a cleanup every later datagram goes to a closed port until the client
 * stays silent for the UDP timeout. kup clears those entries when it
 * installs rules (as kube-proxy's CleanStaleEntries), so the next datagram
 * from the same source port is answered by the new kup.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import t, { type Test } from 'tap';
import { findBinary } from '../lib/iptables/backend.js';
import { finished, KUP, waitForOutput } from './support/cli.js';
import { createNetns, link, NODE_BIN, requireNetns, sweepLeftovers, type Netns } from './support/netns.js';

const SUPPORT = 'dist/spec/support';
const VIP = '10.96.0.53';
const CLIENT_PORT = '40053';

const CLUSTER = `kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: { name: dns, namespace: kube-system }
    spec: { clusterIP: ${VIP}, ports: [{ name: dns, protocol: UDP, port: 53 }] }
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: { name: dns-1, namespace: kube-system, labels: { kubernetes.io/service-name: dns } }
    addressType: IPv4
    ports: [{ name: dns, protocol: UDP, port: 5353 }]
    endpoints: [{ addresses: [127.0.0.1] }]
`;

/** One datagram to the ClusterIP from the resolver's fixed source port: the reply, or the error. */
async function ask(client: Netns): Promise<string> {
  const r = await client.node(`${SUPPORT}/probe.js`, ['udp', VIP, '53', '1500', CLIENT_PORT]);
  const p = JSON.parse(r.stdout.trim()) as { ok: boolean; reply?: string; error?: string };
  return p.ok ? (p.reply ?? '').trim() : `error: ${p.error ?? '?'}`;
}

/** The proxy ports the node's conntrack entries for the ClusterIP are translated to. */
async function translatedPorts(node: Netns): Promise<string[]> {
  const r = await node.exec('conntrack', ['-L', '-p', 'udp', '--orig-dst', VIP]);
  return [...r.stdout.matchAll(/src=\S+ dst=\S+ sport=\d+ dport=\d+.*?src=\S+ dst=\S+ sport=(\d+)/g)].map((m) => m[1]!);
}

function startKup(node: Netns, args: string[]): ChildProcessWithoutNullStreams {
  return spawn('ip', ['netns', 'exec', node.name, NODE_BIN, '--disable-sigusr1', KUP, 'run', ...args], { stdio: 'pipe' });
}

async function conntrackUnavailable(t: Test): Promise<boolean> {
  if ((await findBinary('conntrack')) !== null) return false;
  const reason = 'needs the conntrack tool (apt-get install -y conntrack)';
  if (process.env.CI === 'true') t.fail(`CI=true but ${reason}`);
  else t.plan(0, reason);
  return true;
}

async function suite(t: Test): Promise<void> {
  const client = await createNetns(t, 'client');
  const node = await createNetns(t, 'node');
  await link(client, ['10.212.0.2/24'], node, ['10.212.0.1/24']);
  await client.run('ip', ['route', 'add', 'default', 'via', '10.212.0.1']);
  const pod = node.spawnNode(`${SUPPORT}/echo-server.js`, ['127.0.0.1', 'udp:5353:coredns']);
  await new Promise((r) => createInterface({ input: pod.stdout! }).once('line', r));

  const dir = mkdtempSync(join(tmpdir(), 'kup-conntrack-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'cluster.yaml');
  writeFileSync(file, CLUSTER);
  const args = (run: string, range: string): string[] => [
    '--source',
    `file:${file}`,
    '--hostname-override',
    'node-a',
    '--min-sync-period',
    '0',
    '--metrics-bind-address',
    '',
    '--state-dir',
    join(dir, run),
    '--proxy-port-range',
    range,
  ];

  const first = startKup(node, args('first', '41000-41099'));
  t.teardown(() => void first.kill('SIGKILL'));
  const firstDone = finished(first, 60_000);
  await waitForOutput(first, /admin servers listening/, 20_000);
  t.equal(await ask(client), 'coredns', 'the first kup answers the resolver');
  t.same(await translatedPorts(node), ['41000'], "the resolver's conntrack entry is translated to the first kup's proxy port");
  first.kill('SIGTERM');
  t.equal((await firstDone).code, 0, 'the first kup exits 0 on SIGTERM');

  const second = startKup(node, args('second', '42000-42099'));
  t.teardown(() => void second.kill('SIGKILL'));
  const secondDone = finished(second, 60_000);
  // The cleanup runs beside the syncs, right after the first one put the rules
  // in: either line may come first, so both are awaited from here at once.
  await Promise.all([waitForOutput(second, /admin servers listening/, 20_000), waitForOutput(second, /stale UDP conntrack entr/, 20_000)]);
  const left = await translatedPorts(node);
  t.same(left, [], `no entry for the ClusterIP still points at the old proxy port (found ${JSON.stringify(left)})`);
  t.equal(await ask(client), 'coredns', 'the next datagram from the same source port is answered by the restarted kup');
  t.same(await translatedPorts(node), ['42000'], "and the resolver's new entry is translated to the new proxy port");
  second.kill('SIGTERM');
  const r = await secondDone;
  t.equal(r.code, 0, 'the second kup exits 0 on SIGTERM');
  t.match(r.stdout + r.stderr, /cleared 1 stale UDP conntrack entry/, 'it logged the cleanup');
}

t.test('a restarted kup with other proxy ports clears the stale UDP conntrack entries of its ClusterIPs', async (t) => {
  if (!(await requireNetns(t))) return;
  if (await conntrackUnavailable(t)) return;
  await sweepLeftovers();
  await suite(t);
});
