/** --expose-on-loopback's address per Service: stable, inside 127/8 but outside 127.0/16, distinct on collision. */
import t from 'tap';
import { hostsBlock, hostsLine, loopbackAddressFor, LOOPBACK_SLOTS } from '../lib/core/loopback-address.js';

function octets(a: string): number[] {
  return a.split('.').map(Number);
}

t.test('the same name gives the same address; the address is a usable loopback one', async (t) => {
  const a = loopbackAddressFor('default', 'web');
  t.equal(loopbackAddressFor('default', 'web'), a, 'stable');
  t.match(a, /^127\.\d+\.\d+\.\d+$/);
  t.not(loopbackAddressFor('default', 'web2'), a, 'another name, another address');
  t.not(loopbackAddressFor('other', 'web'), a, 'another namespace, another address');
  t.equal(LOOPBACK_SLOTS, 254 * 256 * 254);
  const seen = new Set<string>();
  for (let i = 0; i < 5000; i++) {
    const [o1, o2, o3, o4] = octets(loopbackAddressFor(`ns${i % 7}`, `svc-${i}`));
    if (o1 !== 127 || o2 === undefined || o3 === undefined || o4 === undefined) return t.fail('four octets in 127/8');
    if (o2 < 1 || o2 > 254 || o3 < 0 || o3 > 255 || o4 < 1 || o4 > 254) return t.fail(`out of range: 127.${o2}.${o3}.${o4}`);
    seen.add(`${o2}.${o3}.${o4}`);
  }
  t.ok(seen.size > 4990, `spread: ${seen.size} distinct of 5000`);
});

t.test('a taken address moves the newcomer elsewhere, deterministically', async (t) => {
  const first = loopbackAddressFor('default', 'web');
  const second = loopbackAddressFor('default', 'web', new Set([first]));
  t.not(second, first);
  t.equal(loopbackAddressFor('default', 'web', new Set([first])), second, 'the probe is the same every time');
  const third = loopbackAddressFor('default', 'web', new Set([first, second]));
  t.not(third, first);
  t.not(third, second);
});

t.test('the hosts-file line names the Service as cluster DNS does', async (t) => {
  t.equal(hostsLine('127.3.4.5', 'default', 'web'), '127.3.4.5 web.default web.default.svc web.default.svc.cluster.local');
});

t.test('the hosts block lists every exposed Service, sorted', async (t) => {
  t.equal(
    hostsBlock([
      { namespace: 'default', name: 'web', address: '127.3.4.5' },
      { namespace: 'default', name: 'api', address: '127.9.8.7' },
    ]),
    '# kup --expose-on-loopback: add to /etc/hosts\n' +
      '127.9.8.7 api.default api.default.svc api.default.svc.cluster.local\n' +
      '127.3.4.5 web.default web.default.svc web.default.svc.cluster.local\n',
  );
});
