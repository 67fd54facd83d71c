/** The address module: families, CIDRs, ports and host:port text, as every other module reads and writes them. */
import t from 'tap';
import {
  cidrFamily,
  familyName,
  ipFamily,
  isValidIP,
  isValidPort,
  joinHostPort,
  normalizeClientIP,
  parseCidr,
  sameIP,
  splitHostPort,
} from '../lib/core/address.js';

t.test('IP family', async (t) => {
  t.equal(ipFamily('10.0.0.1'), 4);
  t.equal(ipFamily('2001:db8::1'), 6);
  t.equal(ipFamily('::ffff:10.0.0.1'), 6, 'an IPv4-mapped address is IPv6');
  for (const bad of [
    '',
    'example.com',
    '10.0.0.01',
    '10.0.0',
    '300.0.0.1',
    'fe80::1%eth0',
    ' 10.0.0.1',
    'a'.repeat(46),
    4,
    null,
    undefined,
  ]) {
    t.equal(ipFamily(bad), 0, `${JSON.stringify(bad)} is no address`);
    t.equal(familyName(bad), null);
    t.equal(isValidIP(bad), false);
  }
  t.equal(familyName('192.0.2.1'), 'ipv4');
  t.equal(familyName('fd00::10'), 'ipv6');
});

t.test('CIDRs', async (t) => {
  t.same(parseCidr('10.0.0.0/8'), { family: 'ipv4', cidr: '10.0.0.0/8' });
  t.same(parseCidr('2001:db8::/32'), { family: 'ipv6', cidr: '2001:db8::/32' });
  t.same(parseCidr('10.0.0.1/032'), { family: 'ipv4', cidr: '10.0.0.1/32' }, 'the prefix length is written without leading zeros');
  t.same(parseCidr('::/0'), { family: 'ipv6', cidr: '::/0' });
  t.same(parseCidr('2001:db8::1/128'), { family: 'ipv6', cidr: '2001:db8::1/128' });
  for (const bad of [
    '10.0.0.0/33',
    '2001:db8::/129',
    '10.0.0.0',
    '10.0.0.0/',
    '10.0.0.0/-1',
    '10.0.0.0/8/8',
    'x/8',
    '10.0.0.0/1e1',
    '/8',
    8,
  ]) {
    t.equal(parseCidr(bad), null, `${JSON.stringify(bad)} is no CIDR`);
    t.equal(cidrFamily(bad), 0);
  }
  t.equal(cidrFamily('198.51.100.0/24'), 4);
  t.equal(cidrFamily('fd00::/8'), 6);
});

t.test('ports', async (t) => {
  for (const ok of [1, 80, 65535]) t.equal(isValidPort(ok), true, `${ok}`);
  for (const bad of [0, -1, 65536, 80.5, NaN, '80', null]) t.equal(isValidPort(bad), false, `${String(bad)}`);
});

t.test('host:port, both ways', async (t) => {
  t.equal(joinHostPort('10.96.0.10', 53), '10.96.0.10:53');
  t.equal(joinHostPort('fd00::10', 80), '[fd00::10]:80', 'IPv6 in brackets, as net.JoinHostPort');
  t.equal(joinHostPort('localhost', 8080), 'localhost:8080');
  t.same(splitHostPort('10.96.0.10:53'), { host: '10.96.0.10', port: 53 });
  t.same(splitHostPort('[fd00::10]:80'), { host: 'fd00::10', port: 80 });
  t.same(splitHostPort('0.0.0.0:0'), { host: '0.0.0.0', port: 0 }, 'port 0 (kernel-chosen) is for the caller to refuse');
  for (const bad of [
    'fd00::10:80',
    '10.96.0.10',
    '10.96.0.10:',
    'host:80',
    '10.96.0.10:65536',
    '10.96.0.10:123456',
    '[10.96.0.10:80',
    ':80',
    '10.96.0.10:8a',
  ]) {
    t.equal(splitHostPort(bad), null, `${JSON.stringify(bad)} does not split`);
  }
  for (const [host, port] of [
    ['10.0.0.1', 80],
    ['2001:db8::1', 443],
  ] as const) {
    t.same(splitHostPort(joinHostPort(host, port)), { host, port }, `${host} round-trips`);
  }
});

t.test('one address, however spelt', async (t) => {
  t.equal(sameIP('2001:db8::1', '2001:DB8:0:0::1'), true);
  t.equal(sameIP('2001:db8::1', '2001:db8::2'), false);
  t.equal(sameIP('10.0.0.1', '10.0.0.1'), true);
  t.equal(sameIP('10.0.0.1', '::ffff:10.0.0.1'), false, 'families differ: the kernel matches them apart');
  t.equal(normalizeClientIP('::ffff:10.0.0.1'), '10.0.0.1', 'a dual-stack peer is one client');
  t.equal(normalizeClientIP('2001:db8::1'), '2001:db8::1');
  t.equal(normalizeClientIP(undefined), '');
});
