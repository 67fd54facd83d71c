/**
 * Upstream kube-proxy's packet-flow tests, transcribed, run with real packets:
 * each case's Services, EndpointSlices and Node go into the file `kup run`
 * reads in a node namespace (with iptables); clients in a pods namespace, an
 * external namespace and the node itself connect; the endpoints answer with
 * their own IP:port (spec/support/packet-flows.ts). Each case names its
 * upstream test (kubernetes/kubernetes pkg/proxy/iptables/proxier_test.go,
 * pkg/proxy/topology_test.go). Upstream's expectations are written as they
 * are, every flow must pass; a flow whose expectation is deliberately not
 * upstream's table entry carries `deliberate` (the reason), listed here and in
 * README ("What a userspace proxy cannot match").
 *
 * Where kup deliberately differs from upstream, or the harness cannot say what upstream says:
 * | upstream                                   | here                                                        | why |
 * |--------------------------------------------|-------------------------------------------------------------|-----|
 * | masq: true/false on every flow             | ignored                                                     | a userspace proxy always dials the endpoint from the node; the client's address reaches a backend only by PROXY protocol (issue 13 item 10) |
 * | SCTP flows (TestClusterIPGeneral dns-sctp) | left out                                                    | kup does not proxy SCTP (it says so in /status "unsupported") |
 * | output "" (no rule matched)                | NONE: the "world" namespace behind the node's default route answers | the packet leaves the node as it came; the world stands for wherever the address really routes |
 * | source 1.2.3.4 -> 1.2.3.4 (LB hairpin SNATed to the LB IP, TestLoadBalancer) | left out | a packet from the LB's own IP needs a cloud LB in front; the harness has none |
 * | TestCategorizeEndpoints endpoints 10.0.0.0-3 | 10.2.0.0-3                                                | 10.0.0.1/10.0.0.2 are the harness's node gateway and pod client |
 * | TestCategorizeEndpoints service 10.96.0.1  | 172.30.2.1                                                  | kept inside the harness's routed VIP space; the address itself plays no part |
 * | IPv6 flows (dual-stack sub-cases)          | left out                                                    | the harness is IPv4 only; item 4 (one family per VIP) has its own test |
 * | TestHealthCheckNodePort: 1.2.3.4 -> 192.168.0.2:30000 ACCEPT (nodePortAddresses 127.0.0.0/8) | refused by the node's stack; 127.0.0.1:30000 answers | upstream's ACCEPT is its filter rule only; its health check server, as kup's, listens on the --nodeport-addresses IPs alone |
 * | TestEnableLocalhostNodePortsIPv4: route_localnet=1 and the martian-packet DROP (-d 127.0.0.0/8 ! -s 127.0.0.0/8) | neither; no flow | kup DNATs localhost NodePorts to its loopback listener only in OUTPUT, so route_localnet stays 0 and a packet from outside addressed to 127/8 stays a martian the kernel drops |
 */
import t from 'tap';
import type { V1Service } from '@kubernetes/client-node';
import { endpointSlice, node, service, type EndpointInput, type ServiceInput } from './support/objects.js';
import { requireNetns, sweepLeftovers } from './support/netns.js';
import { FlowBench, NODE_IPS, NODE_NAME, type Expect, type Flow, type FlowCase } from './support/packet-flows.js';

const POD = '10.0.0.2';
const NODE = NODE_IPS[0];
const NODE_ALT = NODE_IPS[1];
const EXTERNAL_IP = NODE_IPS[2];
const CLIENT = '203.0.113.2';
const BLOCKED = '203.0.113.130';
/** upstream NewFakeProxier's local-traffic detector. */
const DETECTOR = ['--cluster-cidr', '10.0.0.0/8', '--detect-local-mode', 'ClusterCIDR'];

const HC_ADDRESSES =
  "upstream's trace ACCEPTs it in the filter table, but kube-proxy's health check server (as kup's) listens only on the " +
  '--nodeport-addresses IPs (127.0.0.1 here): the node stack refuses the node IP';

const theNode = (labels: Record<string, string> = {}) =>
  node({
    name: NODE_NAME,
    labels,
    addresses: [
      { type: 'InternalIP', address: NODE },
      { type: 'Hostname', address: NODE_NAME },
    ],
  });

function svc(input: ServiceInput & { ipMode?: string }): V1Service {
  const s = service(input);
  if (input.ipMode !== undefined) {
    for (const ing of (s.status?.loadBalancer?.ingress ?? []) as { ipMode?: string }[]) {
      if (input.ipMode === '') delete ing.ipMode;
      else ing.ipMode = input.ipMode;
    }
  }
  return s;
}

/** A ready, serving, not terminating endpoint (conditions as upstream's tests leave them: nil). */
const ep = (ip: string, nodeName?: string): EndpointInput => ({ ip, ...(nodeName !== undefined ? { nodeName } : {}) });
/** Conditions R/S/T as upstream's tables write them. */
const cond = (ip: string, nodeName: string, ready: boolean, serving: boolean, terminating: boolean): EndpointInput => ({
  ip,
  nodeName,
  ready,
  serving,
  terminating,
});
const slice = (
  service: string,
  endpoints: EndpointInput[],
  ports: { name?: string; port: number; protocol?: 'TCP' | 'UDP' | 'SCTP' }[],
  namespace = 'ns1',
) => endpointSlice({ service, namespace, endpoints, ports });
const f = (name: string, from: string, to: string, port: number, expect: Expect, extra: Partial<Flow> = {}): Flow => ({
  name,
  from,
  to,
  port,
  expect,
  ...extra,
});
const eps = (port: number, ...ips: string[]): string[] => ips.map((ip) => `${ip}:${port}`);

const cases: FlowCase[] = [];

