/**
 * Golden tests for the pure renderer: the exact iptables-restore text for a
 * fixture table. A change here changes what runs on every node, so it must
 * be deliberate.
 */
import t from 'tap';
import type { ProxyPortNumbers, ServicePortKey } from '../lib/core/types.js';
import { formatJumpRule, jumpRules, renderCleanup, renderRules, sanitizeComment, type RenderInput } from '../lib/iptables/render.js';
import { endpoint, servicePort, tableOf } from './support/service-fixtures.js';

const web = servicePort({
  name: 'web',
  portName: 'http',
  port: 80,
  clusterIPs: ['10.96.0.10', 'fd00:96::10'],
  nodePort: 30080,
  endpoints: [endpoint('10.244.0.5', 8080), endpoint('fd00:244::5', 8080)],
});
const dnsUdp = servicePort({
  namespace: 'kube-system',
  name: 'dns',
  portName: 'dns',
  protocol: 'UDP',
  port: 53,
  clusterIPs: ['10.96.0.53'],
});
const dnsTcp = servicePort({
  namespace: 'kube-system',
  name: 'dns',
  portName: 'dns-tcp',
  protocol: 'TCP',
  port: 53,
  clusterIPs: ['10.96.0.53'],
});
const ext = servicePort({ name: 'ext', port: 8443, clusterIPs: ['10.96.0.20'], externalIPs: ['203.0.113.250', '2001:db8::250'] });
const lb = servicePort({
  name: 'lb',
  port: 443,
  clusterIPs: ['10.96.0.30'],
  nodePort: 30443,
  loadBalancerIPs: ['192.0.2.50', '2001:db8::50'],
  loadBalancerSourceRanges: ['198.51.100.0/24', '203.0.113.0/25'],
});
const local = servicePort({
  name: 'local',
  port: 8080,
  clusterIPs: ['10.96.0.40'],
  nodePort: 30081,
  externalTrafficPolicy: 'Local',
  endpoints: [endpoint('10.244.1.5', 80, false), endpoint('10.244.0.5', 80, true)],
});
const empty = servicePort({ name: 'empty', port: 80, clusterIPs: ['10.96.0.50'], nodePort: 30050, endpoints: [] });
const emptyUdp = servicePort({ name: 'empty-udp', protocol: 'UDP', port: 5353, clusterIPs: ['fd00:96::51'], endpoints: [] });

const table = tableOf([web, dnsUdp, dnsTcp, ext, lb, local, empty, emptyUdp]);
const proxyPorts = new Map<ServicePortKey, ProxyPortNumbers>([
  [web.key, { internal: 40001 }],
  [dnsUdp.key, { internal: 40002 }],
  [dnsTcp.key, { internal: 40003 }],
  [ext.key, { internal: 40004 }],
  [lb.key, { internal: 40005 }],
  [local.key, { internal: 40006, external: 40007 }],
  [empty.key, { internal: 40008 }],
  [emptyUdp.key, { internal: 40009 }],
]);
const base: RenderInput = {
  table,
  proxyPorts,
  bindAddress: '0.0.0.0',
  hostIPs: { ipv4: '10.0.0.5', ipv6: '2001:db8:1::5' },
  commentSupported: true,
};

