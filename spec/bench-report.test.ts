import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { ChangeFigures, ControlPlaneResult, StartupFigures } from '../bench/control-plane.js';
import { checkTargets, mediansOf, renderReport, type BenchResult, type Samples } from '../bench/report.js';

// The bench's verdicts are what issue 15's closing note quotes: each target's
// threshold is checked here on made-up medians, and the Markdown a results
// file turns into (bench/PERFORMANCE.md) is read back as a user would.

const contenders = ['direct', 'haproxy', 'nginx', 'socat', 'kup-js', 'kup-native'];

function samples(): Samples {
  return {
    keepalive: {
      direct: [{ rps: 30_000 }],
      haproxy: [{ rps: 10_000 }],
      nginx: [{ rps: 12_000 }],
      socat: [{ rps: 5_000 }],
      'kup-js': [{ rps: 6_000 }],
      // Two rounds: the median (13,200) is exactly 1.1x nginx, the best peer.
      'kup-native': [{ rps: 13_000 }, { rps: 13_400 }],
    },
    newconn: { haproxy: [{ rps: 2_000 }], 'kup-native': [{ rps: 1_999 }], 'kup-js': [{ rps: 900 }] },
    tcp1: { haproxy: [{ gbps: 2 }], 'kup-native': [{ gbps: 2.2 }], 'kup-js': [{ gbps: 0.6 }] },
    tcp8: { haproxy: [{ gbps: 2 }], 'kup-native': [{ gbps: 2.19 }], 'kup-js': [{ gbps: 1 }] },
    dns: {
      nginx: [{ qps: 8_000, lossPct: 0 }],
      // 1.5x nginx but with loss: not met.
      'kup-native': [{ qps: 12_000, lossPct: 0.01 }],
      'kup-js': [{ qps: 12_000, lossPct: 0 }],
    },
    idle: { 'kup-native': [{ perConnKiB: 4 }], 'kup-js': [{ perConnKiB: 4.1 }] },
  };
}

const startup = (services: number, rssMiB: number, afterListSeconds: number): StartupFigures => ({
  services,
  endpoints: services * 5,
  syncedSeconds: 1,
  firstServedSeconds: 1,
  allServingSeconds: 2,
  afterListSeconds,
  rssMiB,
  rssAfterChangesMiB: null,
  openFiles: services + 30,
  fdLimit: 20_000,
});

const change = (perSecond: number, p99ms: number, servicesPresent = 10_000): ChangeFigures => ({
  perSecond,
  startedAfterSpawnMs: 0,
  count: 50,
  servicesPresent,
  p50ms: 5,
  p99ms,
  maxms: p99ms,
  over20ms: 0,
  failed: 0,
  samples: [],
});

const cp: ControlPlaneResult = {
  small: startup(1000, 150, 0.5),
  large: startup(10_000, 251, 2.9),
  changes: [change(10, 20), change(100, 20.5)],
  flags: 'kup run --source kubernetes',
};

function verdicts(rows: ReturnType<typeof checkTargets>, kup: string): Record<string, boolean | null> {
  return Object.fromEntries(rows.map((r) => [r.target, r.byKup[kup]?.met ?? null]));
}

t.test('each target is judged at its threshold, for each relay', async (t) => {
  const rows = checkTargets(samples(), cp, contenders);
  t.same(verdicts(rows, 'kup-native'), {
    'keep-alive req/s >= 1.1x the best peer': true,
    'new connections/s >= 1.0x HAProxy': false,
    'TCP 1 stream >= 1.1x HAProxy': true,
    'TCP 8 streams >= 1.1x HAProxy': false,
    'UDP DNS q/s >= 1.5x nginx stream, 0 loss': false,
    'idle connection <= 4 KiB': true,
    'RSS <= 250 MiB at 10,000 services': false,
    'serving < 3 s after the list at 10,000 services': true,
    'change-to-traffic p99 <= 20 ms at 10/s': true,
    'change-to-traffic p99 <= 20 ms at 100/s': false,
  });
  const js = verdicts(rows, 'kup-js');
  t.equal(js['UDP DNS q/s >= 1.5x nginx stream, 0 loss'], true, 'the js relay has no loss at 1.5x');
  t.equal(js['idle connection <= 4 KiB'], false);
  const keepAlive = rows.find((r) => r.target.startsWith('keep-alive'))!;
  t.equal(keepAlive.byKup['kup-native']!.measured, '1.10x nginx (13,200 vs 12,000 req/s)', 'the best peer is named with both figures');
});