// --- TestNoEndpointsReject
cases.push({
  upstream: 'TestNoEndpointsReject',
  flags: DETECTOR,
  objects: [
    theNode(),
    svc({
      namespace: 'ns1',
      name: 'svc1',
      type: 'LoadBalancer',
      clusterIP: '172.30.0.41',
      ports: [{ name: 'p80', port: 80, nodePort: 3001 }],
      externalIPs: [EXTERNAL_IP],
      loadBalancerIngressIPs: ['1.2.3.4'],
    }),
  ],
  flows: [
    f('pod to cluster IP with no endpoints', POD, '172.30.0.41', 80, 'REJECT'),
    f('external to external IP with no endpoints', CLIENT, EXTERNAL_IP, 80, 'REJECT'),
    f('pod to NodePort with no endpoints', POD, NODE, 3001, 'REJECT'),
    f('external to NodePort with no endpoints', CLIENT, NODE, 3001, 'REJECT'),
    f('pod to LoadBalancer IP with no endpoints', POD, '1.2.3.4', 80, 'REJECT'),
    f('external to LoadBalancer IP with no endpoints', CLIENT, '1.2.3.4', 80, 'REJECT'),
  ],
});

// --- TestClusterIPGeneral
cases.push({
  upstream: 'TestClusterIPGeneral',
  flags: DETECTOR,
  objects: [
    theNode(),
    svc({ namespace: 'ns1', name: 'svc1', clusterIP: '172.30.0.41', ports: [{ name: 'http', port: 80 }] }),
    svc({
      namespace: 'ns2',
      name: 'svc2',
      clusterIP: '172.30.0.42',
      ports: [
        { name: 'http', port: 80 },
        { name: 'https', port: 443, targetPort: 8443 },
        { name: 'dns-udp', port: 53, protocol: 'UDP' },
        { name: 'dns-tcp', port: 53, targetPort: 5353 },
        { name: 'dns-sctp', port: 53, protocol: 'SCTP' },
      ],
    }),
    slice('svc1', [ep('10.180.0.1', NODE_NAME)], [{ name: 'http', port: 80 }]),
    slice(
      'svc2',
      [ep('10.180.0.1', NODE_NAME), ep('10.180.2.1', 'host2')],
      [
        { name: 'http', port: 80 },
        { name: 'https', port: 8443 },
        { name: 'dns-udp', port: 53, protocol: 'UDP' },
        { name: 'dns-tcp', port: 5353 },
        { name: 'dns-sctp', port: 53, protocol: 'SCTP' },
      ],
      'ns2',
    ),
  ],
  flows: [
    f('simple clusterIP', '10.180.0.2', '172.30.0.41', 80, eps(80, '10.180.0.1')),
    f('hairpin to cluster IP', '10.180.0.1', '172.30.0.41', 80, eps(80, '10.180.0.1')),
    f('clusterIP with multiple endpoints', '10.180.0.2', '172.30.0.42', 80, eps(80, '10.180.0.1', '10.180.2.1')),
    f('clusterIP with TargetPort', '10.180.0.2', '172.30.0.42', 443, eps(8443, '10.180.0.1', '10.180.2.1')),
    f('clusterIP with TCP, UDP, and SCTP on same port (TCP)', '10.180.0.2', '172.30.0.42', 53, eps(5353, '10.180.0.1', '10.180.2.1')),
    f('clusterIP with TCP, UDP, and SCTP on same port (UDP)', '10.180.0.2', '172.30.0.42', 53, eps(53, '10.180.0.1', '10.180.2.1'), {
      proto: 'UDP',
    }),
    f('TCP-only port does not match UDP traffic', '10.180.0.2', '172.30.0.42', 80, 'NONE', { proto: 'UDP' }),
    f("svc1 does not accept svc2's ports", '10.180.0.2', '172.30.0.41', 443, 'NONE'),
  ],
});

// --- TestLoadBalancer
{
  const ep1 = eps(80, '10.180.0.1');
  cases.push({
    upstream: 'TestLoadBalancer',
    flags: DETECTOR,
    objects: [
      theNode(),
      svc({
        namespace: 'ns1',
        name: 'svc1',
        type: 'LoadBalancer',
        clusterIP: '172.30.0.41',
        ports: [{ name: 'p80', port: 80, nodePort: 3001 }],
        loadBalancerIngressIPs: ['1.2.3.4', '5.6.7.8'],
        // The leading space is upstream's: it must be ignored, not fatal.
        loadBalancerSourceRanges: ['192.168.0.0/24', ' 203.0.113.0/25'],
      }),
      slice('svc1', [ep('10.180.0.1')], [{ name: 'p80', port: 80 }]),
    ],
    flows: [
      f('pod to cluster IP', POD, '172.30.0.41', 80, ep1),
      f('external to nodePort', CLIENT, NODE, 3001, ep1),
      f('nodePort bypasses LoadBalancerSourceRanges', BLOCKED, NODE, 3001, ep1),
      f('accepted external to LB1', CLIENT, '1.2.3.4', 80, ep1),
      f('accepted external to LB2', CLIENT, '5.6.7.8', 80, ep1),
      f('blocked external to LB1', BLOCKED, '1.2.3.4', 80, 'DROP'),
      f('blocked external to LB2', BLOCKED, '5.6.7.8', 80, 'DROP'),
      f('pod to LB1 (blocked by LoadBalancerSourceRanges)', POD, '1.2.3.4', 80, 'DROP'),
      f('pod to LB2 (blocked by LoadBalancerSourceRanges)', POD, '5.6.7.8', 80, 'DROP'),
      f('node to LB1 (allowed by LoadBalancerSourceRanges)', NODE, '1.2.3.4', 80, ep1),
      f('node to LB2 (allowed by LoadBalancerSourceRanges)', NODE, '5.6.7.8', 80, ep1),
    ],
  });
}

