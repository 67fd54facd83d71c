import t from 'tap';
import { collectNow, HeapSettler } from '../lib/runtime/settle-heap.js';

/** ~40 MB of objects, unreachable once this returns. */
function makeGarbage(): number {
  const junk: { i: number; s: string }[] = [];
  for (let i = 0; i < 400_000; i++) junk.push({ i, s: `object ${i}` });
  return junk.length;
}

t.test('collectNow collects garbage now, without exposing gc to kup', (t) => {
  t.equal(makeGarbage(), 400_000);
  const before = process.memoryUsage().heapUsed;
  const ms = collectNow();
  const after = process.memoryUsage().heapUsed;
  t.type(ms, 'number', 'the pause is reported');
  t.ok(after < before - 10 * 1024 * 1024, `the garbage is gone (${(before / 1048576).toFixed(1)} -> ${(after / 1048576).toFixed(1)} MiB)`);
  t.equal((globalThis as { gc?: unknown }).gc, undefined, 'no global gc() appears');
  t.end();
});

t.test('HeapSettler skips the collection when V8 just made a major one, else collects', async (t) => {
  const fresh = new HeapSettler();
  await new Promise((r) => setTimeout(r, 1100));
  t.type(fresh.settle(), 'number', 'no recent major collection: it collects');

  const settler = new HeapSettler();
  collectNow(); // a major collection the observer sees, as V8's own would be
  await new Promise((r) => setTimeout(r, 50)); // gc entries arrive asynchronously
  t.equal(settler.settle(), null, 'just collected: skipped');
});