t.test('a quick run at 1,000 services shows its figures but does not judge the 10,000-service targets', async (t) => {
  const quick: ControlPlaneResult = { small: startup(1000, 150, 0.5), large: null, changes: [change(10, 5, 1000)], flags: '' };
  const rows = checkTargets(samples(), quick, contenders);
  const rss = rows.find((r) => r.target.startsWith('RSS'))!.byKup['kup-native']!;
  t.same(rss, { measured: '150 MiB at 1,000 services (not at 10,000)', met: null });
  const ch = rows.find((r) => r.target.endsWith('at 10/s'))!.byKup['kup-native']!;
  t.equal(ch.met, null);
  t.equal(rows.find((r) => r.target.endsWith('at 100/s'))!.byKup['kup-native']!.measured, 'not measured');
  t.equal(checkTargets({}, null, contenders)[0]!.byKup['kup-native']!.measured, 'not measured', 'no samples, no verdict');
});

function result(): BenchResult {
  const s = samples();
  return {
    date: '2026-11-25T21:00:00.000Z',
    machine: {
      cpuModel: 'AMD EPYC',
      nproc: 2,
      memGiB: 24,
      uname: 'Linux 6.18 x86_64',
      node: 'v24.21.0',
      loadStart: [1, 2, 3],
      loadEnd: [4, 5, 6],
    },
    command: 'npm run bench -- --rounds 2 --seconds 3',
    plan: {
      rounds: 2,
      seconds: 3,
      idleConnections: 5000,
      controlPlane: { services: 10_000, endpointsPerService: 5, changes: 200, small: false },
    },
    contenders,
    settings: Object.fromEntries(contenders.map((c) => [c, `${c} settings`])),
    skipped: {},
    medians: mediansOf(s, contenders, cp),
    samples: s,
    targets: checkTargets(s, cp, contenders),
    controlPlane: cp,
    fileSource: [],
    sections: [{ title: 'restart under load', markdown: '| failed | p99 |\n| --- | --- |\n| 0 | 3 ms |' }],
    totalSeconds: 600,
  };
}

t.test('the JSON carries the control-plane rows beside the data-plane medians', async (t) => {
  const m = result().medians;
  t.same(m['keepalive.rps']!['kup-native'], 13_200);
  t.same(m['controlPlane.10000.rssMiB'], { kup: 251 });
  t.same(m['controlPlane.1000.afterListSeconds'], { kup: 0.5 });
  t.same(m['controlPlane.changes100PerSecond.p99ms'], { kup: 20.5 });
});

t.test('report.js --markdown prints date, machine, command, table, targets and control plane from a results file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bench15-report-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'latest.json');
  writeFileSync(file, JSON.stringify(result()));
  const r = spawnSync(process.execPath, ['dist/bench/report.js', '--markdown', file, '--note', 'taken while other work ran'], {
    encoding: 'utf8',
  });
  t.equal(r.status, 0, r.stderr);
  t.equal(r.stdout, `${renderReport(result(), 'taken while other work ran')}\n`, 'the same Markdown the run printed');
  for (const line of [
    '- Date: 2026-11-25T21:00:00.000Z',
    '- Machine: 2 x AMD EPYC (nproc 2), 24 GiB, `Linux 6.18 x86_64`, Node v24.21.0',
    '- Note: taken while other work ran',
    '- Command: `npm run bench -- --rounds 2 --seconds 3`',
    '| metric | direct | haproxy | nginx | socat | kup-js | kup-native | kup-native/haproxy |',
    '| HTTP keep-alive (req/s) | 30,000 | 10,000 (0.33x) | 12,000 (0.40x) | 5,000 (0.17x) | 6,000 (0.20x) | 13,200 (0.44x) | 1.32x |',
    '| target | kup-native | met | kup-js | met |',
    '| RSS <= 250 MiB at 10,000 services | 251 MiB | NO | 251 MiB | NO |',
    '| 10,000 x 5 |',
    'restart under load:',
    '| 0 | 3 ms |',
  ]) {
    t.ok(r.stdout.includes(line), `has ${JSON.stringify(line)}`);
  }
});

t.test('a bad results file is one line and exit 1; a bad flag exit 2', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bench15-report-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'old.json');
  writeFileSync(file, JSON.stringify({ date: 'x' }));
  const old = spawnSync(process.execPath, ['dist/bench/report.js', '--markdown', file], { encoding: 'utf8' });
  t.equal(old.status, 1);
  t.match(old.stderr, /^report: .*old\.json is not a results file of this bench version.*\n$/);
  const missing = spawnSync(process.execPath, ['dist/bench/report.js', '--markdown', join(dir, 'none.json')], { encoding: 'utf8' });
  t.equal(missing.status, 1);
  t.equal(missing.stderr.split('\n').length, 2, 'one line');
  const bad = spawnSync(process.execPath, ['dist/bench/report.js', '--html', file], { encoding: 'utf8' });
  t.equal(bad.status, 2);
  t.notMatch(bad.stderr, /\n\s+at /, 'no stack trace');
});