// --- TestNodePorts: its IPv4 sub-cases (localhost NodePorts on/off, --nodeport-addresses)
{
  const ep1 = eps(80, '10.180.0.1');
  const objects = [
    theNode(),
    svc({ namespace: 'ns1', name: 'svc1', type: 'NodePort', clusterIP: '172.30.0.41', ports: [{ name: 'p80', port: 80, nodePort: 3001 }] }),
    slice('svc1', [ep('10.180.0.1')], [{ name: 'p80', port: 80 }]),
  ];
  const LOCALHOST_OFF = ['--iptables-localhost-nodeports=false'];
  for (const [name, flags, localhost, altNodeIP] of [
    ['ipv4, localhost-nodeports enabled', [], true, true],
    ['ipv4, localhost-nodeports disabled', LOCALHOST_OFF, false, true],
    [
      'ipv4, localhost-nodeports disabled, localhost in nodeport-addresses',
      [...LOCALHOST_OFF, '--nodeport-addresses', '192.168.0.0/24,127.0.0.1/32'],
      false,
      false,
    ],
    [
      'ipv4, localhost-nodeports enabled, multiple nodeport-addresses',
      // Localhost NodePorts on, but no loopback address selected: none (upstream's ContainsIPv4Loopback).
      ['--nodeport-addresses', '192.168.0.0/24,192.168.1.0/24,2001:db8::/64'],
      false,
      true,
    ],
  ] as const) {
    cases.push({
      upstream: `TestNodePorts (${name})`,
      flags: [...DETECTOR, ...flags],
      objects,
      flows: [
        f('pod to cluster IP', POD, '172.30.0.41', 80, ep1),
        f('external to nodePort', CLIENT, NODE, 3001, ep1),
        f('node to nodePort', NODE, NODE, 3001, ep1),
        localhost
          ? f('localhost to nodePort gets masqueraded', '127.0.0.1', '127.0.0.1', 3001, ep1)
          : f('localhost to nodePort is ignored', '127.0.0.1', '127.0.0.1', 3001, 'NONE'),
        altNodeIP
          ? f('external to nodePort on secondary IP', CLIENT, NODE_ALT, 3001, ep1)
          : f('secondary nodeIP ignores NodePorts', CLIENT, NODE_ALT, 3001, 'NONE'),
      ],
    });
  }

  // TestEnableLocalhostNodePortsIPv4 / TestDisableLocalhostNodePortsIPv4(WithNodeAddress) compare rules
  // only; as flows: localhost NodePorts follow the switch, and with it off and nodePortAddresses
  // 127.0.0.0/8 no address is left for NodePorts at all.
  for (const [name, flags, localhost, nodeIP] of [
    ['TestEnableLocalhostNodePortsIPv4', [], true, true],
    ['TestDisableLocalhostNodePortsIPv4', LOCALHOST_OFF, false, true],
    ['TestDisableLocalhostNodePortsIPv4WithNodeAddress', [...LOCALHOST_OFF, '--nodeport-addresses', '127.0.0.0/8'], false, false],
  ] as const) {
    cases.push({
      upstream: name,
      flags: [...DETECTOR, ...flags],
      objects,
      flows: [
        f('localhost to nodePort', '127.0.0.1', '127.0.0.1', 3001, localhost ? ep1 : 'NONE'),
        f('node to nodePort', NODE, NODE, 3001, nodeIP ? ep1 : 'NONE'),
        f('external to nodePort', CLIENT, NODE, 3001, nodeIP ? ep1 : 'NONE'),
      ],
    });
  }
}

// --- TestHealthCheckNodePort (nodePortAddresses 127.0.0.0/8; upstream's client 1.2.3.4 is an external one here)
for (const deleted of [false, true]) {
  cases.push({
    upstream: `TestHealthCheckNodePort (${deleted ? 'service deleted' : 'eTP Local, no endpoints'})`,
    flags: [...DETECTOR, '--nodeport-addresses', '127.0.0.0/8'],
    objects: [
      theNode(),
      ...(deleted
        ? []
        : [
            svc({
              namespace: 'ns1',
              name: 'svc1',
              type: 'LoadBalancer',
              externalTrafficPolicy: 'Local',
              clusterIP: '172.30.0.42',
              ports: [{ name: 'p80', port: 80, nodePort: 3001 }],
              healthCheckNodePort: 30000,
            }),
          ]),
    ],
    flows: deleted
      ? [f('health check node port gone with the service', CLIENT, NODE, 30000, 'NONE', { proto: 'HTTP' })]
      : [
          f('health check node port reachable', '127.0.0.1', '127.0.0.1', 30000, 'ACCEPT', { proto: 'HTTP' }),
          f('health check node port reachable (from 1.2.3.4 to the node IP)', CLIENT, NODE, 30000, 'NONE', {
            proto: 'HTTP',
            deliberate: HC_ADDRESSES,
          }),
          f('pod to cluster IP without endpoints', POD, '172.30.0.42', 80, 'REJECT'),
          f('external to NodePort without endpoints', CLIENT, NODE, 3001, 'REJECT'),
          f('localhost to NodePort without endpoints', '127.0.0.1', '127.0.0.1', 3001, 'REJECT'),
        ],
  });
}

