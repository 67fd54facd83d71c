/**
 * Zero-downtime hand-over with real iptables (issue 14), in network
 * namespaces this test creates: a client namespace reaches a ClusterIP and a
 * NodePort (TCP and UDP) of a node namespace where kup runs. Under load a
 * second kup takes over from the first: no new connection fails, no transfer
 * breaks, UDP is answered, and iptables-save polled throughout always shows
 * the KUP chains and the same rules (the successor binds the same ports).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import t from 'tap';
import { finished, KUP, waitForOutput } from './support/cli.js';
import { createNetns, link, NODE_BIN, requireNetns, sweepLeftovers, type Netns } from './support/netns.js';

const SUPPORT = 'dist/spec/support';
const NODE_IP = '10.214.0.1';
// The 20 x 50 MB: 10 through the ClusterIP and 10 through the NodePort, each paced at 8 MB/s (see handover.test.ts).
const TRANSFERS = 10;
const TRANSFER_BYTES = 50 * 1024 * 1024;
const TRANSFER_RATE = 8 * 1024 * 1024;

const CLUSTER = `kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: { name: web, namespace: default }
    spec:
      type: NodePort
      clusterIP: 10.96.0.10
      ports:
        - { name: http, protocol: TCP, port: 80, nodePort: 30080 }
        - { name: dns, protocol: UDP, port: 53, nodePort: 30053 }
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: { name: web-1, namespace: default, labels: { kubernetes.io/service-name: web } }
    addressType: IPv4
    ports: [{ name: http, protocol: TCP, port: 18080 }, { name: dns, protocol: UDP, port: 18080 }]
    endpoints: [{ addresses: [127.0.0.1] }]
`;

interface Summary {
  connects: number;
  connectFailures: number;
  connectErrors: string[];
  transfersOk: number;
  transfersBroken: string[];
  idleOk: boolean;
  idleExchanges: number;
  udpQueries: number;
  udpAnswered: number;
  udpRetried: number;
  udpLost: number;
}

function startKupIn(ns: Netns, args: string[]): ChildProcessWithoutNullStreams {
  return spawn('ip', ['netns', 'exec', ns.name, NODE_BIN, '--disable-sigusr1', KUP, ...args], { stdio: 'pipe' });
}

/** A load generator in `ns` against host:tcp/udp; resolves its summary after stop(). */
function startLoad(ns: Netns, host: string, tcp: number, udp: number) {
  const child = ns.spawnNode(`${SUPPORT}/handover-load.js`, [
    host,
    String(tcp),
    String(udp),
    String(TRANSFERS),
    String(TRANSFER_BYTES),
    String(TRANSFER_RATE),
    '20',
  ]);
  const lines = createInterface({ input: child.stdout! });
  const queue: string[] = [];
  let wake: (() => void) | null = null;
  lines.on('line', (l) => {
    queue.push(l);
    wake?.();
  });
  const next = async (): Promise<string> => {
    while (queue.length === 0) await new Promise<void>((r) => (wake = r));
    return queue.shift()!;
  };
  return {
    running: next,
    async stop(): Promise<Summary> {
      child.stdin!.write('stop\n');
      return JSON.parse(await next()) as Summary;
    },
  };
}

