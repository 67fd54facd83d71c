/**
 * `kup explain`'s pure parts on hand-built /status documents: parsing the
 * destination, matching it the way the rules would, and the text printed.
 * cli-admin.test.ts runs the same through the binary against a live proxy.
 */
import t from 'tap';
import { explain, formatExplanation, parseDestination } from '../lib/admin/explain.js';
import { KupError } from '../lib/core/errors.js';
import { endpointStatus, serviceStatus, statusDocument } from './support/status-doc.js';

const api = serviceStatus('shop', 'api', 'http', 80, {
  proxyPort: 40001,
  endpoints: [endpointStatus('10.244.0.5', 8080), endpointStatus('10.244.0.6', 8080, { ready: false, inUse: false, inUseExternal: false })],
  nextEndpoint: '10.244.0.5:8080',
});
const dns = serviceStatus('shop', 'dns', '', 53, {
  protocol: 'UDP',
  type: 'NodePort',
  clusterIPs: ['10.96.0.53'],
  nodePort: 30053,
  proxyPort: 40002,
});
const lb = serviceStatus('shop', 'lb', 'web', 80, {
  type: 'LoadBalancer',
  clusterIPs: ['10.96.0.20'],
  externalIPs: ['192.0.2.10'],
  loadBalancerIPs: ['198.51.100.7'],
  externalTrafficPolicy: 'Local',
  proxyPort: 40003,
  externalProxyPort: 40004,
  endpoints: [
    endpointStatus('10.244.0.7', 8080),
    endpointStatus('10.244.1.7', 8080, { nodeName: 'node-b', isLocal: false, inUseExternal: false }),
  ],
  nextEndpoint: '10.244.0.7:8080',
  externalNextEndpoint: '10.244.0.7:8080',
});
const doc = statusDocument([api, dns, lb]);
const here = new Set(['192.0.2.99']);

t.test('parseDestination: IP:PORT[/tcp|udp], IPv6 in brackets; anything else is KUP_BAD_FLAG', async (t) => {
  t.same(parseDestination('10.96.0.10:80'), { ip: '10.96.0.10', port: 80, protocol: null });
  t.same(parseDestination(' 10.96.0.53:53/UDP '), { ip: '10.96.0.53', port: 53, protocol: 'UDP' });
  t.same(parseDestination('[fd00::10]:443/tcp'), { ip: 'fd00::10', port: 443, protocol: 'TCP' });
  for (const bad of ['not-an-address', '10.96.0.10', '10.96.0.10:0', '10.96.0.10:70000', '10.96.0.10:80/sctp']) {
    let err: unknown;
    try {
      parseDestination(bad);
    } catch (e) {
      err = e;
    }
    t.ok(
      err instanceof KupError && err.code === 'KUP_BAD_FLAG' && err.message.startsWith(`"${bad}" is not IP:PORT[/tcp|udp]`),
      `${bad}: ${String(err)}`,
    );
  }
});

t.test('a ClusterIP matches its service port through the portal chains', async (t) => {
  const x = explain(doc, parseDestination('10.96.0.10:80'), here);
  t.equal(x.matches.length, 1);
  const m = x.matches[0]!;
  t.equal(m.kind, 'ClusterIP');
  t.equal(m.service.key, 'shop/api:http/TCP');
  t.same(m.chains, ['KUP-PORTALS-CONTAINER', 'KUP-PORTALS-HOST']);
  t.equal(m.rule, '-d 10.96.0.10/32 -p tcp -m tcp --dport 80');
  t.equal(m.scope, 'internal');
  t.equal(m.listenerPort, 40001);
  t.same(
    m.endpoints.map((e) => e.ip),
    ['10.244.0.5'],
    'only the endpoint in use',
  );
  t.same(x.misses, []);
});

