import t from 'tap';
import { settleHeap } from '../lib/runtime/settle-heap.js';

t.test('settleHeap collects garbage now, without exposing gc to kup', (t) => {
  let junk: { i: number; s: string }[] | null = [];
  for (let i = 0; i < 400_000; i++) junk.push({ i, s: `object ${i}` });
  t.ok(junk.length > 0);
  junk = null;
  const before = process.memoryUsage().heapUsed;
  const ms = settleHeap();
  const after = process.memoryUsage().heapUsed;
  t.type(ms, 'number', 'the pause is reported');
  t.ok(after < before - 10 * 1024 * 1024, `the garbage is gone (${(before / 1048576).toFixed(1)} -> ${(after / 1048576).toFixed(1)} MiB)`);
  t.equal((globalThis as { gc?: unknown }).gc, undefined, 'no global gc() appears');
  t.end();
});