// --- TestOverallIPTablesRules / TestTracePacket: the services whose rules say DROP and REJECT
cases.push({
  upstream: 'TestOverallIPTablesRules (svc2 eTP Local without local endpoints, svc5 loadBalancerSourceRanges, svc6 no endpoints)',
  flags: DETECTOR,
  objects: [
    theNode(),
    svc({
      namespace: 'ns2',
      name: 'svc2',
      type: 'LoadBalancer',
      externalTrafficPolicy: 'Local',
      clusterIP: '172.30.0.42',
      ports: [{ name: 'p80', port: 80, nodePort: 3001 }],
      healthCheckNodePort: 30000,
      externalIPs: ['192.168.99.22'],
      loadBalancerIngressIPs: ['1.2.3.4'],
    }),
    slice('svc2', [ep('10.180.0.2')], [{ name: 'p80', port: 80 }], 'ns2'),
    svc({
      namespace: 'ns5',
      name: 'svc5',
      type: 'LoadBalancer',
      clusterIP: '172.30.0.45',
      ports: [{ name: 'p80', port: 80, nodePort: 3002 }],
      loadBalancerIngressIPs: ['5.6.7.8'],
      loadBalancerSourceRanges: [' 203.0.113.0/25'],
    }),
    slice('svc5', [ep('10.180.0.3')], [{ name: 'p80', port: 80 }], 'ns5'),
    svc({ namespace: 'ns6', name: 'svc6', clusterIP: '172.30.0.46', ports: [{ name: 'p80', port: 80 }] }),
  ],
  flows: [
    f('external to svc2 externalIP, no local endpoints', CLIENT, '192.168.99.22', 80, 'DROP'),
    f('external to svc2 LB IP, no local endpoints', CLIENT, '1.2.3.4', 80, 'DROP'),
    f('external to svc2 NodePort, no local endpoints', CLIENT, NODE, 3001, 'DROP'),
    f('pod to svc2 externalIP (KUBE-EXT -s 10.0.0.0/8 -> KUBE-SVC)', POD, '192.168.99.22', 80, eps(80, '10.180.0.2')),
    f('pod to svc2 LB IP', POD, '1.2.3.4', 80, eps(80, '10.180.0.2')),
    f('pod to svc2 NodePort', POD, NODE, 3001, eps(80, '10.180.0.2')),
    f('node to svc2 externalIP (KUBE-EXT --src-type LOCAL -> KUBE-SVC)', NODE, '192.168.99.22', 80, eps(80, '10.180.0.2')),
    f('node to svc2 LB IP', NODE, '1.2.3.4', 80, eps(80, '10.180.0.2')),
    f('node to svc2 NodePort', NODE, NODE, 3001, eps(80, '10.180.0.2')),
    f('allowed external to svc5 LB IP', CLIENT, '5.6.7.8', 80, eps(80, '10.180.0.3')),
    f('blocked external to svc5 LB IP', BLOCKED, '5.6.7.8', 80, 'DROP'),
    f('pod to svc5 LB IP (not in the source ranges)', POD, '5.6.7.8', 80, 'DROP'),
    f('pod to svc6 without endpoints', POD, '172.30.0.46', 80, 'REJECT'),
  ],
});

// --- TestExternalTrafficPolicyLocal / Cluster, TestNonLocalExternalIPs
for (const policy of ['Local', 'Cluster'] as const) {
  const local = eps(80, '10.180.2.1');
  const both = eps(80, '10.180.0.1', '10.180.2.1');
  const external = policy === 'Local' ? local : both;
  cases.push({
    upstream: `TestExternalTrafficPolicy${policy}`,
    flags: DETECTOR,
    objects: [
      theNode(),
      svc({
        namespace: 'ns1',
        name: 'svc1',
        type: 'LoadBalancer',
        externalTrafficPolicy: policy,
        clusterIP: '172.30.0.41',
        ports: [{ name: 'p80', port: 80, nodePort: 3001 }],
        ...(policy === 'Local' ? { healthCheckNodePort: 30000 } : {}),
        externalIPs: [EXTERNAL_IP],
        loadBalancerIngressIPs: ['1.2.3.4'],
      }),
      slice('svc1', [ep('10.180.0.1'), ep('10.180.2.1', NODE_NAME)], [{ name: 'p80', port: 80 }]),
    ],
    flows: [
      f('pod to cluster IP hits both endpoints', POD, '172.30.0.41', 80, both),
      f('external to external IP', CLIENT, EXTERNAL_IP, 80, external),
      f('external to LB IP', CLIENT, '1.2.3.4', 80, external),
      f('external to NodePort', CLIENT, NODE, 3001, external),
    ],
  });
}
cases.push({
  upstream: 'TestNonLocalExternalIPs',
  flags: DETECTOR,
  objects: [
    theNode(),
    svc({ namespace: 'ns1', name: 'svc1', clusterIP: '172.30.0.41', ports: [{ name: 'p80', port: 80 }], externalIPs: [EXTERNAL_IP] }),
    slice('svc1', [ep('10.180.0.1'), ep('10.180.2.1', NODE_NAME)], [{ name: 'p80', port: 80 }]),
  ],
  flows: [
    f('pod to cluster IP', POD, '172.30.0.41', 80, eps(80, '10.180.0.1', '10.180.2.1')),
    f('external to external IP', CLIENT, EXTERNAL_IP, 80, eps(80, '10.180.0.1', '10.180.2.1')),
  ],
});

