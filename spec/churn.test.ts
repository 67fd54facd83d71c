import { createHash } from 'node:crypto';
import t from 'tap';
import { startHarness } from './support/harness.js';
import { collect, connect, hashingServer, patternHash, writePattern } from './support/net.js';
import { service, slicesFor } from './support/objects.js';

/**
 * Data integrity under churn: 50 parallel transfers of 20 MB while the
 * endpoint set changes every 100 ms. Every byte must arrive, every checksum
 * match, and no connection may break (a change never closes established
 * connections, not even those to an endpoint it removed).
 */
t.test('50 x 20 MB transfers while endpoints change every 100 ms', async (t) => {
  const size = 20 * 1024 * 1024;
  const reply = 256 * 1024;
  const backends = await Promise.all(['a', 'b', 'c', 'd'].map((n) => hashingServer(n, reply)));
  const h = await startHarness();
  t.teardown(async () => {
    await h.close();
    await Promise.all(backends.map((b) => b.close()));
  });
  const svc = service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] });
  const sets = [
    [0, 1],
    [0, 1, 2],
    [1, 2, 3],
    [2, 3],
    [3, 0],
    [0, 2],
    [1, 3],
    [0, 1, 2, 3],
  ];
  const apply = (i: number) =>
    h.set(
      [svc],
      slicesFor(
        'web',
        'http',
        sets[i % sets.length]!.map((j) => backends[j]!.port),
      ),
    );
  await apply(0);
  const port = h.port('default/web:http/TCP');

  let changes = 0;
  let churning = true;
  const churn = (async () => {
    while (churning) {
      await new Promise((r) => setTimeout(r, 100));
      await apply(++changes);
    }
  })();

  const expected = patternHash(size);
  const started = Date.now();
  const results = await Promise.all(
    Array.from({ length: 50 }, async (_, i) => {
      // Started over 400 ms, so picks meet several endpoint sets however fast the proxy accepts.
      await new Promise((r) => setTimeout(r, i * 8));
      const s = await connect(port);
      const done = collect(s, 120_000);
      writePattern(s, size, () => s.end());
      return done;
    }),
  );
  churning = false;
  await churn;
  const seconds = (Date.now() - started) / 1000;
  const replyHash = patternHash(reply);
  let intact = 0;
  for (const r of results) {
    if (
      r.ended === 'end' &&
      r.data.length === reply + 64 &&
      createHash('sha256').update(r.data.subarray(0, reply)).digest('hex') === replyHash &&
      r.data.subarray(reply).toString() === expected
    )
      intact++;
  }
  t.comment(`1,000 MB through the proxy in ${seconds.toFixed(1)}s with ${changes} endpoint changes`);
  t.equal(intact, 50, 'every transfer complete and byte-exact both ways');
  t.ok(changes >= 5, `the endpoints changed during the transfers (${changes} times)`);
  const used = backends.filter((b) => b.received.length > 0).length;
  t.ok(used >= 3, `connections spread over the changing endpoint sets (${used} backends used)`);
  await new Promise((r) => setTimeout(r, 100));
  t.equal(h.entry('default/web:http/TCP').internal.connections, 0, 'no socket left open');
  t.equal(
    backends.reduce((n, b) => n + b.open.size, 0),
    0,
    'no backend socket left open',
  );
});
