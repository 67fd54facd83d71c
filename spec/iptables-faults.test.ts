/**
 * iptables-restore failing, with real iptables in namespaces: `kup run` keeps
 * serving (no crash), logs the failure with the binary's stderr, reports it
 * in health, and retries until the rules are in. The failure itself is
 * injected by a wrapper ahead of the real binary on PATH (a transient kernel
 * or lock failure cannot be produced on demand); everything else is real.
 */
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import t, { type Test } from 'tap';
import { KUP } from './support/cli.js';
import { createNetns, link, NODE_BIN, requireNetns, sweepLeftovers, WEB_CLUSTER_YAML, type Netns } from './support/netns.js';
import { waitFor } from './support/wait.js';

const SUPPORT = 'dist/spec/support';

async function probe(ns: Netns, host: string, port: number): Promise<{ ok: boolean; reply?: string; error?: string }> {
  const r = await ns.node(`${SUPPORT}/probe.js`, ['tcp', host, String(port), '1500']);
  return JSON.parse(r.stdout.trim()) as { ok: boolean; reply?: string; error?: string };
}

async function healthz(ns: Netns): Promise<number> {
  const r = await ns.exec(NODE_BIN, [
    '-e',
    "require('http').get('http://127.0.0.1:10256/healthz',r=>{console.log(r.statusCode);process.exit(0)}).on('error',()=>{console.log(0);process.exit(0)})",
  ]);
  return Number(r.stdout.trim());
}

/** One sample of kup's /metrics inside the namespace (-1 when absent). */
async function metric(ns: Netns, name: string): Promise<number> {
  const r = await ns.exec(NODE_BIN, [
    '-e',
    `require('http').get('http://127.0.0.1:10249/metrics',r=>{let b='';r.on('data',d=>b+=d);r.on('end',()=>{const l=b.split('\\n').find(l=>l.startsWith(${JSON.stringify(name + ' ')}));console.log(l===undefined?-1:Number(l.split(' ')[1]))})}).on('error',()=>console.log(-1))`,
  ]);
  return Number(r.stdout.trim());
}

async function suite(t: Test): Promise<void> {
  const client = await createNetns(t, 'client');
  const node = await createNetns(t, 'node');
  await link(client, ['10.210.0.2/24'], node, ['10.210.0.1/24']);
  await client.run('ip', ['route', 'add', 'default', 'via', '10.210.0.1']);
  const baseline = await node.iptablesSave('ipv4');
  const pod = node.spawnNode(`${SUPPORT}/echo-server.js`, ['127.0.0.1', 'tcp:8080:pod-1']);
  await new Promise((r) => createInterface({ input: pod.stdout! }).once('line', r));

  const dir = mkdtempSync(join(tmpdir(), 'kup-ipt-fault-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'cluster.yaml');
  writeFileSync(file, WEB_CLUSTER_YAML);
  const flag = join(dir, 'fail-restore');
  writeFileSync(flag, '');
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  for (const name of ['iptables-restore', 'iptables-nft-restore', 'iptables-legacy-restore']) {
    const real = ['/usr/sbin', '/sbin'].map((d) => join(d, name)).find((p) => existsSync(p));
    if (real === undefined) continue;
    writeFileSync(
      join(bin, name),
      `#!/bin/sh\nif [ -e '${flag}' ]; then echo "${name}: line 4 failed: injected fault" >&2; exit 1; fi\nexec '${real}' "$@"\n`,
    );
    chmodSync(join(bin, name), 0o755);
  }

  const kup = spawn(
    'ip',
    [
      'netns',
      'exec',
      node.name,
      'env',
      `PATH=${bin}:${process.env['PATH'] ?? ''}`,
      NODE_BIN,
      KUP,
      'run',
      '--source',
      `file:${file}`,
      '--hostname-override',
      'node-a',
      '--sync-period',
      '2s',
      '--min-sync-period',
      '0',
      // Inside the test's namespace: the metrics are scraped there.
      '--metrics-bind-address',
      '127.0.0.1:10249',
      // Its own lock: another test's kup in another namespace must not look like a second kup on this node.
      '--state-dir',
      join(dir, 'state'),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  kup.stderr.on('data', (d: Buffer) => (log += d.toString()));
  t.teardown(() => void kup.kill('SIGKILL'));

  await waitFor('the failure to be logged', () => /iptables sync failed/.test(log), 15_000);
  t.match(log, /injected fault/, "the binary's stderr is in the log");
  t.equal(kup.exitCode, null, 'still running');
  t.equal((await probe(client, '10.96.0.10', 80)).ok, false, 'no rules yet, so the ClusterIP is not reachable');
  // Each poll spawns a node in the namespace: every 250ms is plenty.
  let health = 0;
  await waitFor('health to turn 503', async () => (health = await healthz(node)) === 503, 15_000, 250);
  t.equal(health, 503, 'health says 503 while syncs fail');
  t.ok(
    (await metric(node, 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv4"}')) >= 1,
    'each failed restore is counted',
  );

  rmSync(flag);
  let r: { ok: boolean; reply?: string } = { ok: false };
  await waitFor('the ClusterIP to work', async () => (r = await probe(client, '10.96.0.10', 80)).ok, 40_000, 250);
  t.equal(r.reply, 'pod-1', 'retried with backoff until the rules went in: the ClusterIP works');
  await waitFor('health to turn 200', async () => (health = await healthz(node)) === 200, 15_000, 250);
  t.equal(health, 200, 'and health is 200 again');
  const failures = await metric(node, 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv4"}');
  t.equal(failures, log.match(/iptables sync failed/g)?.length ?? 0, 'one count per failed restore, as logged');
  t.ok(failures >= 1, `${failures} failures counted`);
  // The rules kup's restore script put in its own chains of the nat table (its jumps from PREROUTING/OUTPUT are not in the script, as in kube-proxy).
  const save = await node.iptablesSave('ipv4');
  const nat = save.slice(save.indexOf('*nat'));
  const natRules = nat
    .slice(0, nat.indexOf('COMMIT'))
    .split('\n')
    .filter((l) => l.startsWith('-A KUP-')).length;
  t.ok(natRules > 0, 'kup has nat rules');
  t.equal(
    await metric(node, 'kubeproxy_sync_proxy_rules_iptables_total{table="nat",ip_family="IPv4"}'),
    natRules,
    'iptables_total counts exactly the nat rules installed',
  );
  await new Promise((r) => setTimeout(r, 2500));
  t.equal(
    await metric(node, 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family="IPv4"}'),
    failures,
    'a successful sync adds none',
  );

  kup.kill('SIGTERM');
  const [code] = await new Promise<[number | null]>((res) => kup.once('exit', (c) => res([c])));
  t.equal(code, 0, 'exit 0');
  t.equal(await node.iptablesSave('ipv4'), baseline, 'rules removed on SIGTERM');
}

if (await requireNetns(t)) {
  await sweepLeftovers();
  await t.test('iptables-restore failing: keep serving, report, retry', suite);
}