// --- TestInternalTrafficPolicy
{
  const itp = (name: string, policy: 'Cluster' | 'Local', endpoints: EndpointInput[], expect: Expect): FlowCase => ({
    upstream: `TestInternalTrafficPolicy (${name})`,
    flags: DETECTOR,
    objects: [
      theNode(),
      svc({ namespace: 'ns1', name: 'svc1', clusterIP: '172.30.1.1', internalTrafficPolicy: policy, ports: [{ port: 80 }] }),
      ...(endpoints.length > 0 ? [slice('svc1', endpoints, [{ port: 80 }])] : []),
    ],
    flows: [f('pod to ClusterIP', POD, '172.30.1.1', 80, expect)],
  });
  const three = (a: string, b: string, c: string) => [ep('10.0.1.1', a), ep('10.0.1.2', b), ep('10.0.1.3', c)];
  cases.push(
    itp('internalTrafficPolicy is cluster', 'Cluster', three(NODE_NAME, 'node1', 'node2'), eps(80, '10.0.1.1', '10.0.1.2', '10.0.1.3')),
    itp('internalTrafficPolicy is local and there is one local endpoint', 'Local', three(NODE_NAME, 'node1', 'node2'), eps(80, '10.0.1.1')),
    itp(
      'internalTrafficPolicy is local and there are multiple local endpoints',
      'Local',
      three(NODE_NAME, NODE_NAME, 'node2'),
      eps(80, '10.0.1.1', '10.0.1.2'),
    ),
    itp('internalTrafficPolicy is local and there are no local endpoints', 'Local', three('node0', 'node1', 'node2'), 'DROP'),
    itp('endpoints deleted', 'Local', [], 'REJECT'),
  );
}

// --- TestTerminatingEndpointsTrafficPolicyLocal / Cluster
for (const policy of ['Local', 'Cluster'] as const) {
  const L = NODE_NAME;
  const other = policy === 'Local' ? 'node-1' : 'another-node';
  const term = (name: string, endpoints: EndpointInput[], cluster: Expect, external: Expect): FlowCase => ({
    upstream: `TestTerminatingEndpointsTrafficPolicy${policy} (${name})`,
    flags: DETECTOR,
    objects: [
      theNode(),
      svc({
        namespace: 'ns1',
        name: 'svc1',
        type: 'LoadBalancer',
        externalTrafficPolicy: policy,
        clusterIP: '172.30.1.1',
        ports: [{ port: 80, nodePort: 30010 }],
        ...(policy === 'Local' ? { healthCheckNodePort: 30000 } : {}),
        loadBalancerIngressIPs: ['1.2.3.4'],
      }),
      ...(endpoints.length > 0 ? [slice('svc1', endpoints, [{ port: 80 }])] : []),
    ],
    flows: [f('pod to clusterIP', POD, '172.30.1.1', 80, cluster), f('external to LB', CLIENT, '1.2.3.4', 80, external)],
  });
  if (policy === 'Local') {
    cases.push(
      term(
        'ready endpoints exist',
        [
          cond('10.0.1.1', L, true, true, false),
          cond('10.0.1.2', L, true, true, false),
          cond('10.0.1.3', L, false, true, true),
          cond('10.0.1.4', L, false, false, true),
          cond('10.0.1.5', other, true, true, false),
        ],
        eps(80, '10.0.1.1', '10.0.1.2', '10.0.1.5'),
        eps(80, '10.0.1.1', '10.0.1.2'),
      ),
      term(
        'only terminating endpoints exist',
        [
          cond('10.0.1.2', L, false, true, true),
          cond('10.0.1.3', L, false, true, true),
          cond('10.0.1.4', L, false, false, true),
          cond('10.0.1.5', other, true, true, false),
        ],
        eps(80, '10.0.1.5'),
        eps(80, '10.0.1.2', '10.0.1.3'),
      ),
      term('terminating endpoints on remote node', [cond('10.0.1.5', other, false, true, true)], eps(80, '10.0.1.5'), 'DROP'),
      term(
        'no usable endpoints on any node',
        [cond('10.0.1.5', L, false, false, true), cond('10.0.1.5', other, false, false, true)],
        'REJECT',
        'REJECT',
      ),
      term('endpoints deleted', [], 'REJECT', 'REJECT'),
    );
  } else {
    const a = eps(80, '10.0.1.1', '10.0.1.2', '10.0.1.5');
    const b = eps(80, '10.0.1.2', '10.0.1.3', '10.0.1.5');
    cases.push(
      term(
        'ready endpoints exist',
        [
          cond('10.0.1.1', L, true, true, false),
          cond('10.0.1.2', L, true, true, false),
          cond('10.0.1.3', other, false, true, true),
          cond('10.0.1.4', other, false, false, true),
          cond('10.0.1.5', other, true, true, false),
        ],
        a,
        a,
      ),
      term(
        'only terminating endpoints exist',
        [
          cond('10.0.1.2', L, false, true, true),
          cond('10.0.1.3', L, false, true, true),
          cond('10.0.1.4', other, false, false, true),
          cond('10.0.1.5', other, false, true, true),
        ],
        b,
        b,
      ),
      term(
        'terminating endpoints on remote node',
        [cond('10.0.1.5', 'node-1', false, true, true)],
        eps(80, '10.0.1.5'),
        eps(80, '10.0.1.5'),
      ),
      term(
        'no usable endpoints on any node',
        [cond('10.0.1.5', L, false, false, true), cond('10.0.1.5', 'node-1', false, false, true)],
        'REJECT',
        'REJECT',
      ),
      term('endpoints deleted', [], 'REJECT', 'REJECT'),
    );
  }
}

