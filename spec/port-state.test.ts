/**
 * proxy-ports.json (issue 14): written atomically when the listeners change,
 * read back at start; a corrupt or foreign file is one warning and a fresh start.
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { pino } from 'pino';
import { PORT_STATE_FILE, PortStateWriter, readPortState } from '../lib/runtime/port-state.js';

function capture() {
  const lines: { level: number; msg: string }[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s) as { level: number; msg: string }) });
  return { log, lines };
}

t.test('the map is written when it changes, coalesced, and read back', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'kup-port-state-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const { log, lines } = capture();
  let map = new Map([['default/web:http/TCP|internal', 40001]]);
  const w = new PortStateWriter(dir, () => map, log);
  w.changed();
  map = new Map([...map, ['default/web:dns/UDP|internal', 40002]]);
  w.changed();
  await new Promise((r) => setTimeout(r, 400));
  t.same(
    JSON.parse(await readFile(join(dir, PORT_STATE_FILE), 'utf8')),
    {
      version: 1,
      ports: { 'default/web:dns/UDP|internal': 40002, 'default/web:http/TCP|internal': 40001 },
    },
    'both changes, one write',
  );
  t.same(
    [...(await readPortState(dir, log))],
    [
      ['default/web:dns/UDP|internal', 40002],
      ['default/web:http/TCP|internal', 40001],
    ],
  );
  t.same(await readdir(dir), [PORT_STATE_FILE], 'no temp file left');
  w.stop();
  map = new Map();
  w.changed();
  await w.flush();
  t.equal((await readPortState(dir, log)).size, 2, 'a stopped writer (kup stopping) leaves the map as it was');
  t.same(lines, [], 'nothing logged');
});

t.test('a corrupt or unknown file: one warning, start fresh', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'kup-port-state-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const text of ['{"version":1,"ports":{"a|internal":40', '{"version":2,"ports":{}}', '{"version":1,"ports":{"a|internal":70000}}']) {
    await writeFile(join(dir, PORT_STATE_FILE), text);
    const { log, lines } = capture();
    t.equal((await readPortState(dir, log)).size, 0, `${text}: no ports`);
    t.equal(lines.length, 1, 'one line');
    t.match(lines[0]?.msg, /proxy port state unreadable \(corrupt or from another version\); starting fresh/);
  }
  const { log, lines } = capture();
  t.equal((await readPortState(join(dir, 'absent'), log)).size, 0, 'no file: no ports');
  t.same(lines, [], 'and no warning (a first start)');
});