const GOLDEN_V4 = `*nat
:KUP-PORTALS-CONTAINER - [0:0]
:KUP-PORTALS-HOST - [0:0]
:KUP-NODEPORT-CONTAINER - [0:0]
:KUP-NODEPORT-HOST - [0:0]
-A KUP-PORTALS-CONTAINER -d 10.96.0.50/32 -m comment --comment default/empty:80 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 40008
-A KUP-PORTALS-CONTAINER -d 10.96.0.20/32 -m comment --comment default/ext:8443 -p tcp -m tcp --dport 8443 -j REDIRECT --to-ports 40004
-A KUP-PORTALS-CONTAINER -d 203.0.113.250/32 -m comment --comment default/ext:8443 -p tcp -m tcp --dport 8443 -j REDIRECT --to-ports 40004
-A KUP-PORTALS-CONTAINER -d 10.96.0.30/32 -m comment --comment default/lb:443 -p tcp -m tcp --dport 443 -j REDIRECT --to-ports 40005
-A KUP-PORTALS-CONTAINER -s 198.51.100.0/24 -d 192.0.2.50/32 -m comment --comment default/lb:443 -p tcp -m tcp --dport 443 -j REDIRECT --to-ports 40005
-A KUP-PORTALS-CONTAINER -s 203.0.113.0/25 -d 192.0.2.50/32 -m comment --comment default/lb:443 -p tcp -m tcp --dport 443 -j REDIRECT --to-ports 40005
-A KUP-PORTALS-CONTAINER -d 10.96.0.40/32 -m comment --comment default/local:8080 -p tcp -m tcp --dport 8080 -j REDIRECT --to-ports 40006
-A KUP-PORTALS-CONTAINER -d 10.96.0.10/32 -m comment --comment default/web:http -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 40001
-A KUP-PORTALS-CONTAINER -d 10.96.0.53/32 -m comment --comment kube-system/dns:dns-tcp -p tcp -m tcp --dport 53 -j REDIRECT --to-ports 40003
-A KUP-PORTALS-CONTAINER -d 10.96.0.53/32 -m comment --comment kube-system/dns:dns -p udp -m udp --dport 53 -j REDIRECT --to-ports 40002
-A KUP-PORTALS-HOST -d 10.96.0.50/32 -m comment --comment default/empty:80 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.5:40008
-A KUP-PORTALS-HOST -d 10.96.0.20/32 -m comment --comment default/ext:8443 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 10.0.0.5:40004
-A KUP-PORTALS-HOST -d 203.0.113.250/32 -m comment --comment default/ext:8443 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 10.0.0.5:40004
-A KUP-PORTALS-HOST -d 10.96.0.30/32 -m comment --comment default/lb:443 -p tcp -m tcp --dport 443 -j DNAT --to-destination 10.0.0.5:40005
-A KUP-PORTALS-HOST -s 198.51.100.0/24 -d 192.0.2.50/32 -m comment --comment default/lb:443 -p tcp -m tcp --dport 443 -j DNAT --to-destination 10.0.0.5:40005
-A KUP-PORTALS-HOST -s 203.0.113.0/25 -d 192.0.2.50/32 -m comment --comment default/lb:443 -p tcp -m tcp --dport 443 -j DNAT --to-destination 10.0.0.5:40005
-A KUP-PORTALS-HOST -d 10.96.0.40/32 -m comment --comment default/local:8080 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.0.0.5:40006
-A KUP-PORTALS-HOST -d 10.96.0.10/32 -m comment --comment default/web:http -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.5:40001
-A KUP-PORTALS-HOST -d 10.96.0.53/32 -m comment --comment kube-system/dns:dns-tcp -p tcp -m tcp --dport 53 -j DNAT --to-destination 10.0.0.5:40003
-A KUP-PORTALS-HOST -d 10.96.0.53/32 -m comment --comment kube-system/dns:dns -p udp -m udp --dport 53 -j DNAT --to-destination 10.0.0.5:40002
-A KUP-NODEPORT-CONTAINER ! -d 127.0.0.0/8 -m comment --comment default/empty:80 -p tcp -m tcp --dport 30050 -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 40008
-A KUP-NODEPORT-CONTAINER ! -d 127.0.0.0/8 -m comment --comment default/lb:443 -p tcp -m tcp --dport 30443 -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 40005
-A KUP-NODEPORT-CONTAINER ! -d 127.0.0.0/8 -m comment --comment default/local:8080 -p tcp -m tcp --dport 30081 -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 40007
-A KUP-NODEPORT-CONTAINER ! -d 127.0.0.0/8 -m comment --comment default/web:http -p tcp -m tcp --dport 30080 -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 40001
-A KUP-NODEPORT-HOST -d 127.0.0.0/8 -m comment --comment default/empty:80 -p tcp -m tcp --dport 30050 -j DNAT --to-destination 127.0.0.1:40008
-A KUP-NODEPORT-HOST ! -d 127.0.0.0/8 -m comment --comment default/empty:80 -p tcp -m tcp --dport 30050 -m addrtype --dst-type LOCAL -j DNAT --to-destination 10.0.0.5:40008
-A KUP-NODEPORT-HOST -d 127.0.0.0/8 -m comment --comment default/lb:443 -p tcp -m tcp --dport 30443 -j DNAT --to-destination 127.0.0.1:40005
-A KUP-NODEPORT-HOST ! -d 127.0.0.0/8 -m comment --comment default/lb:443 -p tcp -m tcp --dport 30443 -m addrtype --dst-type LOCAL -j DNAT --to-destination 10.0.0.5:40005
-A KUP-NODEPORT-HOST -d 127.0.0.0/8 -m comment --comment default/local:8080 -p tcp -m tcp --dport 30081 -j DNAT --to-destination 127.0.0.1:40006
-A KUP-NODEPORT-HOST ! -d 127.0.0.0/8 -m comment --comment default/local:8080 -p tcp -m tcp --dport 30081 -m addrtype --dst-type LOCAL -j DNAT --to-destination 10.0.0.5:40006
-A KUP-NODEPORT-HOST -d 127.0.0.0/8 -m comment --comment default/web:http -p tcp -m tcp --dport 30080 -j DNAT --to-destination 127.0.0.1:40001
-A KUP-NODEPORT-HOST ! -d 127.0.0.0/8 -m comment --comment default/web:http -p tcp -m tcp --dport 30080 -m addrtype --dst-type LOCAL -j DNAT --to-destination 10.0.0.5:40001
COMMIT
*filter
:KUP-PROXY-PORTS - [0:0]
:KUP-FIREWALL - [0:0]
-A KUP-PROXY-PORTS -m comment --comment default/empty:80 -p tcp -m tcp --dport 40008 -j REJECT --reject-with tcp-reset
-A KUP-PROXY-PORTS -m comment --comment default/ext:8443 -p tcp -m tcp --dport 40004 -j ACCEPT
-A KUP-PROXY-PORTS -m comment --comment default/lb:443 -p tcp -m tcp --dport 40005 -j ACCEPT
-A KUP-PROXY-PORTS -m comment --comment default/local:8080 -p tcp -m tcp --dport 40006 -j ACCEPT
-A KUP-PROXY-PORTS -m comment --comment default/local:8080 -p tcp -m tcp --dport 40007 -j ACCEPT
-A KUP-PROXY-PORTS -m comment --comment default/web:http -p tcp -m tcp --dport 40001 -j ACCEPT
-A KUP-PROXY-PORTS -m comment --comment kube-system/dns:dns-tcp -p tcp -m tcp --dport 40003 -j ACCEPT
-A KUP-PROXY-PORTS -m comment --comment kube-system/dns:dns -p udp -m udp --dport 40002 -j ACCEPT
-A KUP-FIREWALL -d 192.0.2.50/32 -m comment --comment default/lb:443 -p tcp -m tcp --dport 443 -j DROP
COMMIT
`;

