import t from 'tap';
import { PORT_MEMORY_MS, PortAllocator } from '../lib/dataplane/port-allocator.js';

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
  t.equal(a.allocate(new Set(), 'y|internal'), p2, 'after the memory time the port is anyone\'s');
});

t.test('kernel-chosen ports: the owner asks for its old port first, else 0', async (t) => {
  const a = new PortAllocator(null);
  t.equal(a.allocate(new Set(), 'web|internal'), 0);
  a.release(41234, 'web|internal');
  t.equal(a.allocate(new Set(), 'web|internal'), 41234);
  a.release(41234, 'web|internal');
  t.equal(a.allocate(new Set([41234]), 'web|internal'), 0, 'refused (taken meanwhile): the kernel chooses');
});
