/**
 * `kup cleanup --kube-proxy-rules` through the real CLI, in a network
 * namespace holding what a node running kube-proxy in iptables mode holds:
 * kube-proxy's chains and jumps, kubelet's chains, a user's rule and kup's own
 * chains. Exactly kube-proxy's must go; a second run changes nothing.
 */
import t from 'tap';
import { createNetns, requireNetns, sweepLeftovers, type Netns } from './support/netns.js';
import { renderKubeProxyCleanup } from '../lib/iptables/kube-proxy-cleanup.js';

/** Kubelet's chains, a user's rule and a kup leftover: none of them kube-proxy's. */
const OTHERS_V4 = `*mangle
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
*nat
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-MARK-DROP - [0:0]
:KUP-PORTALS-CONTAINER - [0:0]
:USER-NAT - [0:0]
-A PREROUTING -j KUP-PORTALS-CONTAINER
-A PREROUTING -p tcp --dport 2222 -j USER-NAT
-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000
-A USER-NAT -p tcp -j REDIRECT --to-ports 22
COMMIT
*filter
:KUBE-FIREWALL - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
-A INPUT -j KUBE-FIREWALL
-A INPUT -p tcp --dport 22 -j ACCEPT
-A OUTPUT -j KUBE-FIREWALL
-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
COMMIT
`;

/** As kube-proxy 1.33 in iptables mode writes them for one ClusterIP+NodePort service with one endpoint. */
const KUBE_PROXY_V4 = `*mangle
:KUBE-PROXY-CANARY - [0:0]
COMMIT
*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-PROXY-CANARY - [0:0]
:KUBE-SVC-LOLE4ISW44XBNF3G - [0:0]
:KUBE-EXT-LOLE4ISW44XBNF3G - [0:0]
:KUBE-SEP-2BKJOGXWVDIMLXQ6 - [0:0]
-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-I OUTPUT 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-I POSTROUTING 1 -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "default/web cluster IP" -m tcp --dport 80 -j KUBE-SVC-LOLE4ISW44XBNF3G
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -p tcp -m comment --comment "default/web" -m tcp --dport 30080 -j KUBE-EXT-LOLE4ISW44XBNF3G
-A KUBE-EXT-LOLE4ISW44XBNF3G -m comment --comment "masquerade traffic for default/web external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-LOLE4ISW44XBNF3G -j KUBE-SVC-LOLE4ISW44XBNF3G
-A KUBE-SVC-LOLE4ISW44XBNF3G ! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m comment --comment "default/web cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
-A KUBE-SVC-LOLE4ISW44XBNF3G -m comment --comment "default/web -> 10.244.1.5:8080" -j KUBE-SEP-2BKJOGXWVDIMLXQ6
-A KUBE-SEP-2BKJOGXWVDIMLXQ6 -s 10.244.1.5/32 -m comment --comment "default/web" -j KUBE-MARK-MASQ
-A KUBE-SEP-2BKJOGXWVDIMLXQ6 -p tcp -m comment --comment "default/web" -m tcp -j DNAT --to-destination 10.244.1.5:8080
COMMIT
*filter
:KUBE-SERVICES - [0:0]
:KUBE-EXTERNAL-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-PROXY-FIREWALL - [0:0]
:KUBE-PROXY-CANARY - [0:0]
-I INPUT 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-I INPUT 2 -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS
-I INPUT 3 -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES
-I OUTPUT 1 -m conntrack --ctstate NEW -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL
-I OUTPUT 2 -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A KUBE-SERVICES -d 10.96.0.99/32 -p tcp -m comment --comment "default/empty has no endpoints" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable
COMMIT
`;

/** A user's IPv6 rule (it also makes the nat table exist beforehand: with the nft backend a table, once there, stays). */
const OTHERS_V6 = `*nat
-A PREROUTING -p tcp --dport 2222 -j REDIRECT --to-ports 22
COMMIT
`;

const KUBE_PROXY_V6 = `*nat
:KUBE-SERVICES - [0:0]
:KUBE-SVC-ABCDEFGHIJKLMNOP - [0:0]
-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-I OUTPUT 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d fd00:96::10/128 -p tcp -m comment --comment "default/web cluster IP" -m tcp --dport 80 -j KUBE-SVC-ABCDEFGHIJKLMNOP
COMMIT
`;

