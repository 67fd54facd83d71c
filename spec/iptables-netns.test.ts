/**
 * Real packets through real iptables: a client namespace and a node namespace
 * joined by a veth pair. The applier runs inside the node namespace (so every
 * rule it writes stays there), a stand-in listener answers on the proxy
 * ports, and clients probe service addresses from both namespaces.
 */
import t, { type Test } from 'tap';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { ProxyPortNumbers, ServicePortKey, ServiceTable } from '../lib/core/types.js';
import type { IptablesStatus } from '../lib/iptables/applier.js';
import { createNetns, link, requireNetns, sweepLeftovers, type Netns } from './support/netns.js';
import { endpoint, fixtureToJson, servicePort, tableOf } from './support/service-fixtures.js';

const SUPPORT = 'dist/spec/support';

interface ProbeResult {
  ok: boolean;
  reply?: string;
  error?: string;
  ms: number;
}

async function probe(ns: Netns, proto: 'tcp' | 'udp', host: string, port: number, timeoutMs = 2000): Promise<ProbeResult> {
  const r = await ns.node(`${SUPPORT}/probe.js`, [proto, host, String(port), String(timeoutMs)]);
  if (r.code !== 0) throw new Error(`probe failed to run: ${r.stderr}`);
  return JSON.parse(r.stdout.trim()) as ProbeResult;
}

