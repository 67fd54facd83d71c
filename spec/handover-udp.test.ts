/**
 * UDP across a hand-over (issue 14: "replies for the old process's sessions
 * keep flowing until they idle out; new sessions go to the new process"), with
 * real sockets in a network namespace this test creates. A client that keeps
 * one socket (a resolver) queries every 50 ms throughout; a second kup takes
 * over; then new clients query. The backend tags each answer with the port of
 * the session socket that relayed it, and `ss` says which kup owns that socket.
 * Run on both relays: the TypeScript datagram path keeps each session on a
 * reply socket of its own; the native UDP thread on a client socket it makes.
 */
import { spawn, type ChildProcess, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import t, { type Test } from 'tap';
import { stringify } from 'yaml';
import { finished, KUP, waitForOutput } from './support/cli.js';
import { createNetns, NODE_BIN, requireNetns, sweepLeftovers, type Netns } from './support/netns.js';
import { endpointSlice, service } from './support/objects.js';
import { asanAddonEnv, requireNativeRelay } from './support/relay.js';

const PEERS = 'dist/spec/support/udp-handover-peers.js';
const BACKEND_PORT = 18081;

function startKupIn(ns: Netns, args: string[], env: NodeJS.ProcessEnv): ChildProcessWithoutNullStreams {
  return spawn('ip', ['netns', 'exec', ns.name, NODE_BIN, '--disable-sigusr1', KUP, ...args], {
    stdio: 'pipe',
    env: { ...process.env, ...env },
  });
}

function lines(child: ChildProcess): () => Promise<string> {
  const queue: string[] = [];
  let wake: (() => void) | null = null;
  createInterface({ input: child.stdout! }).on('line', (l) => {
    queue.push(l);
    wake?.();
  });
  return async () => {
    while (queue.length === 0) await new Promise<void>((r) => (wake = r));
    return queue.shift()!;
  };
}

/** UDP sockets in `ns` matching an ss filter: state, local port, owning pid. */
async function udpSockets(ns: Netns, filter: string): Promise<{ state: string; localPort: number; pid: number }[]> {
  const out = await ns.run('ss', ['-Hunap', filter]);
  return out
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const cols = l.trim().split(/\s+/);
      return {
        state: cols[0]!,
        localPort: Number(/:(\d+)$/.exec(cols[3]!)?.[1]),
        pid: Number(/pid=(\d+)/.exec(l)?.[1]),
      };
    });
}

/** The relay, and for the native one whether its addon is the AddressSanitizer build (the thread's descriptor hand-offs checked). */
type Variant = 'js' | 'native' | 'native-asan';

for (const variant of ['js', 'native', 'native-asan'] as const) {
  t.test(`UDP hand-over (${variant}): an existing client stays with the old kup until idle, new clients go to the new one`, (t) =>
    handover(t, variant),
  );
}