// --- TestInternalExternalMasquerade
for (const detector of [true, false]) {
  const s1 = eps(80, '10.180.0.1', '10.180.1.1');
  const s2 = eps(80, '10.180.0.2', '10.180.1.2');
  const s2local = eps(80, '10.180.0.2');
  const s3 = eps(80, '10.180.0.3', '10.180.1.3');
  const s3local = eps(80, '10.180.0.3');
  const lb = (n: number, extra: Partial<ServiceInput>): V1Service =>
    svc({
      namespace: `ns${n}`,
      name: `svc${n}`,
      type: 'LoadBalancer',
      clusterIP: `172.30.0.4${n}`,
      ports: [{ name: 'p80', port: 80, nodePort: 3000 + n }],
      ...extra,
    });
  cases.push({
    upstream: `TestInternalExternalMasquerade (${detector ? 'base' : 'no LocalTrafficDetector'})`,
    flags: detector ? DETECTOR : [],
    objects: [
      theNode(),
      lb(1, { loadBalancerIngressIPs: ['1.2.3.4'] }),
      lb(2, { externalTrafficPolicy: 'Local', healthCheckNodePort: 30002, loadBalancerIngressIPs: ['5.6.7.8'] }),
      lb(3, { internalTrafficPolicy: 'Local', loadBalancerIngressIPs: ['9.10.11.12'] }),
      ...[1, 2, 3].map((n) =>
        slice(`svc${n}`, [ep(`10.180.0.${n}`, NODE_NAME), ep(`10.180.1.${n}`, 'remote')], [{ name: 'p80', port: 80 }], `ns${n}`),
      ),
    ],
    flows: [
      f('pod to ClusterIP', POD, '172.30.0.41', 80, s1),
      f('pod to NodePort', POD, NODE, 3001, s1),
      f('pod to LB', POD, '1.2.3.4', 80, s1),
      f('node to ClusterIP', NODE, '172.30.0.41', 80, s1),
      f('node to NodePort', NODE, NODE, 3001, s1),
      f('node to LB', NODE, '1.2.3.4', 80, s1),
      f('external to ClusterIP', CLIENT, '172.30.0.41', 80, s1),
      f('external to NodePort', CLIENT, NODE, 3001, s1),
      f('external to LB', CLIENT, '1.2.3.4', 80, s1),
      f('pod to ClusterIP with eTP:Local', POD, '172.30.0.42', 80, s2),
      f('pod to NodePort with eTP:Local', POD, NODE, 3002, detector ? s2 : s2local),
      f('pod to LB with eTP:Local', POD, '5.6.7.8', 80, detector ? s2 : s2local),
      f('node to ClusterIP with eTP:Local', NODE, '172.30.0.42', 80, s2),
      f('node to NodePort with eTP:Local', NODE, NODE, 3001, s1),
      f('node to LB with eTP:Local', NODE, '5.6.7.8', 80, s2),
      f('external to ClusterIP with eTP:Local', CLIENT, '172.30.0.42', 80, s2),
      f('external to NodePort with eTP:Local', CLIENT, NODE, 3002, s2local),
      f('external to LB with eTP:Local', CLIENT, '5.6.7.8', 80, s2local),
      f('pod to ClusterIP with iTP:Local', POD, '172.30.0.43', 80, s3local),
      f('pod to NodePort with iTP:Local', POD, NODE, 3003, s3),
      f('pod to LB with iTP:Local', POD, '9.10.11.12', 80, s3),
      f('node to ClusterIP with iTP:Local', NODE, '172.30.0.43', 80, s3local),
      f('node to NodePort with iTP:Local', NODE, NODE, 3003, s3),
      f('node to LB with iTP:Local', NODE, '9.10.11.12', 80, s3),
      f('external to ClusterIP with iTP:Local', CLIENT, '172.30.0.43', 80, s3local),
      f('external to NodePort with iTP:Local', CLIENT, NODE, 3003, s3),
      f('external to LB with iTP:Local', CLIENT, '9.10.11.12', 80, s3),
    ],
  });
}

// --- TestLoadBalancerIngressRouteTypeProxy
for (const [mode, expect] of [
  ['', eps(80, '10.180.0.1')],
  ['VIP', eps(80, '10.180.0.1')],
  ['Proxy', 'NONE'],
] as const) {
  cases.push({
    upstream: `TestLoadBalancerIngressRouteTypeProxy (ipMode ${mode === '' ? 'unset' : mode})`,
    flags: DETECTOR,
    objects: [
      theNode(),
      svc({
        namespace: 'ns1',
        name: 'svc1',
        type: 'LoadBalancer',
        clusterIP: '172.30.0.41',
        ports: [{ name: 'p80', port: 80, nodePort: 3001 }],
        loadBalancerIngressIPs: ['9.9.9.9'],
        ipMode: mode,
      }),
      slice('svc1', [ep('10.180.0.1')], [{ name: 'p80', port: 80 }]),
    ],
    flows: [f('external to LB IP', CLIENT, '9.9.9.9', 80, expect)],
  });
}

