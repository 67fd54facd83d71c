/**
 * diffTables, the one place that decides what the data plane and the rules
 * must change: unit tests without sockets (the behaviour tests reach it only
 * through listeners opening and closing).
 */
import t from 'tap';
import { diffTables, isEmptyDiff, servicePortEqual } from '../lib/core/table-diff.js';
import type { ServicePortKey } from '../lib/core/types.js';
import { endpoint, servicePort, tableOf } from './support/service-fixtures.js';

const web = servicePort({ name: 'web', portName: 'http', port: 80, clusterIPs: ['10.96.0.10'] });
const api = servicePort({ name: 'api', portName: 'http', port: 80, clusterIPs: ['10.96.0.11'] });
const dns = servicePort({ name: 'dns', portName: 'dns', protocol: 'UDP', port: 53, clusterIPs: ['10.96.0.53'] });
const keys = (ps: readonly { key: ServicePortKey }[]): string[] => ps.map((p) => p.key).sort();

t.test('added, removed and updated are told apart; unchanged ports are in none of them', async (t) => {
  const webScaled = servicePort({
    name: 'web',
    portName: 'http',
    port: 80,
    clusterIPs: ['10.96.0.10'],
    endpoints: [endpoint('10.244.0.5', 8080), endpoint('10.244.0.6', 8080)],
  });
  const d = diffTables(tableOf([web, api]), tableOf([webScaled, dns]));
  t.same(keys(d.added), [dns.key], 'dns is new');
  t.same(keys(d.removed), [api.key], 'api is gone');
  t.equal(d.updated.length, 1, 'web changed');
  t.equal(d.updated[0]?.prev, web, 'with the old version');
  t.equal(d.updated[0]?.next, webScaled, 'and the new one');
  t.notOk(isEmptyDiff(d));
});

t.test('equal content in a different object is no change', async (t) => {
  const copy = servicePort({ name: 'web', portName: 'http', port: 80, clusterIPs: ['10.96.0.10'] });
  t.not(copy, web, 'a distinct object');
  t.ok(servicePortEqual(copy, web), 'that compares equal');
  const d = diffTables(tableOf([web]), tableOf([copy]));
  t.ok(isEmptyDiff(d), 'no diff');
  t.same(d, { added: [], updated: [], removed: [] });
});

t.test('any field that differs is an update (a NodePort, a policy, an endpoint condition)', async (t) => {
  const variants = [
    servicePort({ name: 'web', portName: 'http', port: 80, clusterIPs: ['10.96.0.10'], nodePort: 30080 }),
    servicePort({ name: 'web', portName: 'http', port: 80, clusterIPs: ['10.96.0.10'], externalTrafficPolicy: 'Local' }),
    servicePort({
      name: 'web',
      portName: 'http',
      port: 80,
      clusterIPs: ['10.96.0.10'],
      endpoints: [{ ...endpoint('10.244.0.5', 8080), ready: false }],
    }),
  ];
  for (const v of variants) {
    t.notOk(servicePortEqual(web, v));
    t.equal(diffTables(tableOf([web]), tableOf([v])).updated.length, 1);
  }
});

t.test('keys limit the diff to the ports named', async (t) => {
  const d = diffTables(tableOf([web, api]), tableOf([dns]), [api.key]);
  t.same(keys(d.removed), [api.key], 'only api is looked at');
  t.same(d.added, [], 'dns is outside the scope');
  t.ok(isEmptyDiff(diffTables(tableOf([web]), tableOf([]), [])), 'an empty scope is an empty diff');
});