t.test('a second kup takes over under load with iptables: ClusterIP and NodePort keep working, the chains are never missing', async (t) => {
  if (!(await requireNetns(t))) return;
  await sweepLeftovers();
  const client = await createNetns(t, 'r14-client');
  const node = await createNetns(t, 'r14-node');
  await link(client, ['10.214.0.2/24'], node, [`${NODE_IP}/24`]);
  await client.run('ip', ['route', 'add', 'default', 'via', NODE_IP]);
  const dir = mkdtempSync(join(tmpdir(), 'kup-handover-netns-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'cluster.yaml');
  writeFileSync(file, CLUSTER);
  const args = [
    'run',
    '--source',
    `file:${file}`,
    '--hostname-override',
    'node-a',
    '--min-sync-period',
    '0',
    '--metrics-bind-address',
    '',
    '--state-dir',
    join(dir, 'state'),
    '--shutdown-grace-period',
    '60s',
  ];
  const backend = node.spawnNode(`${SUPPORT}/handover-backend.js`, ['18080']);
  t.equal(await new Promise((r) => createInterface({ input: backend.stdout! }).once('line', r)), 'ready', 'backend listening');

  const first = startKupIn(node, args);
  t.teardown(() => void first.kill('SIGKILL'));
  const firstDone = finished(first, 120_000);
  await waitForOutput(first, /admin servers listening/, 30_000);
  const rules = await node.iptablesSave();
  t.match(rules, /-j KUP-PORTALS-CONTAINER/, 'the first kup installed its chains');

  const viaClusterIP = startLoad(client, '10.96.0.10', 80, 53);
  const viaNodePort = startLoad(client, NODE_IP, 30080, 30053);
  t.equal(await viaClusterIP.running(), 'running', 'load through the ClusterIP');
  t.equal(await viaNodePort.running(), 'running', 'load through the NodePort');

  const snapshots: string[] = [];
  let polling = true;
  const poller = (async () => {
    while (polling) {
      snapshots.push(await node.iptablesSave());
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const t0 = performance.now();
  const second = startKupIn(node, args);
  t.teardown(() => void second.kill('SIGKILL'));
  const secondDone = finished(second, 120_000);
  await waitForOutput(second, /took over from kup pid/, 30_000);
  const handoverMs = Math.round(performance.now() - t0);
  first.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 2000));
  const [a, b] = await Promise.all([viaClusterIP.stop(), viaNodePort.stop()]);
  const r1 = await firstDone;
  polling = false;
  await poller;
  t.comment(`hand-over with iptables: ${handoverMs} ms; ClusterIP ${JSON.stringify(a)}; NodePort ${JSON.stringify(b)}`);
  if (a.connectFailures + b.connectFailures > 0) t.comment(`first kup:\n${r1.stderr}`);
  for (const [name, s] of [
    ['ClusterIP', a],
    ['NodePort', b],
  ] as const) {
    t.equal(s.connectFailures, 0, `${name}: 0 failed new connections of ${s.connects + s.connectFailures} (${s.connectErrors.join(', ')})`);
    t.ok(s.connects > 50, `${name}: connections flowed throughout`);
    t.same(s.transfersBroken, [], `${name}: no transfer broken`);
    t.equal(s.transfersOk, TRANSFERS, `${name}: all transfers byte-exact`);
    t.ok(s.idleOk, `${name}: the idle connection kept answering`);
    t.equal(s.udpLost, 0, `${name}: every UDP query answered (${s.udpRetried} after a retry)`);
  }
  t.equal(r1.code, 0, 'the first kup exits 0');
  const missing = snapshots.filter(
    (s) => !s.includes(':KUP-PORTALS-CONTAINER') || !s.includes('-j KUP-PORTALS-CONTAINER') || !s.includes('-j KUP-NODEPORT-CONTAINER'),
  );
  t.equal(missing.length, 0, `the KUP chains and jumps were in all ${snapshots.length} iptables-save snapshots`);
  t.same([...new Set(snapshots)], [rules], 'and the rules never changed (same proxy ports)');
  t.equal(await node.iptablesSave(), rules, 'the rules stay after the first exits');

  // Crash: SIGKILL leaves the rules (they name the persisted ports); the next kup binds those ports.
  const killedAt = performance.now();
  second.kill('SIGKILL');
  await secondDone;
  t.equal(await node.iptablesSave(), rules, 'after SIGKILL the rules are still installed');
  const third = startKupIn(node, args);
  t.teardown(() => void third.kill('SIGKILL'));
  const thirdDone = finished(third, 60_000);
  const probe = await client.node(`${SUPPORT}/handover-probe.js`, ['10.96.0.10', '80', '30000'], 40_000);
  const windowMs = Math.round(performance.now() - killedAt);
  const p = JSON.parse(probe.stdout.trim()) as { ok: boolean; attempts: number };
  t.ok(p.ok, `the ClusterIP works again through the rules once the next kup bound the ports (${p.attempts} failed attempts)`);
  t.comment(`SIGKILL -> first successful connection through the ClusterIP rules: ${windowMs} ms`);
  await waitForOutput(third, /admin servers listening/, 30_000);
  t.equal(await node.iptablesSave(), rules, 'the restarted kup installed the same rules');

  third.kill('SIGTERM');
  const r3 = await thirdDone;
  t.equal(r3.code, 0, 'it exits 0 on SIGTERM');
  t.notMatch(await node.iptablesSave(), /KUP-/, 'and, with no successor, removes the rules');
  backend.kill();
});
