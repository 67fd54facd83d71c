import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { runCommand } from '../lib/iptables/command.js';
import { findBinary } from '../lib/iptables/backend.js';
import { deadPort } from './support/net.js';
import { startKupProcess } from './support/kup-process.js';

/**
 * Issue 10, item 1, with the real programs: dnsmasq closes a TCP connection
 * after 100 queries while dnsperf keeps pipelining on it. Through kup, every
 * connection must end: active connections and descriptors back to baseline.
 */
const missing = async (): Promise<string | null> => {
  for (const bin of ['dnsmasq', 'dnsperf']) {
    if ((await findBinary(bin)) === null) return `needs ${bin} (apt-get install -y dnsmasq-base dnsperf)`;
  }
  return null;
};

const reason = await missing();
if (reason !== null && process.env.CI === 'true') {
  t.fail(`CI=true but ${reason}`);
} else {
  t.test('dnsperf over TCP through kup to dnsmasq: no connection left behind', { skip: reason ?? false }, async (t) => {
    const dir = t.testdir();
    const dnsPort = await deadPort();
    const dnsmasq = spawn(
      'dnsmasq',
      [
        '--keep-in-foreground',
        '--conf-file=/dev/null',
        '--no-resolv',
        '--no-hosts',
        '--listen-address=127.0.0.1',
        '--bind-interfaces',
        `--port=${dnsPort}`,
        '--address=/example.test/10.0.0.1',
        '--user=root',
        '--pid-file=',
      ],
      { stdio: 'pipe' },
    );
    t.teardown(() => dnsmasq.kill('SIGKILL'));
    await new Promise((r) => setTimeout(r, 300));
    t.equal(dnsmasq.exitCode, null, 'dnsmasq is running');
    const kup = await startKupProcess(t, { endpoints: [dnsPort], port: { name: 'dns', port: 53 }, grace: '2s' });
    await kup.metric('kup_connections_active');
    const baseline = kup.openFds();
    const queries = join(dir, 'queries');
    writeFileSync(queries, Array.from({ length: 50 }, (_, i) => `host${i}.example.test A\n`).join(''));
    const r = await runCommand(
      'dnsperf',
      ['-m', 'tcp', '-s', '127.0.0.1', '-p', String(kup.port), '-d', queries, '-c', '4', '-l', '3', '-q', '50'],
      {
        timeoutMs: 30_000,
      },
    );
    const completed = /Queries completed:\s+(\d+)/.exec(r.stdout);
    t.ok(completed !== null && Number(completed[1]) >= 400, `dnsperf got answers through kup (${completed?.[1] ?? r.stdout + r.stderr})`);
    const accepted = await kup.metric('kup_connections_accepted_total');
    // dnsperf keeps one connection per client; dnsmasq answers 100 on each, then closes it mid-pipeline.
    t.ok(accepted >= 4, `${accepted} connections, each closed by dnsmasq after 100 answers`);
    let active: number;
    const deadline = Date.now() + 8000;
    for (;;) {
      active = await kup.metric('kup_connections_active');
      if ((active === 0 && kup.openFds() <= baseline + 2) || Date.now() > deadline) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    t.equal(active, 0, `kup_connections_active back to 0 after ${accepted} connections`);
    t.equal(await kup.metric('kup_endpoint_active_connections'), 0, "dnsmasq's active count back to 0");
    t.ok(kup.openFds() <= baseline + 2, `descriptors back to the baseline of ${baseline} (now ${kup.openFds()})`);
    const signalled = Date.now();
    kup.child.kill('SIGTERM');
    const done = await kup.done;
    t.equal(done.code, 0, 'SIGTERM: exit 0');
    t.ok(Date.now() - signalled < 3500, 'within the grace period');
  });
}