const GOLDEN_V6 = `*nat
:KUP-PORTALS-CONTAINER - [0:0]
:KUP-PORTALS-HOST - [0:0]
:KUP-NODEPORT-CONTAINER - [0:0]
:KUP-NODEPORT-HOST - [0:0]
-A KUP-PORTALS-CONTAINER -d fd00:96::51/128 -m comment --comment default/empty-udp:5353 -p udp -m udp --dport 5353 -j REDIRECT --to-ports 40009
-A KUP-PORTALS-CONTAINER -d fd00:96::10/128 -m comment --comment default/web:http -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 40001
-A KUP-PORTALS-HOST -d fd00:96::51/128 -m comment --comment default/empty-udp:5353 -p udp -m udp --dport 5353 -j DNAT --to-destination [2001:db8:1::5]:40009
-A KUP-PORTALS-HOST -d fd00:96::10/128 -m comment --comment default/web:http -p tcp -m tcp --dport 80 -j DNAT --to-destination [2001:db8:1::5]:40001
-A KUP-NODEPORT-CONTAINER ! -d ::1/128 -m comment --comment default/web:http -p tcp -m tcp --dport 30080 -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 40001
-A KUP-NODEPORT-HOST ! -d ::1/128 -m comment --comment default/web:http -p tcp -m tcp --dport 30080 -m addrtype --dst-type LOCAL -j DNAT --to-destination [2001:db8:1::5]:40001
COMMIT
*filter
:KUP-PROXY-PORTS - [0:0]
:KUP-FIREWALL - [0:0]
-A KUP-PROXY-PORTS -m comment --comment default/empty-udp:5353 -p udp -m udp --dport 40009 -j REJECT --reject-with icmp6-port-unreachable
-A KUP-PROXY-PORTS -m comment --comment default/web:http -p tcp -m tcp --dport 40001 -j ACCEPT
COMMIT
`;

t.test('golden: the fixture table, both families', async (t) => {
  const r = renderRules(base);
  t.equal(r.ipv4, GOLDEN_V4, 'IPv4 restore script');
  t.equal(r.ipv6, GOLDEN_V6, 'IPv6 restore script');
  t.same(r.warnings, []);
  t.same(r.ruleCount, { ipv4: 41, ipv6: 8 });
});

t.test('rendering is deterministic whatever the table order', async (t) => {
  const reversed = tableOf([...table.values()].reverse());
  t.equal(renderRules({ ...base, table: reversed }).ipv4, GOLDEN_V4);
});

t.test('without the comment match: same rules, no comments', async (t) => {
  const r = renderRules({ ...base, commentSupported: false });
  const strip = (s: string): string => s.replace(/ -m comment --comment \S+/g, '');
  t.equal(r.ipv4, strip(GOLDEN_V4));
  t.equal(r.ipv6, strip(GOLDEN_V6));
  t.notMatch(r.ipv4 + r.ipv6, /comment/);
  for (const j of jumpRules(false)) t.notOk(j.args.includes('comment'), `${formatJumpRule(j)} has no comment`);
});

