/**
 * A second `kup run` started next to a running one, with real iptables in a
 * network namespace: it takes over (issue 14) instead of fighting: it binds
 * the first one's proxy ports, so the rules never change, and the first exits
 * 0 leaving them in place. A kup killed with SIGKILL leaves a stale lock that
 * the next one takes over, on the same ports.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import t, { type Test } from 'tap';
import { finished, KUP, waitForOutput } from './support/cli.js';
import { createNetns, link, NODE_BIN, requireNetns, sweepLeftovers, WEB_CLUSTER_YAML, type Netns } from './support/netns.js';

const SUPPORT = 'dist/spec/support';

async function probe(ns: Netns): Promise<string> {
  const r = await ns.node(`${SUPPORT}/probe.js`, ['tcp', '10.96.0.10', '80', '1500']);
  const p = JSON.parse(r.stdout.trim()) as { ok: boolean; reply?: string; error?: string };
  return p.ok ? (p.reply ?? '').trim() : `error: ${p.error ?? '?'}`;
}

function startKup(node: Netns, args: string[]): ChildProcessWithoutNullStreams {
  return spawn('ip', ['netns', 'exec', node.name, NODE_BIN, '--disable-sigusr1', KUP, 'run', ...args], { stdio: 'pipe' });
}

async function suite(t: Test): Promise<void> {
  const client = await createNetns(t, 'client');
  const node = await createNetns(t, 'node');
  await link(client, ['10.211.0.2/24'], node, ['10.211.0.1/24']);
  await client.run('ip', ['route', 'add', 'default', 'via', '10.211.0.1']);
  const baseline = await node.iptablesSave();
  const pod = node.spawnNode(`${SUPPORT}/echo-server.js`, ['127.0.0.1', 'tcp:8080:pod-1']);
  await new Promise((r) => createInterface({ input: pod.stdout! }).once('line', r));

  const dir = mkdtempSync(join(tmpdir(), 'kup-lock-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'cluster.yaml');
  writeFileSync(file, WEB_CLUSTER_YAML);
  const stateDir = join(dir, 'state');
  const args = [
    '--source',
    `file:${file}`,
    '--hostname-override',
    'node-a',
    '--min-sync-period',
    '0',
    '--metrics-bind-address',
    '',
    '--state-dir',
    stateDir,
  ];

  const first = startKup(node, args);
  t.teardown(() => void first.kill('SIGKILL'));
  const firstDone = finished(first, 60_000);
  await waitForOutput(first, /admin servers listening/, 20_000);
  t.equal(await probe(client), 'pod-1', 'the first kup serves the cluster IP through its rules');
  const rules = await node.iptablesSave();
  t.not(rules, baseline, 'the first kup installed rules');

  // The second one, same node, same flags: it takes over.
  const second = startKup(node, args);
  t.teardown(() => void second.kill('SIGKILL'));
  const secondDone = finished(second, 60_000);
  const seen = new Set<string>();
  let running = true;
  void firstDone.then(() => (running = false));
  while (running) {
    seen.add(await node.iptablesSave());
    await new Promise((r) => setTimeout(r, 10));
  }
  const r = await firstDone;
  t.equal(r.code, 0, 'the first kup exits 0 once the second took over');
  t.match(r.stdout + r.stderr, /iptables rules left in place for the successor/, 'leaving its rules to the second');
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace');
  t.same([...seen], [rules], `the rules never changed during the hand-over (${seen.size} snapshot(s) taken)`);
  t.equal(await node.iptablesSave(), rules, 'nor after the first exited');
  t.equal(await probe(client), 'pod-1', 'the second kup serves');
  t.equal(second.exitCode, null, 'the second kup is still running');

  // A kup that died without cleaning up leaves its socket file: the next one takes over.
  second.kill('SIGKILL');
  await secondDone;
  t.ok(existsSync(join(stateDir, 'kup.sock')), 'SIGKILL left the lock file behind');
  const third = startKup(node, args);
  t.teardown(() => void third.kill('SIGKILL'));
  const thirdDone = finished(third, 60_000);
  await waitForOutput(third, /admin servers listening/, 20_000);
  t.equal(await probe(client), 'pod-1', 'a kup started after a SIGKILLed one takes the stale lock and serves');
  third.kill('SIGTERM');
  const r3 = await thirdDone;
  t.equal(r3.code, 0, 'and exits 0 on SIGTERM');
  t.equal(await node.iptablesSave(), baseline, 'its rules are gone');
  t.notOk(existsSync(join(stateDir, 'kup.sock')), 'and so is its lock');
}

t.test('a second kup on the same node takes over without the rules ever changing', async (t) => {
  if (!(await requireNetns(t))) return;
  await sweepLeftovers();
  await suite(t);
});