// --- pkg/proxy/topology_test.go TestCategorizeEndpoints: ClusterIP traffic sees iTP Local ? local : cluster,
// external traffic (to the NodePort) eTP Local ? local : cluster.
{
  const ZONE = 'topology.kubernetes.io/zone';
  interface CatEp {
    ip: string;
    local?: boolean;
    ready?: boolean;
    serving?: boolean;
    terminating?: boolean;
    zones?: string[];
    nodes?: string[];
  }
  const cat = (
    name: string,
    opts: { zone?: string; nodeName?: string; nodePort?: boolean; itp?: 'Local'; etp?: 'Local' },
    endpoints: CatEp[],
    clusterIPExpect: Expect,
    nodePortExpect?: Expect,
  ): FlowCase => {
    // "node-1" etc. as hints name the node kup runs as (upstream's nodeName varies by case).
    const rename = (n: string) => (n === (opts.nodeName ?? NODE_NAME) ? NODE_NAME : n);
    return {
      upstream: `TestCategorizeEndpoints (${name})`,
      flags: DETECTOR,
      objects: [
        theNode(opts.zone !== undefined ? { [ZONE]: opts.zone } : {}),
        svc({
          namespace: 'ns1',
          name: 'svc1',
          type: opts.nodePort === true ? 'NodePort' : 'ClusterIP',
          clusterIP: '172.30.2.1',
          ports: [{ port: 80, ...(opts.nodePort === true ? { nodePort: 30080 } : {}) }],
          ...(opts.itp !== undefined ? { internalTrafficPolicy: opts.itp } : {}),
          ...(opts.etp !== undefined ? { externalTrafficPolicy: opts.etp } : {}),
        }),
        ...(endpoints.length > 0
          ? [
              slice(
                'svc1',
                endpoints.map((e) => ({
                  ip: e.ip,
                  nodeName: e.local === true ? NODE_NAME : 'remote-node',
                  ready: e.ready ?? true,
                  serving: e.serving ?? true,
                  terminating: e.terminating ?? false,
                  ...(e.zones !== undefined ? { hints: e.zones } : {}),
                  ...(e.nodes !== undefined ? { nodeHints: e.nodes.map(rename) } : {}),
                })),
                [{ port: 80 }],
              ),
            ]
          : []),
      ],
      flows: [
        f('ClusterIP', POD, '172.30.2.1', 80, clusterIPExpect),
        ...(nodePortExpect !== undefined ? [f('external to NodePort', CLIENT, NODE, 30080, nodePortExpect)] : []),
      ],
    };
  };
  const z = (ip: string, ...zones: string[]): CatEp => ({ ip: `10.1.2.${ip}`, zones });
  /** The answers of zone-case endpoints 10.1.2.N (Z) and of policy-case endpoints 10.2.0.N (E). */
  const Z = (...last: string[]) => eps(80, ...last.map((l) => `10.1.2.${l}`));
  const E = (...last: string[]) => eps(80, ...last.map((l) => `10.2.0.${l}`));
  const p = (n: number, extra: Partial<CatEp> = {}): CatEp => ({ ip: `10.2.0.${n}`, ...extra });
  const nodeHinted = (ip: string, zone: string, n: string): CatEp => ({ ip: `10.1.2.${ip}`, zones: [zone], nodes: [n] });
  cases.push(
    cat(
      "should use topology since all endpoints have hints, node has a zone label and and there are endpoints for the node's zone",
      { zone: 'zone-a' },
      [z('3', 'zone-a'), z('4', 'zone-b'), z('5', 'zone-c'), z('6', 'zone-a')],
      Z('3', '6'),
    ),
    cat(
      'externalTrafficPolicy: Local, topology ignored for Local endpoints',
      { zone: 'zone-a', nodePort: true, etp: 'Local' },
      [{ ...z('3', 'zone-a'), local: true }, { ...z('4', 'zone-b'), local: true }, z('5', 'zone-c'), z('6', 'zone-a')],
      Z('3', '6'),
      Z('3', '4'),
    ),
    cat(
      'internalTrafficPolicy: Local, topology ignored for Local endpoints',
      { zone: 'zone-a', nodePort: true, itp: 'Local' },
      [{ ...z('3', 'zone-a'), local: true }, { ...z('4', 'zone-b'), local: true }, z('5', 'zone-c'), z('6', 'zone-a')],
      Z('3', '4'),
      Z('3', '6'),
    ),
    cat('empty node labels', {}, [z('3', 'zone-a')], Z('3')),
    cat('empty zone label', { zone: '' }, [z('3', 'zone-a')], Z('3')),
    cat('node in different zone, no endpoint filtering', { zone: 'zone-b' }, [z('3', 'zone-a'), z('5', 'zone-c')], Z('3', '5')),
    cat(
      'unready endpoint',
      { zone: 'zone-a' },
      [z('3', 'zone-a'), z('4', 'zone-b'), z('5', 'zone-c'), { ...z('6', 'zone-a'), ready: false }],
      Z('3'),
    ),
    cat(
      'only unready endpoints in same zone (should not filter)',
      { zone: 'zone-a' },
      [{ ...z('3', 'zone-a'), ready: false }, z('4', 'zone-b'), z('5', 'zone-c'), { ...z('6', 'zone-a'), ready: false }],
      Z('4', '5'),
    ),
    cat(
      'missing hints, no filtering applied',
      { zone: 'zone-a' },
      [z('3', 'zone-a'), z('4', 'zone-b'), { ip: '10.1.2.5' }, z('6', 'zone-a')],
      Z('3', '4', '5', '6'),
    ),
    cat(
      'multiple hints per endpoint, filtering includes any endpoint with zone included',
      { zone: 'zone-c' },
      [z('3', 'zone-a', 'zone-b', 'zone-c'), z('4', 'zone-b', 'zone-c'), z('5', 'zone-b', 'zone-d'), z('6', 'zone-c')],
      Z('3', '4', '6'),
    ),
    cat(
      'PreferSameNode available',
      { zone: 'zone-a', nodeName: 'node-1' },
      [
        nodeHinted('3', 'zone-a', 'node-1'),
        nodeHinted('4', 'zone-b', 'node-2'),
        nodeHinted('5', 'zone-c', 'node-3'),
        nodeHinted('6', 'zone-a', 'node-4'),
      ],
      Z('3'),
    ),
    cat(
      'PreferSameNode ignored if some endpoints unhinted',
      { zone: 'zone-a', nodeName: 'node-1' },
      [nodeHinted('3', 'zone-a', 'node-1'), { ip: '10.1.2.4' }, nodeHinted('5', 'zone-c', 'node-3'), nodeHinted('6', 'zone-a', 'node-4')],
      Z('3', '4', '5', '6'),
    ),
    cat(
      'PreferSameNode falls back to same-zone if no endpoint for node',
      { zone: 'zone-a', nodeName: 'node-0' },
      [
        nodeHinted('3', 'zone-a', 'node-1'),
        nodeHinted('4', 'zone-b', 'node-2'),
        nodeHinted('5', 'zone-c', 'node-3'),
        nodeHinted('6', 'zone-a', 'node-4'),
      ],
      Z('3', '6'),
    ),
    cat(
      'conflicting topology and localness require merging allEndpoints',
      { zone: 'zone-a', nodePort: true, itp: 'Local' },
      [
        p(0, { local: true, zones: ['zone-a'] }),
        p(1, { local: true, zones: ['zone-b'] }),
        p(2, { zones: ['zone-a'] }),
        p(3, { zones: ['zone-b'] }),
      ],
      E('0', '1'),
      E('0', '2'),
    ),
    cat('internalTrafficPolicy: Local, with empty endpoints', { itp: 'Local' }, [], 'REJECT'),
    cat('internalTrafficPolicy: Local, but all endpoints are remote', { itp: 'Local' }, [p(0), p(1)], 'DROP'),
    cat(
      'internalTrafficPolicy: Local, all endpoints are local',
      { itp: 'Local' },
      [p(0, { local: true }), p(1, { local: true })],
      E('0', '1'),
    ),
    cat('internalTrafficPolicy: Local, some endpoints are local', { itp: 'Local' }, [p(0, { local: true }), p(1)], E('0')),
    cat('Cluster traffic policy, endpoints not Ready', {}, [p(0, { ready: false }), p(1, { ready: false })], 'REJECT'),
    cat('Cluster traffic policy, some endpoints are Ready', {}, [p(0, { ready: false }), p(1)], E('1')),
    cat(
      'Cluster traffic policy, all endpoints are terminating',
      {},
      [p(0, { ready: false, terminating: true }), p(1, { ready: false, terminating: true })],
      E('0', '1'),
    ),
    cat(
      'iTP: Local, eTP: Cluster, some endpoints local',
      { nodePort: true, itp: 'Local' },
      [p(0, { local: true }), p(1)],
      E('0'),
      E('0', '1'),
    ),
    cat(
      'iTP: Cluster, eTP: Local, some endpoints local',
      { nodePort: true, etp: 'Local' },
      [p(0, { local: true }), p(1)],
      E('0', '1'),
      E('0'),
    ),
    cat(
      'iTP: Local, eTP: Local, some endpoints local',
      { nodePort: true, itp: 'Local', etp: 'Local' },
      [p(0, { local: true }), p(1)],
      E('0'),
      E('0'),
    ),
    cat('iTP: Local, eTP: Local, all endpoints remote', { nodePort: true, itp: 'Local', etp: 'Local' }, [p(0), p(1)], 'DROP', 'DROP'),
    cat(
      'iTP: Local, eTP: Local, all endpoints remote and terminating',
      { nodePort: true, itp: 'Local', etp: 'Local' },
      [p(0, { ready: false, terminating: true }), p(1, { ready: false, terminating: true })],
      'DROP',
      'DROP',
    ),
    cat(
      'iTP: Cluster, eTP: Local, with terminating endpoints',
      { nodePort: true, etp: 'Local' },
      [
        p(0),
        p(1, { local: true, ready: false, serving: false, terminating: true }),
        p(2, { local: true, ready: false, terminating: true }),
        p(3, { ready: false, terminating: true }),
      ],
      E('0'),
      E('2'),
    ),
    cat('externalTrafficPolicy ignored if not externally accessible', { etp: 'Local' }, [p(0), p(1, { local: true })], E('0', '1')),
    cat('no cluster endpoints for iTP:Local internal-only service', { itp: 'Local' }, [p(0), p(1, { local: true })], E('1')),
    cat(
      'externalTrafficPolicy: Local, externally accessible, with empty endpoints',
      { nodePort: true, etp: 'Local' },
      [],
      'REJECT',
      'REJECT',
    ),
    cat(
      'externalTrafficPolicy: Local, externally accessible, but all endpoints are remote',
      { nodePort: true, etp: 'Local' },
      [p(0), p(1)],
      E('0', '1'),
      'DROP',
    ),
    cat(
      'externalTrafficPolicy: Local, externally accessible, all endpoints are local',
      { nodePort: true, etp: 'Local' },
      [p(0, { local: true }), p(1, { local: true })],
      E('0', '1'),
      E('0', '1'),
    ),
    cat(
      'externalTrafficPolicy: Local, externally accessible, some endpoints are local',
      { nodePort: true, etp: 'Local' },
      [p(0, { local: true }), p(1)],
      E('0', '1'),
      E('0'),
    ),
  );
}

