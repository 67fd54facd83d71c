/**
 * PortAllocator hands out --proxy-port-range ports: unit tests of the lending
 * without sockets (tcp-dataplane.test.ts covers the kernel refusing a port).
 */
import t from 'tap';
import { parsePortRange } from '../lib/core/port-range.js';
import { PORT_MEMORY_MS, PortAllocator } from '../lib/dataplane/port-allocator.js';

t.test('no range: every allocation is 0, the kernel chooses', async (t) => {
  const a = new PortAllocator(null);
  t.equal(a.allocate(), 0);
  t.equal(a.allocate(), 0, 'again: nothing is lent out');
});

t.test('a range is lent out in order, each port once, then exhausted', async (t) => {
  const a = new PortAllocator(parsePortRange('30000-30002'));
  t.same([a.allocate(), a.allocate(), a.allocate()], [30000, 30001, 30002]);
  t.equal(a.allocate(), undefined, 'all three are lent');
});

t.test('a released port is lent again, after the ones not yet used', async (t) => {
  const a = new PortAllocator({ base: 40000, size: 3 });
  t.equal(a.allocate(), 40000);
  t.equal(a.allocate(), 40001);
  a.release(40000);
  t.equal(a.allocate(), 40002, 'the cursor moves on before reusing');
  t.equal(a.allocate(), 40000, 'then the released one');
  t.equal(a.allocate(), undefined);
});

t.test('refused ports are skipped; when all free ones are refused there is none', async (t) => {
  const a = new PortAllocator({ base: 50000, size: 4 });
  t.equal(a.allocate(new Set([50000, 50001])), 50002, 'the first two are in use elsewhere');
  t.equal(a.allocate(new Set([50003])), 50000, 'wraps around past a refused port');
  t.equal(a.allocate(new Set([50001, 50003])), undefined, 'the rest are refused');
  t.equal(a.allocate(), 50001, 'and lent once no longer refused');
});

t.test('a released port goes back to its owner, and to no one else while other ports are free', async (t) => {
  let now = 0;
  const a = new PortAllocator({ base: 30000, size: 3 }, () => now);
  const p1 = a.allocate(new Set(), 'web|internal')!;
  const p2 = a.allocate(new Set(), 'api|internal')!;
  a.release(p1, 'web|internal');
  const other = a.allocate(new Set(), 'db|internal')!;
  t.not(other, p1, 'a newcomer does not take the port kept for web');
  t.not(other, p2);
  t.equal(a.allocate(new Set(), 'web|internal'), p1, 'web gets its port back');
  // When nothing else is left, a kept port is lent rather than failing.
  a.release(p1, 'web|internal');
  t.equal(a.allocate(new Set(), 'x|internal'), p1, 'range exhausted: the kept port is lent');
  t.equal(a.allocate(new Set(), 'web|internal'), undefined, 'and web, now out of luck, gets none');
  // Memory fades.
  a.release(p2, 'api|internal');
  now += PORT_MEMORY_MS + 1;
  t.equal(a.allocate(new Set(), 'y|internal'), p2, "after the memory time the port is anyone's");
});

t.test('kernel-chosen ports: the owner asks for its old port first, else 0', async (t) => {
  const a = new PortAllocator(null);
  t.equal(a.allocate(new Set(), 'web|internal'), 0);
  a.release(41234, 'web|internal');
  t.equal(a.allocate(new Set(), 'web|internal'), 41234);
  a.release(41234, 'web|internal');
  t.equal(a.allocate(new Set([41234]), 'web|internal'), 0, 'refused (taken meanwhile): the kernel chooses');
});

t.test('a persisted port is preferred by its owner; one outside a changed range is dropped', async (t) => {
  const a = new PortAllocator({ base: 40000, size: 10 });
  a.prefer('default/web:http/TCP|internal', 40007);
  a.prefer('default/old:http/TCP|internal', 39000);
  t.equal(a.allocate(new Set(), 'default/web:http/TCP|internal'), 40007, 'the owner gets its persisted port back');
  t.equal(a.allocate(new Set(), 'default/other:http/TCP|internal'), 40000, 'others get fresh ports');
  t.equal(a.allocate(new Set(), 'default/old:http/TCP|internal'), 40001, 'a port outside the range is not reused');
  const k = new PortAllocator(null);
  k.prefer('default/web:dns/UDP|internal', 45123);
  t.equal(k.allocate(new Set(), 'default/web:dns/UDP|internal'), 45123, 'without a range, the kernel-chosen port is asked for again');
  t.equal(k.allocate(new Set([45123]), 'default/web:dns/UDP|internal'), 0, 'and the kernel chooses when it is taken');
});