t.test('external addresses use the external listener and its policy', async (t) => {
  for (const [dest, kind] of [
    ['198.51.100.7:80/tcp', 'LoadBalancer IP'],
    ['192.0.2.10:80', 'externalIP'],
  ] as const) {
    const m = explain(doc, parseDestination(dest), here).matches[0]!;
    t.equal(m.kind, kind, dest);
    t.equal(m.scope, 'external');
    t.equal(m.listenerPort, 40004);
    t.same(
      m.endpoints.map((e) => e.ip),
      ['10.244.0.7'],
      'only the local endpoint (Local policy)',
    );
    t.match(m.notes.join('\n'), /externalTrafficPolicy Local/);
  }
});

t.test('a NodePort matches on any address but says whether it is this machine', async (t) => {
  const local = explain(doc, parseDestination('192.0.2.99:30053/udp'), here).matches[0]!;
  t.equal(local.kind, 'NodePort');
  t.equal(local.rule, '! -d 127.0.0.0/8 -p udp -m udp --dport 30053 -m addrtype --dst-type LOCAL');
  t.same(local.notes, [
    '192.0.2.99 is an address of this machine',
    'only where --nodeport-addresses, when set, selects this address',
    'no usable endpoint anywhere: datagrams are refused at once (ICMP port unreachable)',
  ]);
  const remote = explain(doc, parseDestination('203.0.113.1:30053'), here).matches[0]!;
  t.match(remote.notes[0], /matches only where 203\.0\.113\.1 is one of the node's own addresses/);
});

t.test('a NodePort at 127.0.0.1 is for the node itself (localhost NodePorts); at ::1 never', async (t) => {
  const lo = explain(doc, parseDestination('127.0.0.1:30053/udp'), here).matches[0]!;
  t.equal(lo.kind, 'NodePort');
  t.match(
    lo.notes.join('\n'),
    /loopback: accepted from the node's own processes only \(not from the network\), unless --iptables-localhost-nodeports=false/,
  );
  // shop/dns is single-stack IPv4: no IPv6 rules at all, so ::1 is not its NodePort either way.
  const lo6 = explain(doc, parseDestination('[::1]:30053/udp'), here);
  t.equal(lo6.matches.length, 0);
  t.match(lo6.misses.join('\n'), /single-stack IPv4 Service: it has no IPv6 rules/);
});

t.test('the proxy port itself, addressed on the bind address', async (t) => {
  const m = explain(doc, parseDestination('127.0.0.1:40002'), here).matches[0]!;
  t.equal(m.kind, 'proxy port');
  t.equal(m.service.key, 'shop/dns:53/UDP');
  t.same(m.chains, []);
});

t.test('misses: a known VIP on the wrong port or protocol, and an unknown address', async (t) => {
  t.same(explain(doc, parseDestination('10.96.0.10:81'), here).misses, [
    '10.96.0.10 belongs to shop/api, which has no port 81 (it has 80/TCP): no rule matches, the packet is rejected',
  ]);
  t.match(explain(doc, parseDestination('10.96.0.10:80/udp'), here).misses[0], /no port 80\/UDP \(it has 80\/TCP\)/);
  const none = explain(doc, parseDestination('203.0.113.9:80'), here);
  t.same(none.matches, []);
  t.match(none.misses[0], /^no service has 203\.0\.113\.9:80 as a ClusterIP/);
});

t.test('formatExplanation: what the user reads', async (t) => {
  const text = formatExplanation(doc, explain(doc, parseDestination('10.96.0.10:80'), here));
  const lines = text.split('\n');
  t.equal(lines[0], '10.96.0.10:80 -> shop/api:http/TCP (ClusterIP)');
  t.equal(
    lines[1],
    '  rule      KUP-PORTALS-CONTAINER (packets from pods) and KUP-PORTALS-HOST (packets from this node): -d 10.96.0.10/32 -p tcp -m tcp --dport 80',
  );
  t.equal(lines[2], "  listener  127.0.0.1:40001/TCP (the service port's listener)");
  t.equal(lines[3], '  strategy  round-robin, no session affinity, internalTrafficPolicy Cluster');
  t.equal(lines[4], '  endpoints 1 in play of 2 listed');
  t.match(lines[5], /^ {12}-> 10\.244\.0\.5:8080 +ready +node node-a \(local\) +active 0 {2}picks 0$/);
  t.equal(lines[6], '            (not in play: 10.244.0.6:8080)');
  t.equal(lines[7], '  next      10.244.0.5:8080 (the next connection from a new client goes here)');
  t.ok(text.endsWith('\n'));

  const offline = formatExplanation({ ...doc, health: null }, explain(doc, parseDestination('10.96.0.10:80'), here));
  t.match(offline, /listener {2}not running: kup picks the proxy port when it starts/, 'without a running proxy (--source)');
  t.equal(
    formatExplanation(doc, explain(doc, parseDestination('203.0.113.9:80/tcp'), here)).split('\n')[0],
    '203.0.113.9:80/TCP: nothing matches',
  );
});

t.test('Local policies with no endpoint here: dropped, not refused; the node and its pods reach every endpoint', async (t) => {
  const remote = endpointStatus('10.244.1.9', 8080, { nodeName: 'node-b', isLocal: false, inUse: false, inUseExternal: false });
  const itp = serviceStatus('shop', 'itp', 'http', 80, {
    type: 'LoadBalancer',
    clusterIPs: ['10.96.0.70'],
    loadBalancerIPs: ['198.51.100.70'],
    loadBalancerSourceRanges: ['203.0.113.0/24'],
    nodePort: 30070,
    internalTrafficPolicy: 'Local',
    externalTrafficPolicy: 'Local',
    proxyPort: 40070,
    clusterProxyPort: 40071,
    endpoints: [remote],
  });
  const d = statusDocument([itp]);
  const cip = explain(d, parseDestination('10.96.0.70:80'), here).matches[0]!;
  t.same(cip.notes, [
    'internalTrafficPolicy Local: only endpoints on this node',
    'internalTrafficPolicy Local and no endpoint on this node (1 elsewhere): packets are dropped, the client gets no answer and times out (as kube-proxy)',
  ]);
  t.notMatch(cip.notes.join('\n'), /refused/, 'not "refused at once": the DROP gives the client nothing');
  const lbm = explain(d, parseDestination('198.51.100.70:80'), here).matches[0]!;
  t.same(lbm.notes, [
    'externalTrafficPolicy Local: only endpoints on this node',
    'externalTrafficPolicy Local and no endpoint on this node (1 elsewhere): packets are dropped, the client gets no answer and times out (as kube-proxy)',
    'from this node (KUP-*-HOST): all 1 usable endpoint(s) of the cluster, neither traffic policy applies (listener :40071)',
    "from this node's pods, when --detect-local-mode tells them apart: all usable endpoints of the cluster too",
    'loadBalancerSourceRanges 203.0.113.0/24: other sources are dropped (KUP-FIREWALL), they get no answer',
  ]);
  // A localhost NodePort is the node's own traffic: the all-endpoints listener, no DROP (render.ts's loopback DNAT).
  const lo = explain(d, parseDestination('127.0.0.1:30070'), here).matches[0]!;
  t.equal(lo.kind, 'NodePort');
  t.same(lo.chains, ['KUP-NODEPORT-HOST']);
  t.equal(lo.rule, '-d 127.0.0.0/8 -p tcp -m tcp --dport 30070');
  t.equal(lo.scope, 'cluster');
  t.equal(lo.listenerPort, 40071);
  t.same(
    lo.endpoints.map((e) => e.ip),
    ['10.244.1.9'],
  );
  t.notMatch(lo.notes.join('\n'), /dropped|Local: only endpoints on this node/, 'no Local policy, no DROP for the node itself');
  t.match(lo.notes.join('\n'), /from this node only: all 1 usable endpoint\(s\) of the cluster, neither traffic policy applies/);
  const text = formatExplanation(d, { destination: parseDestination('127.0.0.1:30070'), matches: [lo], misses: [] });
  t.match(text, /rule {6}KUP-NODEPORT-HOST \(packets from this node only\): -d 127\.0\.0\.0\/8/);
  t.match(text, /strategy .*neither traffic policy \(the node's own traffic\)/);
  const cl = explain(d, parseDestination('127.0.0.1:40071'), here).matches[0]!;
  t.equal(cl.kind, 'proxy port');
  t.same(
    cl.endpoints.map((e) => e.ip),
    ['10.244.1.9'],
    'the cluster-wide listener has the remote endpoint',
  );
  const empty = serviceStatus('shop', 'none', 'http', 80, { clusterIPs: ['10.96.0.71'], internalTrafficPolicy: 'Local', endpoints: [] });
  t.match(
    explain(statusDocument([empty]), parseDestination('10.96.0.71:80'), here).matches[0]!.notes.join('\n'),
    /no usable endpoint anywhere: connections are refused at once \(TCP reset\)/,
    'no endpoint anywhere: REJECT, even under a Local policy',
  );
});

t.test('dual-stack: each family reaches its own endpoints; a single-stack Service has no rules in the other family', async (t) => {
  const dual = serviceStatus('shop', 'dual', 'http', 80, {
    type: 'NodePort',
    clusterIPs: ['10.96.0.70', 'fd00:96::70'],
    nodePort: 30070,
    proxyPort: 40007,
    endpoints: [endpointStatus('10.244.0.7', 8080), endpointStatus('fd00:244::7', 8080)],
    nextEndpoint: '10.244.0.7:8080',
  });
  const v4only = serviceStatus('shop', 'v4only', 'http', 443, {
    type: 'NodePort',
    clusterIPs: ['10.96.0.71'],
    externalIPs: ['2001:db8::71'],
    nodePort: 30071,
    proxyPort: 40008,
    endpoints: [endpointStatus('10.244.0.8', 8443)],
    nextEndpoint: '10.244.0.8:8443',
  });
  const d = statusDocument([dual, v4only]);
  const v4 = explain(d, parseDestination('10.96.0.70:80'), here);
  t.same(
    v4.matches[0]!.endpoints.map((e) => e.ip),
    ['10.244.0.7'],
    'IPv4 ClusterIP: the IPv4 endpoint only',
  );
  t.equal(v4.matches[0]!.next, '10.244.0.7:8080');
  const v6 = explain(d, parseDestination('[fd00:96::70]:80'), here);
  t.same(
    v6.matches[0]!.endpoints.map((e) => e.ip),
    ['fd00:244::7'],
    'IPv6 ClusterIP: the IPv6 endpoint only',
  );
  t.equal(v6.matches[0]!.next, null, 'the IPv4 next pick is not shown for IPv6');
  t.match(formatExplanation(d, v6), /next {6}one of the endpoints above/);

  const np6 = explain(d, parseDestination('[2001:db8::99]:30071'), here);
  t.equal(np6.matches.length, 0, 'no IPv6 NodePort for a single-stack IPv4 Service');
  t.match(np6.misses, [/30071 is the NodePort of shop\/v4only, a single-stack IPv4 Service: it has no IPv6 rules/]);
  const ext6 = explain(d, parseDestination('[2001:db8::71]:443'), here);
  t.equal(ext6.matches.length, 0, 'nor for its IPv6 externalIP');
  t.match(ext6.misses, [/2001:db8::71 is an externalIP of shop\/v4only/]);
  t.equal(
    explain(d, parseDestination('[2001:db8::99]:30070'), here).matches[0]?.endpoints[0]?.ip,
    'fd00:244::7',
    'the dual-stack IPv6 NodePort: IPv6',
  );
});