/** Lines a child prints on stdout, one at a time, bounded by a timeout. */
function lineReader(child: ChildProcess): (timeoutMs?: number) => Promise<string> {
  const lines: string[] = [];
  const waiters: ((l: string) => void)[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => {
    const w = waiters.shift();
    if (w) w(l);
    else lines.push(l);
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  child.on('exit', (code, signal) => {
    const err = new Error(`exited (${code ?? signal}) before printing; stderr: ${stderr.slice(-2000)}`);
    for (const w of waiters.splice(0)) w(JSON.stringify({ exited: err.message }));
  });
  return (timeoutMs = 20_000) =>
    new Promise((resolve, reject) => {
      const l = lines.shift();
      if (l !== undefined) return resolve(l);
      const timer = setTimeout(() => reject(new Error(`no output within ${timeoutMs}ms; stderr: ${stderr.slice(-2000)}`)), timeoutMs);
      waiters.push((line) => {
        clearTimeout(timer);
        resolve(line);
      });
    });
}

if (await requireNetns(t)) {
  await sweepLeftovers();
  await t.test('iptables rules with real packets', netnsSuite);
}

async function netnsSuite(t: Test): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'kup-iptables-'));
  const writeFixture = (name: string, table: ServiceTable, pp: ReadonlyMap<ServicePortKey, ProxyPortNumbers>): string => {
    const path = join(dir, `${name}.json`);
    writeFileSync(path, fixtureToJson(table, pp));
    return path;
  };

  const client = await createNetns(t, 'client');
  const node = await createNetns(t, 'node');
  const veth = await link(client, ['10.200.0.2/24', '2001:db8:200::2/64'], node, ['10.200.0.1/24', '2001:db8:200::1/64']);
  // Service addresses are not on any interface: the client reaches them through the node, as pods do.
  await client.run('ip', ['route', 'add', 'default', 'via', '10.200.0.1']);
  await client.run('ip', ['-6', 'route', 'add', 'default', 'via', '2001:db8:200::1']);
  // The node needs a route to a ClusterIP for its own connect() to get as far as nat OUTPUT; it leads only to the client namespace.
  await node.run('ip', ['route', 'add', 'default', 'via', '10.200.0.2']);
  await node.run('ip', ['-6', 'route', 'add', 'default', 'via', '2001:db8:200::2']);
  // Nodes forward (Kubernetes requires it); a load balancer IP packet that is not redirected is then filtered in FORWARD.
  await node.run('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  // Here the node forwards a refused load balancer packet back out of the
  // interface it came in on, so it would also send the client an ICMP
  // redirect, which uses up the per-peer ICMP rate limit the next
  // port-unreachable (an empty UDP service) needs. Pods sit on other
  // interfaces than the node's default route, so real nodes do not do this.
  await node.run('sysctl', ['-qw', 'net.ipv4.conf.all.send_redirects=0', `net.ipv4.conf.${veth.bIf}.send_redirects=0`]);

  const baseline4 = await node.iptablesSave('ipv4');
  const baseline6 = await node.iptablesSave('ipv6');

  const web = servicePort({
    name: 'web',
    port: 80,
    clusterIPs: ['10.96.0.10', '2001:db8:96::10'],
    nodePort: 30080,
    externalIPs: ['203.0.113.250'],
    // Pods of both families: a family without endpoints is rejected in its own rules.
    endpoints: [endpoint('10.244.0.5', 8080), endpoint('fd00:244::5', 8080)],
  });
  const dns = servicePort({
    namespace: 'kube-system',
    name: 'dns',
    portName: 'dns',
    protocol: 'UDP',
    port: 53,
    clusterIPs: ['10.96.0.53'],
  });
  const emptySpec = { name: 'empty', port: 80, clusterIPs: ['10.96.0.20'], endpoints: [] };
  const empty = servicePort(emptySpec);
  const emptyUdp = servicePort({ name: 'empty-udp', protocol: 'UDP', port: 53, clusterIPs: ['10.96.0.21'], endpoints: [] });
  const lbOpen = servicePort({
    name: 'lb-open',
    port: 443,
    clusterIPs: ['10.96.0.30'],
    loadBalancerIPs: ['192.0.2.50'],
    loadBalancerSourceRanges: ['10.200.0.0/30'],
  });
  const lbClosed = servicePort({
    name: 'lb-closed',
    port: 443,
    clusterIPs: ['10.96.0.31'],
    loadBalancerIPs: ['192.0.2.51'],
    loadBalancerSourceRanges: ['198.51.100.0/24'],
  });
  const local = servicePort({
    name: 'local',
    port: 8080,
    clusterIPs: ['10.96.0.40'],
    nodePort: 30081,
    externalTrafficPolicy: 'Local',
    endpoints: [endpoint('10.244.1.5', 80, false), endpoint('10.244.0.5', 80, true)],
  });
  const proxyPorts = new Map<ServicePortKey, ProxyPortNumbers>([
    [web.key, { internal: 40001 }],
    [dns.key, { internal: 40002 }],
    [empty.key, { internal: 40003 }],
    [emptyUdp.key, { internal: 40004 }],
    [lbOpen.key, { internal: 40005 }],
    [lbClosed.key, { internal: 40006 }],
    [local.key, { internal: 40007, external: 40008 }],
  ]);
  const table = tableOf([web, dns, empty, emptyUdp, lbOpen, lbClosed, local]);
  const fixture1 = writeFixture('one', table, proxyPorts);

  const listener = node.spawnNode(`${SUPPORT}/echo-server.js`, [
    '::',
    'tcp:40001:web',
    'udp:40002:dns',
    'tcp:40003:empty',
    'udp:40004:empty-udp',
    'tcp:40005:lb-open',
    'tcp:40006:lb-closed',
    'tcp:40007:local-internal',
    'tcp:40008:local-external',
  ]);
  t.equal(await lineReader(listener)(), 'ready', 'stand-in listener is up');

  const driver = node.spawnNode(`${SUPPORT}/iptables-driver.js`, [fixture1, '300']);
  const driverLine = lineReader(driver);
  const first = JSON.parse(await driverLine()) as { ok: boolean; status: IptablesStatus };

  await t.test('first sync succeeds with the node backend', async (t) => {
    t.equal(first.ok, true, 'sync reported success');
    t.equal(first.status.backend, 'nft', 'the node namespace uses the default (nf_tables) iptables');
    t.equal(first.status.commentSupported, true);
    t.same(first.status.hostIPs, { ipv4: '10.200.0.1', ipv6: '2001:db8:200::1' }, 'host-originated traffic goes to the node address');
    t.equal(first.status.consecutiveFailures, 0);
    t.equal(first.status.lastError, null);
    t.ok(first.status.lastSuccessTime !== null && first.status.lastSuccessTime > 0, 'last success time set');
  });

  await t.test('from another namespace', async (t) => {
    t.match(await probe(client, 'tcp', '10.96.0.10', 80), { ok: true, reply: 'web' }, 'ClusterIP TCP');
    t.match(await probe(client, 'tcp', '2001:db8:96::10', 80), { ok: true, reply: 'web' }, 'IPv6 ClusterIP TCP');
    t.match(await probe(client, 'tcp', '10.200.0.1', 30080), { ok: true, reply: 'web' }, 'NodePort on the node address');
    t.match(await probe(client, 'tcp', '203.0.113.250', 80), { ok: true, reply: 'web' }, 'externalIP');
    t.match(await probe(client, 'udp', '10.96.0.53', 53), { ok: true, reply: 'dns' }, 'UDP ClusterIP (reply from the ClusterIP)');
    t.match(
      await probe(client, 'tcp', '10.96.0.40', 8080),
      { ok: true, reply: 'local-internal' },
      'ETP Local: ClusterIP goes to the internal listener',
    );
    t.match(
      await probe(client, 'tcp', '10.200.0.1', 30081),
      { ok: true, reply: 'local-external' },
      'ETP Local: NodePort goes to the external listener',
    );
    t.match(await probe(client, 'tcp', '192.0.2.50', 443), { ok: true, reply: 'lb-open' }, 'LB IP from a source in range');
    // Dropped as kube-proxy does: no reset, the client's connect just times out.
    const closed = await probe(client, 'tcp', '192.0.2.51', 443, 1500);
    t.match(closed, { ok: false, error: 'TIMEOUT' }, 'LB IP from a source out of range is dropped');
    t.match(await probe(client, 'tcp', '10.96.0.31', 443), { ok: true, reply: 'lb-closed' }, 'source ranges do not restrict the ClusterIP');
  });

  await t.test('from the node itself (nat OUTPUT)', async (t) => {
    t.match(await probe(node, 'tcp', '10.96.0.10', 80), { ok: true, reply: 'web' }, 'ClusterIP TCP');
    t.match(await probe(node, 'tcp', '2001:db8:96::10', 80), { ok: true, reply: 'web' }, 'IPv6 ClusterIP TCP');
    t.match(await probe(node, 'udp', '10.96.0.53', 53), { ok: true, reply: 'dns' }, 'UDP ClusterIP, reply accepted by a connected socket');
    t.match(await probe(node, 'tcp', '10.200.0.1', 30080), { ok: true, reply: 'web' }, 'NodePort on its own address');
    t.match(await probe(node, 'tcp', '203.0.113.250', 80), { ok: true, reply: 'web' }, 'externalIP');
  });

  await t.test('a service port without endpoints is refused at once', async (t) => {
    const tcp = await probe(client, 'tcp', '10.96.0.20', 80, 3000);
    t.match(tcp, { ok: false, error: 'ECONNREFUSED' }, 'TCP: connection refused');
    t.ok(tcp.ms < 1000, `refused in ${tcp.ms}ms, not a timeout`);
    t.match(await probe(node, 'tcp', '10.96.0.20', 80, 3000), { ok: false, error: 'ECONNREFUSED' }, 'TCP from the node: refused');
    const udp = await probe(client, 'udp', '10.96.0.21', 53, 3000);
    t.match(udp, { ok: false, error: 'ECONNREFUSED' }, 'UDP: port unreachable');
    t.ok(udp.ms < 1000, `refused in ${udp.ms}ms`);
  });

  await t.test('the REJECT goes away when endpoints arrive', async (t) => {
    const withEndpoints = tableOf([
      web,
      dns,
      servicePort({ ...emptySpec, endpoints: [endpoint('10.244.0.9', 80)] }),
      emptyUdp,
      lbOpen,
      lbClosed,
      local,
    ]);
    driver.stdin!.write(writeFixture('two', withEndpoints, proxyPorts) + '\n');
    const r = JSON.parse(await driverLine()) as { ok: boolean };
    t.equal(r.ok, true, 'second sync succeeded');
    t.match(await probe(client, 'tcp', '10.96.0.20', 80), { ok: true, reply: 'empty' }, 'now reaches the listener');
    driver.stdin!.write(fixture1 + '\n');
    t.equal((JSON.parse(await driverLine()) as { ok: boolean }).ok, true, 'back to the first table');
    t.match(await probe(client, 'tcp', '10.96.0.20', 80), { ok: false, error: 'ECONNREFUSED' }, 'refused again');
  });

  await t.test('a rule deleted by hand is restored by the periodic resync', async (t) => {
    const before = await node.iptablesSave('ipv4');
    const rule = before.split('\n').find((l) => l.startsWith('-A KUP-PORTALS-CONTAINER') && l.includes('10.96.0.10/32'));
    t.ok(rule, 'the ClusterIP portal is there');
    // Deleted as an operator would; the exit status says each was there and is
    // gone (an iptables-save right after would race the periodic resync).
    const del = async (line: string): Promise<number | null> =>
      (
        await node.exec('iptables', [
          '-t',
          'nat',
          '-D',
          ...line
            .slice(3)
            .split(' ')
            .map((a) => a.replace(/^"|"$/g, '')),
        ])
      ).code;
    t.equal(await del(rule!), 0, 'the portal rule is deleted by hand');
    const jump = before.split('\n').find((l) => l.startsWith('-A PREROUTING') && l.includes('KUP-PORTALS-CONTAINER'));
    t.equal(await del(jump!), 0, 'and the PREROUTING jump');
    let restored = false;
    for (let i = 0; i < 50 && !restored; i++) {
      await new Promise((r) => setTimeout(r, 100));
      restored = (await node.iptablesSave('ipv4')) === before;
    }
    t.ok(restored, 'iptables-save is back to what it was');
    t.match(await probe(client, 'tcp', '10.96.0.10', 80), { ok: true, reply: 'web' }, 'and traffic flows again');
  });

  await t.test('SIGTERM removes every rule and chain', async (t) => {
    driver.kill('SIGTERM');
    const [code] = (await once(driver, 'exit')) as [number | null];
    t.equal(code, 0, 'driver exited cleanly');
    t.equal(await node.iptablesSave('ipv4'), baseline4, 'IPv4 nat and filter as before');
    t.equal(await node.iptablesSave('ipv6'), baseline6, 'IPv6 nat and filter as before');
    t.match(await probe(client, 'tcp', '10.96.0.10', 80, 500), { ok: false }, 'the ClusterIP no longer answers');
  });

  await t.test('kup cleanup (and kup run --cleanup) removes leftovers of a killed run, and is idempotent', async (t) => {
    const crashed = node.spawnNode(`${SUPPORT}/iptables-driver.js`, [fixture1, '0']);
    t.equal((JSON.parse(await lineReader(crashed)()) as { ok: boolean }).ok, true, 'rules applied');
    crashed.kill('SIGKILL');
    await once(crashed, 'exit');
    t.match(await node.iptablesSave('ipv4'), /KUP-PORTALS-CONTAINER/, 'a killed run leaves its rules');
    // As users run it: `kup cleanup`, then kube-proxy's spelling `kup run --cleanup` on what is left (nothing).
    for (const [round, args] of [
      [1, ['cleanup']],
      [2, ['run', '--cleanup']],
    ] as const) {
      const r = await node.node('dist/bin/kup.js', args);
      t.equal(r.code, 0, `cleanup #${round} exits 0 ${r.stderr}`);
      t.equal(await node.iptablesSave('ipv4'), baseline4, `IPv4 as before after cleanup #${round}`);
      t.equal(await node.iptablesSave('ipv6'), baseline6, `IPv6 as before after cleanup #${round}`);
    }
  });

  await t.test('a restart flushes the leftovers and rebuilds', async (t) => {
    const a = node.spawnNode(`${SUPPORT}/iptables-driver.js`, [fixture1, '0']);
    t.equal((JSON.parse(await lineReader(a)()) as { ok: boolean }).ok, true);
    const applied = await node.iptablesSave('ipv4');
    a.kill('SIGKILL');
    await once(a, 'exit');
    const b = node.spawnNode(`${SUPPORT}/iptables-driver.js`, [fixture1, '0']);
    t.equal((JSON.parse(await lineReader(b)()) as { ok: boolean }).ok, true);
    t.equal(await node.iptablesSave('ipv4'), applied, 'same rules, each jump exactly once');
    b.kill('SIGTERM');
    await once(b, 'exit');
    t.equal(await node.iptablesSave('ipv4'), baseline4, 'removed on SIGTERM');
  });
}