/** Every table as iptables-save prints it, without counters and comment lines. */
async function saveAll(ns: Netns, family: 'ipv4' | 'ipv6'): Promise<string> {
  const text = await ns.run(family === 'ipv4' ? 'iptables-save' : 'ip6tables-save', []);
  return text
    .split('\n')
    .filter((l) => !l.startsWith('#') && l.trim() !== '')
    .map((l) => l.replace(/\[\d+:\d+\]/, '[0:0]'))
    .join('\n');
}

t.test('renderKubeProxyCleanup keeps a chain a foreign chain still jumps to, and what it reaches', (t) => {
  const save = `*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-X - [0:0]
:CNI-HOSTPORT - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A CNI-HOSTPORT -j KUBE-SVC-X
-A KUBE-SERVICES -j KUBE-SVC-X
-A KUBE-SVC-X -j KUBE-MARK-MASQ
COMMIT
`;
  const r = renderKubeProxyCleanup(save);
  t.same(r.removed, ['nat/KUBE-SERVICES'], 'only the unreferenced chain goes');
  t.same(
    r.kept,
    [
      "nat/KUBE-SVC-X kept: chain CNI-HOSTPORT (not kube-proxy's) still jumps to it",
      "nat/KUBE-MARK-MASQ kept: chain KUBE-SVC-X (not kube-proxy's) still jumps to it",
    ],
    'each kept chain is named with the reason',
  );
  t.equal(r.script, '*nat\n-D PREROUTING -j KUBE-SERVICES\n:KUBE-SERVICES - [0:0]\n-X KUBE-SERVICES\nCOMMIT\n');
  t.equal(
    renderKubeProxyCleanup('*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-FIREWALL - [0:0]\nCOMMIT\n').script,
    '',
    "nothing of kube-proxy's: empty script",
  );
  t.end();
});

if (await requireNetns(t)) {
  await sweepLeftovers();
  await t.test('kup cleanup --kube-proxy-rules removes exactly kube-proxy iptables-mode rules', async (t) => {
    const node = await createNetns(t, 'kp');
    await node.run('iptables-restore', ['--noflush'], OTHERS_V4);
    await node.run('ip6tables-restore', ['--noflush'], OTHERS_V6);
    const baseline4 = await saveAll(node, 'ipv4');
    const baseline6 = await saveAll(node, 'ipv6');
    await node.run('iptables-restore', ['--noflush'], KUBE_PROXY_V4);
    await node.run('ip6tables-restore', ['--noflush'], KUBE_PROXY_V6);
    const before = await saveAll(node, 'ipv4');
    for (const chain of [
      'KUBE-SERVICES',
      'KUBE-SVC-LOLE4ISW44XBNF3G',
      'KUBE-SEP-2BKJOGXWVDIMLXQ6',
      'KUBE-PROXY-FIREWALL',
      'KUBE-FORWARD',
    ]) {
      t.match(before, new RegExp(`^:${chain} `, 'm'), `${chain} installed`);
    }
    t.match(await saveAll(node, 'ipv6'), /-j KUBE-SERVICES/, 'IPv6 jump installed');

    for (const round of [1, 2]) {
      const r = await node.node('dist/bin/kup.js', ['cleanup', '--kube-proxy-rules']);
      t.equal(r.code, 0, `run #${round} exits 0 ${r.stderr}`);
      t.match(r.stdout + r.stderr, /no kube-proxy iptables rules remain/, `run #${round} says so`);
      const after4 = await saveAll(node, 'ipv4');
      t.equal(after4, baseline4, `run #${round}: IPv4 is exactly as before kube-proxy (kubelet's, the user's and kup's chains untouched)`);
      t.equal(await saveAll(node, 'ipv6'), baseline6, `run #${round}: IPv6 is exactly as before kube-proxy`);
      t.notMatch(
        after4,
        /KUBE-(SERVICES|SVC-|SEP-|EXT-|NODEPORTS|POSTROUTING|MARK-MASQ|FORWARD|PROXY-)/,
        `run #${round}: no kube-proxy chain or jump left`,
      );
      t.match(after4, /^:KUBE-FIREWALL /m, "kubelet's KUBE-FIREWALL stays");
    }
    const kupOwn = await node.node('dist/bin/kup.js', ['cleanup']);
    t.equal(kupOwn.code, 0, 'plain kup cleanup still removes kup chains');
    t.notMatch(await saveAll(node, 'ipv4'), /KUP-/, 'and only it does');
  });
}