// About 70 cases, each a kup sync plus a client process per namespace: 1.5 min on
// an idle 2-core machine, 2.5-3 under a load average of 15. Allow for more beyond
// tap's 300 s per file (package.json), while a hang still fails the file.
t.setTimeout(600_000);

if (await requireNetns(t)) {
  await sweepLeftovers();
  // Cases that share kup's flags run back to back on one kup process.
  cases.sort((a, b) => a.flags.join(' ').localeCompare(b.flags.join(' ')));
  const bench = await FlowBench.create(t, cases);
  let flows = 0;
  let passed = 0;
  const failed: string[] = [];
  const deliberate: string[] = [];
  for (const c of cases) {
    await t.test(c.upstream, async (t) => {
      await bench.apply(c);
      const outcomes = await bench.run(c);
      c.flows.forEach((fl, i) => {
        const o = outcomes[i]!;
        flows++;
        if (fl.deliberate !== undefined) deliberate.push(`${c.upstream} / ${fl.name}: ${fl.deliberate}`);
        if (o.ok) passed++;
        else failed.push(`${c.upstream} / ${fl.name}: ${o.detail}`);
        t.ok(o.ok, `${fl.name} (${fl.from} -> ${fl.to}:${fl.port}/${fl.proto ?? 'TCP'})`, { detail: o.detail });
      });
    });
  }
  t.comment(`packet flows: ${cases.length} cases, ${flows} flows, ${passed} passed, ${deliberate.length} deliberately not upstream's`);
  for (const line of failed) t.comment(`failed: ${line}`);
  for (const line of deliberate) t.comment(`deliberate: ${line}`);
}
