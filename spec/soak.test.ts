import t from 'tap';
import { formatSoak, runSoak } from './support/soak.js';

t.test('a 30 s soak: no request fails, memory and descriptors level off', async (t) => {
  const r = await runSoak({ seconds: 30, connectRate: 150 });
  t.comment(formatSoak(r).split('\n').slice(0, 5).join('\n'));
  const failed = r.failures.connect + r.failures.keepAlive + r.failures.udp;
  t.equal(failed, 0, `no request failed (first failure: ${r.firstFailure})`);
  t.ok(r.requests.connect > 2000, `new connections made (${r.requests.connect})`);
  t.ok(r.requests.keepAlive > 1000, `keep-alive requests made (${r.requests.keepAlive})`);
  t.ok(r.requests.udp > 1000, `UDP queries made (${r.requests.udp})`);
  t.ok(r.samples.length >= 25, 'sampled every second');
  t.ok(
    r.levelsOff,
    `RSS ${Math.round(r.rssKiB.early / 1024)} -> ${Math.round(r.rssKiB.late / 1024)} MiB, descriptors ${r.fds.early} -> ${r.fds.late}`,
  );
});
