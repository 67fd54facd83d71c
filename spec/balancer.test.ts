import t from 'tap';
import { Balancer, createStrategy, FAILURE_COOLDOWN_MS } from '../lib/core/balancer/balancer.js';
import { SessionAffinity } from '../lib/core/balancer/session-affinity.js';
import type { Endpoint } from '../lib/core/types.js';

const ep = (ip: string): Endpoint => ({
  ip,
  port: 80,
  ready: true,
  serving: true,
  terminating: false,
  nodeName: null,
  zone: null,
  zoneHints: [],
  nodeHints: [],
  isLocal: false,
});

t.test('round-robin rotates and keeps counters across updates', async (t) => {
  const b = new Balancer(createStrategy('round-robin'));
  b.update([ep('10.0.0.1'), ep('10.0.0.2'), ep('10.0.0.3')]);
  const picks = Array.from({ length: 6 }, () => b.pick('c')!.endpoint.ip);
  t.same(picks, ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.1', '10.0.0.2', '10.0.0.3']);
  const kept = b.endpoints[1]!;
  kept.active = 7;
  b.update([ep('10.0.0.2'), ep('10.0.0.4')]);
  t.equal(b.endpoints[0], kept, 'the same state object survives the update');
  t.equal(b.endpoints[0]!.active, 7);
  t.equal(b.endpoints[0]!.picks, 2);
  t.equal(b.peek('c'), b.pick('c'), 'peek tells the next pick');
  b.update([]);
  t.equal(b.pick('c'), undefined);
});

t.test('least-connections picks the fewest active, ties round-robin', async (t) => {
  const b = new Balancer(createStrategy('least-connections'));
  b.update([ep('10.0.0.1'), ep('10.0.0.2'), ep('10.0.0.3')]);
  const ties = Array.from({ length: 3 }, () => b.pick('c')!.endpoint.ip);
  t.same(ties, ['10.0.0.1', '10.0.0.2', '10.0.0.3'], 'all idle: rotate');
  b.endpoints[0]!.active = 2;
  b.endpoints[2]!.active = 1;
  t.equal(b.pick('c')!.endpoint.ip, '10.0.0.2');
  t.equal(b.pick('c')!.endpoint.ip, '10.0.0.2', 'still the least loaded');
});

t.test('a failed endpoint is passed over during its cool-down, unless it is all there is', async (t) => {
  let now = 1_000_000;
  const b = new Balancer(createStrategy('round-robin'), null, () => now);
  b.update([ep('10.0.0.1'), ep('10.0.0.2')]);
  const dead = b.pick('c')!;
  b.reportFailure(dead, 'c');
  t.same(
    Array.from({ length: 4 }, () => b.pick('c')!.endpoint.ip),
    Array(4).fill('10.0.0.2'),
  );
  now += FAILURE_COOLDOWN_MS + 1;
  t.same(Array.from({ length: 2 }, () => b.pick('c')!.endpoint.ip).sort(), ['10.0.0.1', '10.0.0.2'], 'back after the cool-down');
  const single = new Balancer(createStrategy('least-connections'), null, () => now);
  single.update([ep('10.0.0.9')]);
  single.reportFailure(single.endpoints[0]!, 'c');
  t.equal(single.pick('c')!.endpoint.ip, '10.0.0.9', 'the only endpoint is still tried');
});

t.test('session affinity: sticky within the timeout, released after, timeout changes apply', async (t) => {
  let now = 0;
  const aff = new SessionAffinity(10, () => now);
  const b = new Balancer(createStrategy('round-robin'), aff, () => now);
  b.update([ep('10.0.0.1'), ep('10.0.0.2')]);
  const first = b.pick('192.0.2.1')!;
  now = 9_000;
  t.equal(b.pick('192.0.2.1'), first, 'sticky');
  t.not(b.pick('192.0.2.2'), first, 'another client is balanced');
  now = 18_999;
  t.equal(b.pick('192.0.2.1'), first, 'each hit refreshes the entry');
  aff.setTimeout(1);
  now = 20_500;
  t.equal(aff.peek('192.0.2.1', b.endpoints), undefined, 'a shorter timeout applies to existing entries');
  b.update([ep('10.0.0.3')]);
  t.equal(b.pick('192.0.2.1')!.endpoint.ip, '10.0.0.3', 'a vanished endpoint releases its clients');
});

t.test('one family per virtual IP: picks stay in the family asked for, each family with its own rotation', async (t) => {
  const b = new Balancer(createStrategy('round-robin'));
  b.update([ep('10.0.0.1'), ep('10.0.0.2'), ep('fd00::1'), ep('fd00::2')]);
  const picks: string[] = [];
  for (let i = 0; i < 3; i++) {
    picks.push(b.pick('', null, 4)!.endpoint.ip);
    picks.push(b.pick('', null, 6)!.endpoint.ip);
  }
  t.same(picks, ['10.0.0.1', 'fd00::1', '10.0.0.2', 'fd00::2', '10.0.0.1', 'fd00::1'], 'IPv4 to IPv4, IPv6 to IPv6, each in turn');
  t.equal(b.peek('', 4)!.endpoint.ip, '10.0.0.2', 'peek tells the family’s next pick');
  t.equal(b.peek('', 6)!.endpoint.ip, 'fd00::2');
  t.equal(b.size, 4, 'every endpoint is still listed');
  b.update([ep('10.0.0.1'), ep('10.0.0.2')]);
  t.equal(b.pick('', null, 6), undefined, 'no IPv6 endpoint: an IPv6 client gets none');
  t.equal(b.pick('', null, 4)!.endpoint.ip, '10.0.0.2', 'while IPv4 goes on where it was');
  const retry = b.pick('', new Set([b.endpoints[0]!, b.endpoints[1]!]), 4);
  t.ok(retry !== undefined && retry.endpoint.ip.startsWith('10.'), 'a retry with every IPv4 endpoint tried stays IPv4');
});

t.test('least-connections per family: an idle endpoint of the other family is never chosen', async (t) => {
  const b = new Balancer(createStrategy('least-connections'));
  b.update([ep('10.0.0.1'), ep('10.0.0.2'), ep('fd00::1')]);
  b.endpoints[0]!.active = 3;
  b.endpoints[1]!.active = 2;
  t.equal(b.pick('', null, 4)!.endpoint.ip, '10.0.0.2', 'the least loaded IPv4 endpoint, not the idle IPv6 one');
  t.equal(b.pick('', null, 6)!.endpoint.ip, 'fd00::1');
});

t.test('ClientIP affinity never crosses families', async (t) => {
  const aff = new SessionAffinity(60);
  const b = new Balancer(createStrategy('round-robin'), aff);
  b.update([ep('10.0.0.1'), ep('fd00::1')]);
  // One key stuck to an IPv4 endpoint (an affinity entry is per client address, so this is the worst case).
  t.equal(b.pick('client', null, 4)!.endpoint.ip, '10.0.0.1');
  t.equal(b.pick('client', null, 6)!.endpoint.ip, 'fd00::1', 'the IPv4 stickiness does not drag an IPv6 connection across');
  t.equal(b.pick('client', null, 6)!.endpoint.ip, 'fd00::1', 'and the IPv6 pick is now the sticky one');
  t.equal(b.peek('client', 4)!.endpoint.ip, '10.0.0.1', 'peek for IPv4 ignores the IPv6 entry');
});