async function handover(t: Test, variant: Variant): Promise<void> {
  if (!(await requireNetns(t))) return;
  const relay = variant === 'js' ? 'js' : 'native';
  if (relay === 'native' && !requireNativeRelay(t)) return;
  const dir = mkdtempSync(join(tmpdir(), 'kup-handover-udp-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  let env: NodeJS.ProcessEnv = {};
  if (variant === 'native-asan') {
    const asan = asanAddonEnv(t, dir);
    if (asan === null) return;
    env = asan;
  }
  await sweepLeftovers();
  const node = await createNetns(t, `udphand-${variant === 'native-asan' ? 'asan' : relay}`);
  const file = join(dir, 'objects.yaml');
  writeFileSync(
    file,
    stringify({
      kind: 'List',
      items: [
        service({ name: 'dns', clusterIP: '10.96.0.53', ports: [{ name: 'dns', port: 53, protocol: 'UDP' as const }] }),
        endpointSlice({
          service: 'dns',
          endpoints: [{ ip: '127.0.0.1' }],
          ports: [{ name: 'dns', port: BACKEND_PORT, protocol: 'UDP' }],
        }),
      ],
    }),
  );
  const args = [
    'run',
    '--relay',
    relay,
    '--no-iptables',
    '--bind-address',
    '127.0.0.1',
    '--source',
    `file:${file}`,
    '--healthz-bind-address',
    '',
    '--metrics-bind-address',
    '',
    '--state-dir',
    join(dir, 'state'),
    '--shutdown-grace-period',
    '30s',
    '--udp-timeout',
    '2s',
  ];
  const backend = node.spawnNode(PEERS, ['backend', String(BACKEND_PORT)]);
  t.equal(await lines(backend)(), 'ready', 'backend listening');

  const first = startKupIn(node, args, env);
  t.teardown(() => void first.kill('SIGKILL'));
  const firstDone = finished(first, 60_000);
  await waitForOutput(first, new RegExp(`"relay":"${relay}"`), 20_000);
  const udpPort = Number((await waitForOutput(first, /"servicePort":"default\/dns:dns\/UDP","proxyPort":(\d+)/, 20_000))[1]);
  await waitForOutput(first, /admin servers listening/, 20_000);

  const client = node.spawnNode(PEERS, ['client', '127.0.0.1', String(udpPort)]);
  const fromClient = lines(client);
  t.equal(await fromClient(), 'running', 'the existing client is answered through the first kup');

  const second = startKupIn(node, args, env);
  t.teardown(() => void second.kill('SIGKILL'));
  const secondDone = finished(second, 60_000);
  await waitForOutput(second, /took over from kup pid/, 20_000);
  client.stdin!.write('mark\n');
  t.equal(await fromClient(), 'marked');

  const onPort = await udpSockets(node, `sport = :${udpPort}`);
  t.same(
    onPort.filter((s) => s.pid === first.pid).map((s) => s.state),
    ['ESTAB'],
    'the first kup no longer listens on the port: it holds one socket there, connected to its existing client',
  );
  t.same(
    onPort.filter((s) => s.pid === second.pid).map((s) => s.state),
    ['UNCONN'],
    'the second kup listens on the same port',
  );

  client.stdin!.write('new 40\n');
  const fresh = JSON.parse(await fromClient()) as { lost: number; ports: number[] };
  const sessions = await udpSockets(node, `dport = :${BACKEND_PORT}`);
  const owner = (port: number): number | undefined => sessions.find((s) => s.localPort === port)?.pid;
  t.equal(fresh.lost, 0, 'all 40 new clients answered');
  t.same(
    fresh.ports.map(owner).filter((pid) => pid !== second.pid),
    [],
    'every new client was relayed by the second kup',
  );

  // A rollout's SIGTERM: the first kup still relays for its client until the session idles out.
  first.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 1000));
  t.equal(first.exitCode, null, 'after SIGTERM the first kup stays while its UDP session is active');
  const sessionsLater = await udpSockets(node, `dport = :${BACKEND_PORT}`);
  client.stdin!.write('stop\n');
  const old = JSON.parse(await fromClient()) as { sent: number; answered: number; retried: number; lost: number; ports: number[] };
  t.comment(`existing client: ${JSON.stringify(old)}`);
  t.equal(old.lost, 0, `the existing client lost no query (${old.answered} of ${old.sent} answered, ${old.retried} after a retry)`);
  t.ok(old.ports.length >= 1, 'it was answered after the take-over');
  t.same(
    old.ports.map((p) => sessionsLater.find((s) => s.localPort === p)?.pid).filter((pid) => pid !== first.pid),
    [],
    'through its session in the first kup throughout',
  );
  const r1 = await firstDone;
  t.equal(r1.code, 0, 'the first kup exits 0 once the session idled out');
  second.kill('SIGTERM');
  const r2 = await secondDone;
  t.equal(r2.code, 0, 'the second kup exits 0 on SIGTERM');
  if (variant === 'native-asan') {
    t.notMatch(r1.stderr, /AddressSanitizer/, 'the first kup: no AddressSanitizer report');
    t.notMatch(r2.stderr, /AddressSanitizer/, 'the second kup: no AddressSanitizer report');
  }
  backend.kill();
}
