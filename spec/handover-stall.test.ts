/**
 * A successor that is slow to finish its first sync (a very large table keeps
 * its event loop busy; here KUP_TEST_FIRST_SYNC_STALL_MS blocks it for 6 s,
 * longer than the load's 5 s connection timeout) must not take a share of new
 * connections before it can serve them: it joins the predecessor's ports
 * (SO_REUSEPORT) only once its first sync and rules are done. Real sockets in
 * a network namespace this test creates.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import t from 'tap';
import { stringify } from 'yaml';
import { finished, KUP, waitForOutput } from './support/cli.js';
import { createNetns, NODE_BIN, requireNetns, sweepLeftovers, type Netns } from './support/netns.js';
import { endpointSlice, service } from './support/objects.js';

const SUPPORT = 'dist/spec/support';
const BACKEND_PORT = 18082;
const STALL_MS = 6000;

function startKupIn(ns: Netns, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcessWithoutNullStreams {
  return spawn('ip', ['netns', 'exec', ns.name, NODE_BIN, '--disable-sigusr1', KUP, ...args], {
    stdio: 'pipe',
    env: { ...process.env, ...env },
  });
}

t.test('a successor whose first sync stalls takes no connection before it can serve: 0 failures', async (t) => {
  if (!(await requireNetns(t))) return;
  await sweepLeftovers();
  const node = await createNetns(t, 'r14b-stall');
  await node.run('sysctl', ['-qw', 'net.ipv4.tcp_migrate_req=1']);
  const dir = mkdtempSync(join(tmpdir(), 'kup-handover-stall-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'objects.yaml');
  writeFileSync(
    file,
    stringify({
      kind: 'List',
      items: [
        service({
          name: 'web',
          clusterIP: '10.96.0.10',
          ports: [
            { name: 'http', port: 80 },
            { name: 'dns', port: 53, protocol: 'UDP' as const },
          ],
        }),
        endpointSlice({
          service: 'web',
          endpoints: [{ ip: '127.0.0.1' }],
          ports: [
            { name: 'http', port: BACKEND_PORT, protocol: 'TCP' },
            { name: 'dns', port: BACKEND_PORT, protocol: 'UDP' },
          ],
        }),
      ],
    }),
  );
  const args = [
    'run',
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
  ];
  const backend = node.spawnNode(`${SUPPORT}/handover-backend.js`, [String(BACKEND_PORT)]);
  t.equal(await new Promise((r) => createInterface({ input: backend.stdout! }).once('line', r)), 'ready', 'backend listening');

  const first = startKupIn(node, args);
  t.teardown(() => void first.kill('SIGKILL'));
  const firstDone = finished(first, 90_000);
  const tcp = Number((await waitForOutput(first, /"servicePort":"default\/web:http\/TCP","proxyPort":(\d+)/, 20_000))[1]);
  const udp = Number((await waitForOutput(first, /"servicePort":"default\/web:dns\/UDP","proxyPort":(\d+)/, 20_000))[1]);
  await waitForOutput(first, /admin servers listening/, 20_000);

  // New connections and UDP queries every 20 ms; no long transfers.
  const load = node.spawnNode(`${SUPPORT}/handover-load.js`, ['127.0.0.1', String(tcp), String(udp), '0', '0', '1', '20']);
  const out = createInterface({ input: load.stdout! });
  const lines: string[] = [];
  let wake: (() => void) | null = null;
  out.on('line', (l) => {
    lines.push(l);
    wake?.();
  });
  const next = async (): Promise<string> => {
    while (lines.length === 0) await new Promise<void>((r) => (wake = r));
    return lines.shift()!;
  };
  t.equal(await next(), 'running', 'load running');

  const second = startKupIn(node, args, { KUP_TEST_FIRST_SYNC_STALL_MS: String(STALL_MS) });
  t.teardown(() => void second.kill('SIGKILL'));
  const secondDone = finished(second, 90_000);
  await waitForOutput(second, /took over from kup pid/, 40_000);
  first.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 1000));
  load.stdin!.write('stop\n');
  const s = JSON.parse(await next()) as {
    connects: number;
    connectFailures: number;
    connectErrors: string[];
    udpQueries: number;
    udpAnswered: number;
    udpRetried: number;
    udpLost: number;
  };
  t.comment(`load across a stalled successor: ${JSON.stringify(s)}`);
  t.equal(s.connectFailures, 0, `0 failed new connections of ${s.connects + s.connectFailures} (${s.connectErrors.join(', ')})`);
  t.ok(s.connects > 200, `connections flowed throughout the ${STALL_MS} ms stall (${s.connects})`);
  t.equal(s.udpLost, 0, `every UDP query answered (${s.udpAnswered} of ${s.udpQueries}, ${s.udpRetried} after a retry)`);
  t.equal((await firstDone).code, 0, 'the first kup exits 0');
  second.kill('SIGTERM');
  t.equal((await secondDone).code, 0, 'the second kup exits 0');
  backend.kill();
});
