/**
 * The pure conntrack plan: which UDP entries a sync makes stale (new
 * destinations, or ones whose proxy port changed), and the exact
 * `conntrack -D` arguments that clear them.
 */
import t from 'tap';
import { conntrackDeleteArgs, staleConntrackFilters, type SteeredTable } from '../lib/core/conntrack-plan.js';
import type { ProxyPortNumbers, ServicePort, ServicePortKey } from '../lib/core/types.js';
import { servicePort, tableOf } from './support/service-fixtures.js';

const dns = servicePort({
  namespace: 'kube-system',
  name: 'dns',
  portName: 'dns',
  protocol: 'UDP',
  port: 53,
  clusterIPs: ['10.96.0.10', 'fd00:96::a'],
});
const dnsTcp = servicePort({
  namespace: 'kube-system',
  name: 'dns',
  portName: 'dns-tcp',
  protocol: 'TCP',
  port: 53,
  clusterIPs: ['10.96.0.10'],
});
const gameSpec = {
  name: 'game',
  protocol: 'UDP',
  port: 7777,
  clusterIPs: ['10.96.0.77'],
  externalIPs: ['203.0.113.7'],
  loadBalancerIPs: ['198.51.100.7'],
  nodePort: 30777,
} as const satisfies Parameters<typeof servicePort>[0];
const game = servicePort(gameSpec);

function steered(entries: [ServicePort, ProxyPortNumbers | undefined][]): SteeredTable {
  const proxyPorts = new Map<ServicePortKey, ProxyPortNumbers>();
  for (const [sp, pp] of entries) if (pp !== undefined) proxyPorts.set(sp.key, pp);
  return { table: tableOf(entries.map(([sp]) => sp)), proxyPorts };
}

const both = ['ipv4', 'ipv6'] as const;

t.test('at start every UDP destination is cleared (a restart leaves the last run’s entries); TCP never', async (t) => {
  const next = steered([
    [dns, { internal: 41000 }],
    [dnsTcp, { internal: 41001 }],
    [game, { internal: 41002 }],
  ]);
  t.same(staleConntrackFilters(null, next, both), [
    { family: 'ipv4', dst: '10.96.0.10', port: 53 },
    { family: 'ipv6', dst: 'fd00:96::a', port: 53 },
    { family: 'ipv4', dst: '10.96.0.77', port: 7777 },
    { family: 'ipv4', dst: '203.0.113.7', port: 7777 },
    { family: 'ipv4', dst: '198.51.100.7', port: 7777 },
    { family: 'ipv4', dst: null, port: 30777 },
    { family: 'ipv6', dst: null, port: 30777 },
  ]);
  t.same(
    staleConntrackFilters(null, next, ['ipv4']).map((f) => f.dst),
    ['10.96.0.10', '10.96.0.77', '203.0.113.7', '198.51.100.7', null],
    'a family without rules is left alone',
  );
});

t.test('an unchanged sync clears nothing: live sessions keep their entries', async (t) => {
  const a = steered([
    [dns, { internal: 41000 }],
    [game, { internal: 41002 }],
  ]);
  const b = steered([
    [dns, { internal: 41000 }],
    [game, { internal: 41002 }],
  ]);
  t.same(staleConntrackFilters(a, b, both), []);
});

t.test('a changed proxy port clears only that service port’s destinations', async (t) => {
  const a = steered([
    [dns, { internal: 41000 }],
    [game, { internal: 41002 }],
  ]);
  const b = steered([
    [dns, { internal: 42000 }],
    [game, { internal: 41002 }],
  ]);
  t.same(staleConntrackFilters(a, b, both), [
    { family: 'ipv4', dst: '10.96.0.10', port: 53 },
    { family: 'ipv6', dst: 'fd00:96::a', port: 53 },
  ]);
});

t.test('a new external listener clears the external destinations and the NodePort, not the ClusterIP', async (t) => {
  const a = steered([[game, { internal: 41002 }]]);
  const b = steered([[game, { internal: 41002, external: 41003 }]]);
  t.same(staleConntrackFilters(a, b, ['ipv4']), [
    { family: 'ipv4', dst: '203.0.113.7', port: 7777 },
    { family: 'ipv4', dst: '198.51.100.7', port: 7777 },
    { family: 'ipv4', dst: null, port: 30777 },
  ]);
});

t.test('a new service port, address or NodePort is cleared; one without a listener is not', async (t) => {
  const moved = servicePort({
    ...{ name: 'game', protocol: 'UDP', port: 7777 },
    clusterIPs: ['10.96.0.77', '10.96.0.78'],
    nodePort: 30778,
  });
  const a = steered([[game, { internal: 41002 }]]);
  const b = steered([
    [moved, { internal: 41002 }],
    [dns, undefined],
  ]);
  t.same(staleConntrackFilters(a, b, ['ipv4']), [
    { family: 'ipv4', dst: '10.96.0.78', port: 7777 },
    { family: 'ipv4', dst: null, port: 30778 },
  ]);
});

t.test('the conntrack arguments', async (t) => {
  t.same(conntrackDeleteArgs({ family: 'ipv4', dst: '10.96.0.10', port: 53 }), [
    '-D',
    '-f',
    'ipv4',
    '-p',
    'udp',
    '--orig-dst',
    '10.96.0.10',
    '--orig-port-dst',
    '53',
  ]);
  t.same(
    conntrackDeleteArgs({ family: 'ipv6', dst: null, port: 30777 }),
    ['-D', '-f', 'ipv6', '-p', 'udp', '--orig-port-dst', '30777', '--dst-nat'],
    'a NodePort: any node address, translated entries only',
  );
});

t.test('a new cluster listener (both policies Local) clears the external destinations, not the ClusterIP', async (t) => {
  const localGame = servicePort({ ...gameSpec, internalTrafficPolicy: 'Local', externalTrafficPolicy: 'Local' });
  const a = steered([[localGame, { internal: 41002 }]]);
  const b = steered([[localGame, { internal: 41002, cluster: 41003 }]]);
  t.same(
    staleConntrackFilters(a, b, ['ipv4']).map((f) => f.dst),
    ['203.0.113.7', '198.51.100.7', null],
    "the node's own sessions to the external addresses now go to the cluster listener",
  );
});
