import t from 'tap';
import { BULK_OPEN_LINES } from '../lib/dataplane/proxier.js';
import { LogCapture, startHarness } from './support/harness.js';
import { service, slicesFor } from './support/objects.js';
import { nameServer } from './support/net.js';

/**
 * A sync that opens many listeners (a large cluster's first sync) says so in
 * one info line; the per-port lines move to debug. A sync opening a few still
 * logs each port at info, as users and the docs expect.
 */
t.test('a bulk open logs one summary line at info, a small one each port', async (t) => {
  const backend = await nameServer('a');
  const log = new LogCapture('info');
  const h = await startHarness({ log });
  t.teardown(async () => {
    await h.close();
    await backend.close();
  });
  const n = BULK_OPEN_LINES + 20;
  const clusterIP = (i: number): string => `10.96.${(i >> 8) & 255}.${(i & 255) + 1}`;
  const services = Array.from({ length: n }, (_, i) =>
    service({ name: `s${i}`, clusterIP: clusterIP(i), ports: [{ name: 'http', port: 80 }] }),
  );
  const slices = services.flatMap((_, i) => slicesFor(`s${i}`, 'http', [backend.port]));
  await h.set(services, slices);
  const info = h.log.messages('info');
  t.equal(info.filter((m) => m === 'opened proxy port').length, 0, 'no per-port lines at info');
  t.match(
    info.filter((m) => m.startsWith('opened ')),
    [new RegExp(`^opened ${n} proxy ports in \\d+ ms \\(one line each at --log-level debug; \`kup status\` lists them\\)$`)],
    'one summary line',
  );
  t.equal([...h.proxier.entries()].length, n, 'every port open');

  await h.set(
    [...services, service({ name: 'late', clusterIP: '10.97.0.1', ports: [{ name: 'http', port: 80 }] })],
    [...slices, ...slicesFor('late', 'http', [backend.port])],
  );
  const late = h.log.lines.filter((l) => l['msg'] === 'opened proxy port' && l['level'] === 'info');
  t.equal(late.length, 1, 'a later single port is logged at info');
  t.equal(late[0]?.['servicePort'], 'default/late:http/TCP');
});
