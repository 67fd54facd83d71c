import type { V1Service } from '@kubernetes/client-node';
import t from 'tap';
import { assignClusterIPs, parseServiceCIDR } from '../lib/core/cluster-ip-range.js';

const svc = (name: string, clusterIP?: string): V1Service => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'default' },
  spec: { ports: [{ port: 80 }], ...(clusterIP !== undefined ? { clusterIP } : {}) },
});

t.test('addresses are deterministic, inside the range, never the reserved ones, and probe past collisions', async (t) => {
  const cidr = parseServiceCIDR('--service-cluster-ip-range', '192.168.7.0/29'); // 8 addresses: .2-.6 usable
  const names = ['a', 'b', 'c', 'd', 'e'];
  const one = assignClusterIPs(
    names.map((n) => svc(n)),
    cidr,
    new Map(),
  );
  const two = assignClusterIPs(
    [...names].reverse().map((n) => svc(n)),
    cidr,
    new Map(),
  );
  t.same([...one.assigned.entries()].sort(), [...two.assigned.entries()].sort(), 'independent of file order');
  t.same(
    [...one.assigned.values()].sort(),
    ['192.168.7.2', '192.168.7.3', '192.168.7.4', '192.168.7.5', '192.168.7.6'],
    'all distinct, none reserved',
  );
  const full = assignClusterIPs([...names.map((n) => svc(n)), svc('f')], cidr, new Map());
  t.match(full.warnings, [
    /Service default\/f: no clusterIP and no free address left in --service-cluster-ip-range 192\.168\.7\.0\/29; skipped/,
  ]);
  const kept = assignClusterIPs([svc('a'), svc('z', one.assigned.get('default/a'))], cidr, new Map());
  t.not(kept.assigned.get('default/a'), one.assigned.get('default/a'), 'an address another Service names is taken');
  t.same(assignClusterIPs([svc('headless', 'None')], cidr, new Map()).assigned.size, 0, 'clusterIP None is left alone');
  t.throws(() => parseServiceCIDR('--service-cluster-ip-range', '10.96.0.0'), { message: /not an IPv4 CIDR/ });
});
