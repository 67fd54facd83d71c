/**
 * --no-handover: a kup started while another runs with the same --state-dir
 * exits 1 with one KUP_ALREADY_RUNNING line instead of taking over; the
 * running one keeps serving and is not told to stop.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { finished, startKup, waitForOutput } from './support/cli.js';
import { connect } from './support/net.js';
import { loopbackRunArgs, writeObjectsFile } from './support/kup-process.js';
import { service, slicesFor } from './support/objects.js';

t.test('--no-handover: the second kup refuses, the first keeps serving', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'kup-no-handover-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = await writeObjectsFile(t, [
    service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }),
    ...slicesFor('web', 'http', [1]),
  ]);
  const args = loopbackRunArgs(file, { metrics: '' }, ['--state-dir', join(dir, 'state')]);
  const first = startKup(args);
  t.teardown(() => void first.kill('SIGKILL'));
  const firstDone = finished(first, 30_000);
  const port = Number((await waitForOutput(first, /"proxyPort":(\d+)/))[1]);
  await waitForOutput(first, /admin servers listening/);

  const second = await finished(startKup([...args, '--no-handover']), 20_000);
  t.equal(second.code, 1, 'the second kup exits 1');
  const lines = second.stderr.split('\n').filter((l) => l.includes('another kup'));
  t.equal(lines.length, 1, 'with one line');
  t.match(
    lines[0],
    new RegExp(`^kup: another kup \\(pid ${first.pid}\\) is running .*not taking over \\(--no-handover\\)`),
    'naming the running kup',
  );
  t.notMatch(second.stderr, /\n\s+at /, 'no stack trace');
  t.notMatch(second.stdout + second.stderr, /taking over from kup pid|took over/, 'it did not take over');

  t.equal(first.exitCode, null, 'the first kup is still running');
  const s = await connect(port);
  s.destroy();
  t.pass('and still accepts on its proxy port');
  first.kill('SIGTERM');
  const r1 = await firstDone;
  t.equal(r1.code, 0, 'the first kup exits 0 on SIGTERM');
  t.notMatch(r1.stderr, /successor/, 'it never handed over');
});