t.test('a non-wildcard bind address: DNAT to it in both chains, other family left out', async (t) => {
  const r = renderRules({ ...base, bindAddress: '10.0.0.7' });
  t.match(r.ipv4, /-A KUP-PORTALS-CONTAINER -d 10\.96\.0\.10\/32 .* -j DNAT --to-destination 10\.0\.0\.7:40001\n/);
  t.match(r.ipv4, /-A KUP-PORTALS-HOST -d 10\.96\.0\.10\/32 .* -j DNAT --to-destination 10\.0\.0\.7:40001\n/);
  t.match(r.ipv4, /-A KUP-NODEPORT-CONTAINER .* --dport 30080 .* -j DNAT --to-destination 10\.0\.0\.7:40001\n/);
  t.notMatch(r.ipv4, /REDIRECT/, 'REDIRECT would land on the interface address, which the listener does not hear');
  t.equal(r.ruleCount.ipv6, 0, 'no IPv6 rules: a DNAT cannot cross families');
  t.ok(
    r.warnings.some((w) => w.includes('ipv6 addresses not proxied')),
    'and it says so',
  );
});

t.test('without a known node address, host traffic goes to loopback', async (t) => {
  const r = renderRules({ ...base, hostIPs: {} });
  t.match(r.ipv4, /-A KUP-PORTALS-HOST -d 10\.96\.0\.10\/32 .* --to-destination 127\.0\.0\.1:40001\n/);
  t.match(r.ipv6, /-A KUP-PORTALS-HOST -d fd00:96::10\/128 .* --to-destination \[::1\]:40001\n/);
});

t.test('a service port without a listener gets no rules', async (t) => {
  const pp = new Map(proxyPorts);
  pp.delete(web.key);
  const r = renderRules({ ...base, proxyPorts: pp });
  t.notMatch(r.ipv4 + r.ipv6, /web/);
  t.same(r.warnings, [`${web.key}: no listener, no rules`]);
});

t.test('endpoints arriving remove the REJECT', async (t) => {
  const filled = servicePort({ name: 'empty', port: 80, clusterIPs: ['10.96.0.50'], nodePort: 30050 });
  const r = renderRules({ ...base, table: tableOf([...table.values()].map((sp) => (sp.key === empty.key ? filled : sp))) });
  t.notMatch(r.ipv4, /--dport 40008 -j REJECT/);
  t.match(r.ipv4, /--dport 40008 -j ACCEPT/);
});

t.test(
  'a single-stack IPv4 Service has no IPv6 rules at all, NodePort and IPv6 external addresses included (issue 13 item 4)',
  async (t) => {
    // kube-proxy's IPv6 proxier skips a Service without an IPv6 clusterIP whole.
    const v4only = servicePort({
      name: 'v4only',
      port: 443,
      clusterIPs: ['10.96.0.70'],
      nodePort: 30070,
      externalIPs: ['203.0.113.70', '2001:db8::70'],
      loadBalancerIPs: ['192.0.2.70', '2001:db8::71'],
      endpoints: [endpoint('10.244.0.7', 8443), endpoint('fd00:244::7', 8443)],
    });
    const r = renderRules({ ...base, table: tableOf([v4only]), proxyPorts: new Map([[v4only.key, { internal: 41070 }]]) });
    t.equal(r.ruleCount.ipv6, 0, 'no IPv6 rules');
    t.notMatch(r.ipv6, /30070|2001:db8::7/, 'no IPv6 NodePort, externalIP or load balancer IP');
    t.match(r.ipv4, /--dport 30070 -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 41070/, 'the IPv4 NodePort is there');
    t.same(r.warnings, []);
  },
);

t.test('a dual-stack Service whose endpoints are all IPv4: IPv6 traffic is rejected, IPv4 accepted (issue 13 item 4)', async (t) => {
  const dual = servicePort({
    name: 'dual',
    port: 80,
    clusterIPs: ['10.96.0.80', 'fd00:96::80'],
    nodePort: 30088,
    endpoints: [endpoint('10.244.0.8', 8080)],
  });
  const r = renderRules({ ...base, table: tableOf([dual]), proxyPorts: new Map([[dual.key, { internal: 41080 }]]) });
  t.match(r.ipv4, /-A KUP-PROXY-PORTS .* --dport 41080 -j ACCEPT\n/);
  t.match(
    r.ipv6,
    /-A KUP-PROXY-PORTS .* --dport 41080 -j REJECT --reject-with tcp-reset\n/,
    'no IPv6 endpoint: refused as an empty service',
  );
  t.match(r.ipv6, /-d fd00:96::80\/128 .* -j REDIRECT --to-ports 41080/, 'the IPv6 VIP is still caught, so it is refused, not routed on');
});

t.test('source ranges only in the other family block the load balancer IP entirely', async (t) => {
  const v6only = servicePort({
    name: 'lb6',
    port: 443,
    clusterIPs: ['10.96.0.60'],
    loadBalancerIPs: ['192.0.2.60'],
    loadBalancerSourceRanges: ['2001:db8:77::/48'],
  });
  const r = renderRules({ ...base, table: tableOf([v6only]), proxyPorts: new Map([[v6only.key, { internal: 41000 }]]) });
  t.notMatch(r.ipv4, /192\.0\.2\.60\/32 .*REDIRECT/, 'nobody redirected');
  t.match(r.ipv4, /-A KUP-FIREWALL -d 192\.0\.2\.60\/32 .* -j DROP\n/, 'everyone dropped');
  t.match(r.ipv4, /-d 10\.96\.0\.60\/32 .*REDIRECT --to-ports 41000/, 'the ClusterIP is unaffected');
});

t.test('hostile names and malformed addresses cannot inject rules', async (t) => {
  const hostile = servicePort({
    namespace: 'ns"; -A INPUT -j DROP',
    name: 'a b$(reboot)\n-A OUTPUT -j DROP\nCOMMIT',
    portName: 'it\'s "quoted"',
    port: 80,
    clusterIPs: ['10.96.0.70', '10.96.0.71 -j DROP', '10.96.0.72/32', 'not-an-ip', 'fe80::1%eth0'],
    externalIPs: ['$(id)'],
    loadBalancerIPs: ['192.0.2.70'],
    loadBalancerSourceRanges: ['198.51.100.0/24 -j ACCEPT', '0.0.0.0/33', '198.51.100.0/24'],
  });
  const r = renderRules({ ...base, table: tableOf([hostile]), proxyPorts: new Map([[hostile.key, { internal: 41001 }]]) });
  const lines = r.ipv4.split('\n').filter((l) => l !== '');
  t.same(
    lines.filter((l) => !l.startsWith('-A KUP-') && !l.startsWith(':KUP-')),
    ['*nat', 'COMMIT', '*filter', 'COMMIT'],
    'every line is a table marker, one of our chains, or a rule appended to one of our chains',
  );
  for (const l of lines.filter((l) => l.startsWith('-A '))) {
    t.match(l, /^-A KUP-[A-Z-]+ (! )?(-[sd] \S+ )*-m comment --comment [A-Za-z0-9_.:/-]+ -p tcp -m tcp --dport \d+ /, `well-formed: ${l}`);
    // The one DROP of our own: blocked sources of the LB IP.
    const ours = /^-A KUP-FIREWALL -d 192\.0\.2\.70\/32 -m comment --comment \S+ -p tcp -m tcp --dport 80 -j DROP$/.test(l);
    t.notMatch(ours ? '' : l, /["'$()\s]-j DROP|\$\(|"/, 'nothing of the names survives unsanitised');
  }
  t.match(r.ipv4, /-d 10\.96\.0\.70\/32 /, 'the valid ClusterIP is kept');
  t.notMatch(r.ipv4, /10\.96\.0\.7[12]/, 'malformed ClusterIPs are dropped');
  t.match(r.ipv4, /-s 198\.51\.100\.0\/24 -d 192\.0\.2\.70\/32 /, 'the valid source range is kept');
  t.equal(r.warnings.length, 7, 'each dropped value is reported');
  t.equal(sanitizeComment('a"b\nc$(d)'), 'a_b_c__d_');
  t.equal(sanitizeComment('x'.repeat(300)).length, 200, 'comments stay under the match limit (256)');
});

t.test('invalid ports and bind addresses render nothing', async (t) => {
  const r1 = renderRules({ ...base, proxyPorts: new Map([[web.key, { internal: 70000 }]]), table: tableOf([web]) });
  t.equal(r1.ruleCount.ipv4 + r1.ruleCount.ipv6, 0);
  t.match(r1.warnings[0], /invalid port number/);
  const r2 = renderRules({ ...base, bindAddress: '10.0.0.1; rm -rf /' });
  t.equal(r2.ruleCount.ipv4 + r2.ruleCount.ipv6, 0);
  t.match(r2.warnings[0], /not an IP address/);
});

t.test('jump rules: portals first, NodePorts last', async (t) => {
  t.same(jumpRules(true).map(formatJumpRule), [
    '-t nat -I PREROUTING -m comment --comment kup-service-portals -j KUP-PORTALS-CONTAINER',
    '-t nat -I OUTPUT -m comment --comment kup-service-portals -j KUP-PORTALS-HOST',
    '-t nat -A PREROUTING -m comment --comment kup-nodeports -j KUP-NODEPORT-CONTAINER',
    '-t nat -A OUTPUT -m comment --comment kup-nodeports -j KUP-NODEPORT-HOST',
    '-t filter -I INPUT -m comment --comment kup-proxy-ports -j KUP-PROXY-PORTS',
    '-t filter -I INPUT -m comment --comment kup-lb-source-ranges -j KUP-FIREWALL',
    '-t filter -I FORWARD -m comment --comment kup-lb-source-ranges -j KUP-FIREWALL',
    '-t filter -I OUTPUT -m comment --comment kup-lb-source-ranges -j KUP-FIREWALL',
  ]);
});

t.test('cleanup script from iptables-save: only our traces, nothing on a clean node', async (t) => {
  const save = `# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUP-PORTALS-CONTAINER - [0:0]
:KUP-NODEPORT-HOST - [0:0]
-A PREROUTING -m comment --comment kup-service-portals -j KUP-PORTALS-CONTAINER
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -j KUP-NODEPORT-HOST
-A KUP-PORTALS-CONTAINER -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 40001
COMMIT
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j ACCEPT
COMMIT
`;
  t.equal(
    renderCleanup(save),
    `*nat
-D PREROUTING -m comment --comment kup-service-portals -j KUP-PORTALS-CONTAINER
-D OUTPUT -j KUP-NODEPORT-HOST
:KUP-PORTALS-CONTAINER - [0:0]
:KUP-NODEPORT-HOST - [0:0]
-X KUP-PORTALS-CONTAINER
-X KUP-NODEPORT-HOST
COMMIT
`,
    "kube-proxy's KUBE-* chains and other rules are untouched",
  );
  t.equal(renderCleanup('*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n'), '', 'nothing to do');
});

// Issue 13 items 1-3: which listener each source reaches, and DROP vs REJECT.
const remoteOnly = [endpoint('10.244.1.9', 80, false)];
const bothLocal = servicePort({
  name: 'both-local',
  port: 80,
  clusterIPs: ['10.96.1.1'],
  nodePort: 31001,
  externalIPs: ['203.0.113.91'],
  loadBalancerIPs: ['192.0.2.91'],
  internalTrafficPolicy: 'Local',
  externalTrafficPolicy: 'Local',
  endpoints: remoteOnly,
});
const itpLocal = servicePort({
  name: 'itp-local',
  port: 80,
  clusterIPs: ['10.96.1.2'],
  nodePort: 31002,
  internalTrafficPolicy: 'Local',
  endpoints: remoteOnly,
});
const policyTable = tableOf([bothLocal, itpLocal]);
const policyPorts = new Map<ServicePortKey, ProxyPortNumbers>([
  [bothLocal.key, { internal: 42001, cluster: 42002 }],
  [itpLocal.key, { internal: 42003, external: 42004 }],
]);
const policyBase: RenderInput = { ...base, table: policyTable, proxyPorts: policyPorts, commentSupported: false };
const rulesOf = (text: string, chain: string): string[] => text.split('\n').filter((l) => l.startsWith(`-A ${chain} `));

t.test("the node's own traffic to external addresses goes to all cluster endpoints; its ClusterIP traffic keeps iTP", async (t) => {
  const r = renderRules(policyBase);
  t.same(rulesOf(r.ipv4, 'KUP-PORTALS-HOST'), [
    '-A KUP-PORTALS-HOST -d 10.96.1.1/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.5:42001',
    '-A KUP-PORTALS-HOST -d 203.0.113.91/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.5:42002',
    '-A KUP-PORTALS-HOST -d 192.0.2.91/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.5:42002',
    '-A KUP-PORTALS-HOST -d 10.96.1.2/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.5:42003',
  ]);
  t.same(rulesOf(r.ipv4, 'KUP-NODEPORT-HOST'), [
    // Localhost NodePorts reach the same all-endpoints listener, through loopback.
    '-A KUP-NODEPORT-HOST -d 127.0.0.0/8 -p tcp -m tcp --dport 31001 -j DNAT --to-destination 127.0.0.1:42002',
    '-A KUP-NODEPORT-HOST ! -d 127.0.0.0/8 -p tcp -m tcp --dport 31001 -m addrtype --dst-type LOCAL -j DNAT --to-destination 10.0.0.5:42002',
    // iTP Local, eTP Cluster: the external listener already balances over every endpoint.
    '-A KUP-NODEPORT-HOST -d 127.0.0.0/8 -p tcp -m tcp --dport 31002 -j DNAT --to-destination 127.0.0.1:42004',
    '-A KUP-NODEPORT-HOST ! -d 127.0.0.0/8 -p tcp -m tcp --dport 31002 -m addrtype --dst-type LOCAL -j DNAT --to-destination 10.0.0.5:42004',
  ]);
  t.same(
    rulesOf(r.ipv4, 'KUP-PORTALS-CONTAINER').map((l) => l.replace(/.* -j /, '')),
    ['REDIRECT --to-ports 42001', 'REDIRECT --to-ports 42001', 'REDIRECT --to-ports 42001', 'REDIRECT --to-ports 42003'],
    'traffic arriving on the node keeps its policies (no detector)',
  );
});

t.test('Local policy with no local endpoint: DROP at that listener only; no endpoint at all: REJECT', async (t) => {
  const r = renderRules(policyBase);
  t.same(rulesOf(r.ipv4, 'KUP-PROXY-PORTS'), [
    '-A KUP-PROXY-PORTS -p tcp -m tcp --dport 42001 -m conntrack --ctstate NEW -j DROP',
    '-A KUP-PROXY-PORTS -p tcp -m tcp --dport 42001 -j ACCEPT',
    '-A KUP-PROXY-PORTS -p tcp -m tcp --dport 42002 -j ACCEPT',
    '-A KUP-PROXY-PORTS -p tcp -m tcp --dport 42003 -m conntrack --ctstate NEW -j DROP',
    '-A KUP-PROXY-PORTS -p tcp -m tcp --dport 42003 -j ACCEPT',
    '-A KUP-PROXY-PORTS -p tcp -m tcp --dport 42004 -j ACCEPT',
  ]);
  const none = servicePort({ ...bothLocalSpec(), endpoints: [] });
  const r2 = renderRules({ ...policyBase, table: tableOf([none]) });
  t.same(rulesOf(r2.ipv4, 'KUP-PROXY-PORTS'), [
    '-A KUP-PROXY-PORTS -p tcp -m tcp --dport 42001 -j REJECT --reject-with tcp-reset',
    '-A KUP-PROXY-PORTS -p tcp -m tcp --dport 42002 -j REJECT --reject-with tcp-reset',
  ]);
  const withLocal = servicePort({ ...bothLocalSpec(), endpoints: [...remoteOnly, endpoint('10.244.0.9', 80, true)] });
  t.notMatch(renderRules({ ...policyBase, table: tableOf([withLocal]) }).ipv4, /DROP|REJECT/, 'a local endpoint: all ACCEPT');
});

function bothLocalSpec(): Parameters<typeof servicePort>[0] {
  return {
    name: 'both-local',
    port: 80,
    clusterIPs: ['10.96.1.1'],
    nodePort: 31001,
    externalIPs: ['203.0.113.91'],
    loadBalancerIPs: ['192.0.2.91'],
    internalTrafficPolicy: 'Local',
    externalTrafficPolicy: 'Local',
  };
}

t.test('local-traffic detector: pod sources to eTP-Local external addresses go to all endpoints, before the external rule', async (t) => {
  const cidr = renderRules({ ...policyBase, localDetector: { kind: 'cidr', cidrs: ['10.244.0.0/16', 'fd00:244::/48'] } });
  const container = rulesOf(cidr.ipv4, 'KUP-PORTALS-CONTAINER');
  t.same(container.slice(1, 5), [
    '-A KUP-PORTALS-CONTAINER -s 10.244.0.0/16 -d 203.0.113.91/32 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 42002',
    '-A KUP-PORTALS-CONTAINER -d 203.0.113.91/32 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 42001',
    '-A KUP-PORTALS-CONTAINER -s 10.244.0.0/16 -d 192.0.2.91/32 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 42002',
    '-A KUP-PORTALS-CONTAINER -d 192.0.2.91/32 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 42001',
  ]);
  t.same(rulesOf(cidr.ipv4, 'KUP-NODEPORT-CONTAINER'), [
    '-A KUP-NODEPORT-CONTAINER -s 10.244.0.0/16 ! -d 127.0.0.0/8 -p tcp -m tcp --dport 31001 -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 42002',
    '-A KUP-NODEPORT-CONTAINER ! -d 127.0.0.0/8 -p tcp -m tcp --dport 31001 -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 42001',
    // eTP Cluster: its external listener already has every endpoint, no short-circuit needed.
    '-A KUP-NODEPORT-CONTAINER ! -d 127.0.0.0/8 -p tcp -m tcp --dport 31002 -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 42004',
  ]);
  t.notMatch(cidr.ipv4, /fd00:244/, 'each family gets its own CIDRs');
  const bridge = renderRules({ ...policyBase, localDetector: { kind: 'interface', name: 'cbr0' } });
  t.match(bridge.ipv4, /-A KUP-NODEPORT-CONTAINER -i cbr0 ! -d 127\.0\.0\.0\/8 -p tcp -m tcp --dport 31001 .* --to-ports 42002\n/);
  const prefix = renderRules({ ...policyBase, localDetector: { kind: 'interface', name: 'veth+' } });
  t.match(prefix.ipv4, /-A KUP-PORTALS-CONTAINER -i veth\+ -d 192\.0\.2\.91\/32 .* --to-ports 42002\n/);
});

t.test(
  'source ranges: pod short-circuit only inside a range; blocked sources DROPped; the LB IP allowed when a node IP is in range',
  async (t) => {
    const ranged = servicePort({ ...bothLocalSpec(), endpoints: remoteOnly, loadBalancerSourceRanges: ['10.244.3.0/24', '10.0.0.0/8'] });
    const r = renderRules({ ...policyBase, table: tableOf([ranged]), localDetector: { kind: 'cidr', cidrs: ['10.244.0.0/16'] } });
    const lb = rulesOf(r.ipv4, 'KUP-PORTALS-CONTAINER').filter((l) => l.includes('192.0.2.91'));
    t.same(lb, [
      '-A KUP-PORTALS-CONTAINER -s 10.244.3.0/24 -d 192.0.2.91/32 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 42002',
      '-A KUP-PORTALS-CONTAINER -s 10.244.3.0/24 -d 192.0.2.91/32 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 42001',
      '-A KUP-PORTALS-CONTAINER -s 10.244.0.0/16 -d 192.0.2.91/32 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 42002',
      '-A KUP-PORTALS-CONTAINER -s 10.0.0.0/8 -d 192.0.2.91/32 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 42001',
      // The node's address 10.0.0.5 is in 10.0.0.0/8: upstream's allowFromNode.
      '-A KUP-PORTALS-CONTAINER -s 192.0.2.91/32 -d 192.0.2.91/32 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 42001',
    ]);
    t.same(rulesOf(r.ipv4, 'KUP-FIREWALL'), ['-A KUP-FIREWALL -d 192.0.2.91/32 -p tcp -m tcp --dport 80 -j DROP']);
    const outside = renderRules({ ...policyBase, table: tableOf([ranged]), hostIPs: { ipv4: '172.16.0.5' } });
    t.notMatch(outside.ipv4, /-s 192\.0\.2\.91\/32/, 'no node address in range: the LB IP is not a source let through');
  },
);

t.test('kup rules numbers the cluster listener after the others and steers node traffic there', async (t) => {
  const { rulesScript } = await import('../lib/cli/rules.js');
  const script = rulesScript({ table: tableOf([bothLocal]), bindAddress: '0.0.0.0', portRange: null, hostIPs: { ipv4: '10.0.0.5' } });
  t.match(script, /-A KUP-PORTALS-HOST -d 10\.96\.1\.1\/32 .* --to-destination 10\.0\.0\.5:40000\n/, 'ClusterIP: internal listener');
  t.match(
    script,
    /-A KUP-NODEPORT-HOST .* --dport 31001 .* --to-destination 10\.0\.0\.5:40001\n/,
    'NodePort from the node: cluster listener',
  );
  t.match(script, /--dport 40000 -m conntrack --ctstate NEW -j DROP\n/, 'the Local listener without a local endpoint drops');
  t.match(script, /--dport 40001 -j ACCEPT\n/);
});

t.test('KUP-PROXY-PORTS verdicts per family: each family judged by its own endpoints', async (t) => {
  // eTP Local, dual-stack: the IPv4 pod is on this node, the IPv6 one elsewhere.
  const mixed = servicePort({
    name: 'mixed',
    port: 80,
    clusterIPs: ['10.96.0.90', 'fd00:96::90'],
    nodePort: 30090,
    externalTrafficPolicy: 'Local',
    endpoints: [endpoint('10.244.0.9', 8080, true), endpoint('fd00:244:1::9', 8080, false)],
  });
  // Only IPv4 endpoints: the IPv6 side has none anywhere.
  const v4only = servicePort({
    name: 'v4only',
    port: 80,
    clusterIPs: ['10.96.0.91', 'fd00:96::91'],
    endpoints: [endpoint('10.244.0.10', 8080, false)],
  });
  const r = renderRules({
    table: tableOf([mixed, v4only]),
    proxyPorts: new Map<ServicePortKey, ProxyPortNumbers>([
      [mixed.key, { internal: 43001, external: 43002 }],
      [v4only.key, { internal: 43003 }],
    ]),
    bindAddress: '::',
    hostIPs: { ipv4: '10.0.0.5', ipv6: '2001:db8:1::5' },
    commentSupported: false,
  });
  t.same(rulesOf(r.ipv4, 'KUP-PROXY-PORTS'), [
    '-A KUP-PROXY-PORTS -p tcp -m tcp --dport 43001 -j ACCEPT',
    '-A KUP-PROXY-PORTS -p tcp -m tcp --dport 43002 -j ACCEPT',
    '-A KUP-PROXY-PORTS -p tcp -m tcp --dport 43003 -j ACCEPT',
  ]);
  t.same(rulesOf(r.ipv6, 'KUP-PROXY-PORTS'), [
    '-A KUP-PROXY-PORTS -p tcp -m tcp --dport 43001 -j ACCEPT',
    // No local IPv6 endpoint, one elsewhere: upstream's "no local endpoints" DROP, new connections only.
    '-A KUP-PROXY-PORTS -p tcp -m tcp --dport 43002 -m conntrack --ctstate NEW -j DROP',
    '-A KUP-PROXY-PORTS -p tcp -m tcp --dport 43002 -j ACCEPT',
    // No IPv6 endpoint anywhere: refused at once, though IPv4 is served.
    '-A KUP-PROXY-PORTS -p tcp -m tcp --dport 43003 -j REJECT --reject-with tcp-reset',
  ]);
});
