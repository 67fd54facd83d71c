/**
 * The bench's tables and targets, rendered from one run's results: the same
 * Markdown `npm run bench` prints, and (from a saved run)
 *
 *   node dist/bench/report.js --markdown bench/results/latest.json [--note TEXT]
 *
 * which prints it again for bench/PERFORMANCE.md. Targets are recomputed
 * from the saved samples, so the figures and the verdicts come from one run.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { pathToFileURL } from 'node:url';
import { KUP_JS, KUP_NATIVE } from './contenders.js';
import { renderControlPlane, type ControlPlaneResult, type StartupFigures } from './control-plane.js';
import { renderFileSource, type FileSourceResult } from './file-source.js';
import { median } from './stats.js';
import type { Sample } from './workloads.js';

export { median };

/** A row of the table: one figure of one workload. */
export interface Metric {
  readonly workload: string;
  readonly field: string;
  readonly label: string;
  readonly unit: string;
  readonly digits: number;
}

export const METRICS: readonly Metric[] = [
  { workload: 'keepalive', field: 'rps', label: 'HTTP keep-alive', unit: 'req/s', digits: 0 },
  { workload: 'keepalive', field: 'p50ms', label: 'keep-alive p50', unit: 'ms', digits: 2 },
  { workload: 'keepalive', field: 'p99ms', label: 'keep-alive p99', unit: 'ms', digits: 2 },
  { workload: 'newconn', field: 'rps', label: 'new connections', unit: 'conn/s', digits: 0 },
  { workload: 'tcp1', field: 'gbps', label: 'TCP 1 stream', unit: 'Gbit/s', digits: 2 },
  { workload: 'tcp8', field: 'gbps', label: 'TCP 8 streams', unit: 'Gbit/s', digits: 2 },
  { workload: 'dns', field: 'qps', label: 'UDP DNS', unit: 'q/s', digits: 0 },
  { workload: 'dns', field: 'lossPct', label: 'UDP DNS loss', unit: '%', digits: 2 },
  { workload: 'dnsburst', field: 'burstAnsweredPct', label: 'UDP burst: 8,000 DNS queries at once, answered', unit: '%', digits: 1 },
  { workload: 'restart', field: 'errors', label: 'restart: failed new connections', unit: 'req', digits: 0 },
  { workload: 'restart', field: 'p99ms', label: 'restart: new-connection p99', unit: 'ms', digits: 2 },
  { workload: 'restart', field: 'keepaliveErrors', label: 'restart: failed keep-alive requests', unit: 'req', digits: 0 },
  { workload: 'restart', field: 'keepaliveP99ms', label: 'restart: keep-alive p99', unit: 'ms', digits: 2 },
  { workload: 'keepalive', field: 'cpuUsPerReq', label: 'proxy CPU per keep-alive request', unit: 'µs/req', digits: 1 },
  { workload: 'newconn', field: 'cpuUsPerReq', label: 'proxy CPU per new connection', unit: 'µs/conn', digits: 1 },
  { workload: 'tcp1', field: 'cpuSecPerGB', label: 'proxy CPU per GB, 1 stream', unit: 's/GB', digits: 3 },
  { workload: 'tcp8', field: 'cpuSecPerGB', label: 'proxy CPU per GB, 8 streams', unit: 's/GB', digits: 3 },
  { workload: 'dns', field: 'cpuUsPerQuery', label: 'proxy CPU per DNS query', unit: 'µs/query', digits: 1 },
  { workload: 'idle', field: 'perConnKiB', label: 'idle connection memory', unit: 'KiB/conn', digits: 1 },
  { workload: 'base', field: 'rssMiB', label: 'base RSS', unit: 'MiB', digits: 1 },
];

/** The other proxies kup is measured against. */
export const PEERS: readonly string[] = ['haproxy', 'nginx', 'socat'];
/** The two relays, each checked against the targets. */
export const KUPS: readonly string[] = [KUP_NATIVE, KUP_JS];

/** samples[workload][contender] = one Sample per round. */
export type Samples = Record<string, Record<string, Sample[]>>;

export interface Plan {
  readonly rounds: number;
  readonly seconds: number;
  readonly idleConnections: number;
  readonly controlPlane: { services: number; endpointsPerService: number; changes: number; small: boolean } | null;
}

export interface Machine {
  /** "model name" of /proc/cpuinfo. */
  readonly cpuModel: string;
  readonly nproc: number;
  readonly memGiB: number;
  /** `uname -srmv`. */
  readonly uname: string;
  readonly node: string;
  /** 1/5/15-minute load averages when the run started and ended: how shared the machine was. */
  readonly loadStart: readonly number[];
  readonly loadEnd: readonly number[];
}

/** bench/results/latest.json. */
export interface BenchResult {
  readonly date: string;
  readonly machine: Machine;
  readonly command: string;
  readonly plan: Plan;
  /** In table order. */
  readonly contenders: readonly string[];
  readonly settings: Record<string, string>;
  readonly skipped: Record<string, string>;
  readonly medians: Record<string, Record<string, number | null>>;
  readonly samples: Samples;
  readonly targets: readonly TargetRow[];
  readonly controlPlane: ControlPlaneResult | null;
  readonly fileSource: readonly FileSourceResult[];
  /**
   * Further workloads' own Markdown (e.g. restart under load), appended as
   * they are: a workload file renders its figures and run.ts adds them here,
   * so the report needs no change per workload.
   */
  readonly sections: readonly ReportSection[];
  readonly totalSeconds: number;
}

export interface ReportSection {
  readonly title: string;
  readonly markdown: string;
}

export function medianOf(samples: Samples, workload: string, contender: string, field: string): number | null {
  const runs = samples[workload]?.[contender];
  if (runs === undefined || runs.length === 0) return null;
  const vals = runs.map((s) => s[field]).filter((v): v is number => v !== undefined && Number.isFinite(v));
  return vals.length === 0 ? null : median(vals);
}

/** Every table figure as metric key -> contender -> median, plus the control plane's figures, for the JSON. */
export function mediansOf(samples: Samples, contenders: readonly string[], cp: ControlPlaneResult | null): BenchResult['medians'] {
  const out: BenchResult['medians'] = {};
  for (const metric of METRICS) {
    const row: Record<string, number | null> = {};
    for (const c of contenders) row[c] = medianOf(samples, metric.workload, c, metric.field);
    out[`${metric.workload}.${metric.field}`] = row;
  }
  for (const f of [cp?.small, cp?.large]) {
    if (f === null || f === undefined) continue;
    out[`controlPlane.${f.services}.afterListSeconds`] = { kup: f.afterListSeconds };
    out[`controlPlane.${f.services}.rssMiB`] = { kup: f.rssMiB };
  }
  for (const c of cp?.changes ?? []) {
    out[`controlPlane.changes${c.perSecond}PerSecond.p50ms`] = { kup: c.p50ms };
    out[`controlPlane.changes${c.perSecond}PerSecond.p99ms`] = { kup: c.p99ms };
  }
  return out;
}

function fmt(v: number, digits: number): string {
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

const RATIO_VS_DIRECT = new Set(['keepalive/rps', 'newconn/rps', 'tcp1/gbps', 'tcp8/gbps', 'dns/qps']);

/** Which ratio columns the table carries: each kup against each peer, and native against js. */
function ratioColumns(contenders: readonly string[]): { kup: string; peer: string }[] {
  const peers = contenders.filter((c) => c !== 'direct' && !KUPS.includes(c));
  const out: { kup: string; peer: string }[] = [];
  for (const k of KUPS) {
    if (!contenders.includes(k)) continue;
    for (const p of peers) out.push({ kup: k, peer: p });
  }
  if (contenders.includes(KUP_NATIVE) && contenders.includes(KUP_JS)) out.push({ kup: KUP_NATIVE, peer: KUP_JS });
  return out;
}

/** The Markdown table: medians, x direct for rates, and each kup against each peer. */
export function renderTable(samples: Samples, contenders: readonly string[]): string {
  const ratios = ratioColumns(contenders);
  const head = ['metric', ...contenders, ...ratios.map((r) => `${r.kup}/${r.peer}`)];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => ' --- ').join('|')}|`];
  for (const m of METRICS) {
    const d = medianOf(samples, m.workload, 'direct', m.field);
    const cells = [`${m.label} (${m.unit})`];
    for (const c of contenders) {
      const v = medianOf(samples, m.workload, c, m.field);
      if (v === null) cells.push('n/a');
      else if (c !== 'direct' && d !== null && d > 0 && RATIO_VS_DIRECT.has(`${m.workload}/${m.field}`)) {
        cells.push(`${fmt(v, m.digits)} (${(v / d).toFixed(2)}x)`);
      } else cells.push(fmt(v, m.digits));
    }
    for (const r of ratios) {
      const k = medianOf(samples, m.workload, r.kup, m.field);
      const v = medianOf(samples, m.workload, r.peer, m.field);
      cells.push(k === null || v === null || v === 0 ? 'n/a' : `${(k / v).toFixed(2)}x`);
    }
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

export interface TargetResult {
  readonly measured: string;
  /** null when not measured, or not measured where the target applies (e.g. 1,000 services in a quick run). */
  readonly met: boolean | null;
}

export interface TargetRow {
  readonly target: string;
  /** contender name (kup-native, kup-js) -> its figure. */
  readonly byKup: Record<string, TargetResult>;
}

const NOT_MEASURED: TargetResult = { measured: 'not measured', met: null };

/** Ratio of `kup` to the best of `peers` (higher is better), as a target result. */
function ratioTarget(
  samples: Samples,
  kup: string,
  w: string,
  f: string,
  unit: string,
  peers: readonly string[],
  need: number,
): TargetResult {
  const k = medianOf(samples, w, kup, f);
  const vals = peers
    .map((p) => ({ p, v: medianOf(samples, w, p, f) }))
    .filter((x): x is { p: string; v: number } => x.v !== null && x.v > 0);
  if (k === null || vals.length === 0) return NOT_MEASURED;
  const best = vals.reduce((a, b) => (b.v > a.v ? b : a));
  const r = k / best.v;
  const digits = unit === 'Gbit/s' ? 2 : 0;
  return { measured: `${r.toFixed(2)}x ${best.p} (${fmt(k, digits)} vs ${fmt(best.v, digits)} ${unit})`, met: r >= need };
}

/** The control plane's figures at 10,000 services, or (quick run) what was measured instead, unjudged. */
function scaleTarget(
  cp: ControlPlaneResult | null,
  pick: (f: StartupFigures) => number,
  show: (v: number) => string,
  ok: (v: number) => boolean,
): TargetResult {
  const f = cp?.large ?? cp?.small ?? null;
  if (f === null) return NOT_MEASURED;
  const v = pick(f);
  if (f.services < 10_000) return { measured: `${show(v)} at ${fmt(f.services, 0)} services (not at 10,000)`, met: null };
  return { measured: show(v), met: Number.isFinite(v) && ok(v) };
}

/** Issue 15's targets, for each kup relay, from one run's medians and its control-plane figures. */
export function checkTargets(samples: Samples, cp: ControlPlaneResult | null, contenders: readonly string[] = KUPS): TargetRow[] {
  const kups = KUPS.filter((k) => contenders.includes(k));
  const rows: TargetRow[] = [];
  const perKup = (target: string, f: (kup: string) => TargetResult): void => {
    rows.push({ target, byKup: Object.fromEntries(kups.map((k) => [k, f(k)])) });
  };
  perKup('keep-alive req/s >= 1.1x the best peer', (k) => ratioTarget(samples, k, 'keepalive', 'rps', 'req/s', PEERS, 1.1));
  perKup('new connections/s >= 1.0x HAProxy', (k) => ratioTarget(samples, k, 'newconn', 'rps', 'conn/s', ['haproxy'], 1.0));
  perKup('TCP 1 stream >= 1.1x HAProxy', (k) => ratioTarget(samples, k, 'tcp1', 'gbps', 'Gbit/s', ['haproxy'], 1.1));
  perKup('TCP 8 streams >= 1.1x HAProxy', (k) => ratioTarget(samples, k, 'tcp8', 'gbps', 'Gbit/s', ['haproxy'], 1.1));
  perKup('UDP DNS q/s >= 1.5x nginx stream, 0 loss', (k) => {
    const r = ratioTarget(samples, k, 'dns', 'qps', 'q/s', ['nginx'], 1.5);
    const loss = medianOf(samples, 'dns', k, 'lossPct');
    if (r.met === null || loss === null) return r;
    return { measured: `${r.measured}, loss ${loss.toFixed(2)}%`, met: r.met && loss === 0 };
  });
  perKup('idle connection <= 4 KiB', (k) => {
    const v = medianOf(samples, 'idle', k, 'perConnKiB');
    return v === null ? NOT_MEASURED : { measured: `${v.toFixed(1)} KiB`, met: v <= 4 };
  });
  // The control plane is one kup run (--relay auto); the relay carries no part of it, so both columns show it.
  const shared = (target: string, r: TargetResult): void => perKup(target, () => r);
  shared(
    'RSS <= 250 MiB at 10,000 services',
    scaleTarget(
      cp,
      (f) => f.rssMiB,
      (v) => `${v.toFixed(0)} MiB`,
      (v) => v <= 250,
    ),
  );
  shared(
    'serving < 3 s after the list at 10,000 services',
    scaleTarget(
      cp,
      (f) => f.afterListSeconds,
      (v) => `${v.toFixed(2)} s`,
      (v) => v < 3,
    ),
  );
  for (const perSecond of [10, 100]) {
    const c = cp?.changes?.find((x) => x.perSecond === perSecond) ?? null;
    let r: TargetResult = NOT_MEASURED;
    if (c !== null) {
      const detail = `p99 ${c.p99ms.toFixed(1)} ms (p50 ${c.p50ms.toFixed(1)}, ${c.count} changes${c.failed > 0 ? `, ${c.failed} never reached` : ''})`;
      r =
        c.servicesPresent < 10_000
          ? { measured: `${detail} at ${fmt(c.servicesPresent, 0)} services (not at 10,000)`, met: null }
          : { measured: detail, met: c.p99ms <= 20 && c.failed === 0 };
    }
    shared(`change-to-traffic p99 <= 20 ms at ${perSecond}/s`, r);
  }
  return rows;
}

export function renderTargets(rows: readonly TargetRow[]): string {
  const kups = [...new Set(rows.flatMap((r) => Object.keys(r.byKup)))];
  const head = ['target', ...kups.flatMap((k) => [k, 'met'])];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => ' --- ').join('|')}|`];
  const verdict = (m: boolean | null): string => (m === null ? '?' : m ? 'met' : 'NO');
  for (const r of rows) {
    const cells = kups.flatMap((k) => {
      const t = r.byKup[k] ?? NOT_MEASURED;
      return [t.measured, verdict(t.met)];
    });
    lines.push(`| ${r.target} | ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

function loads(l: readonly number[]): string {
  return l.map((x) => x.toFixed(2)).join(' / ');
}

/** The whole report as Markdown: what `npm run bench` prints and bench/PERFORMANCE.md holds. */
export function renderReport(r: BenchResult, note?: string): string {
  const m = r.machine;
  const targets = checkTargets(r.samples, r.controlPlane, r.contenders);
  const out = [
    `### Benchmark of ${r.date.slice(0, 10)}`,
    '',
    `- Date: ${r.date}`,
    `- Machine: ${m.nproc} x ${m.cpuModel} (nproc ${m.nproc}), ${m.memGiB} GiB, \`${m.uname}\`, Node ${m.node}; load tool, proxies and backends share the cores`,
    `- Load average (1/5/15 min): ${loads(m.loadStart)} at the start, ${loads(m.loadEnd)} at the end`,
    ...(note !== undefined && note !== '' ? [`- Note: ${note}`] : []),
    `- Command: \`${r.command}\`: ${r.plan.rounds} round(s) of ${r.plan.seconds} s per workload, contenders interleaved within each round, medians; wrk -t1 -c50, iperf3 -P1/-P8, dnsperf -c1 -q100; idle memory over ${fmt(r.plan.idleConnections, 0)} connections (socat: 200)`,
    `- Total time: ${r.totalSeconds.toFixed(0)} s`,
    '',
    'Contenders:',
    '',
    ...r.contenders.map((c) => `- ${c}: ${r.settings[c] ?? ''}`),
    ...Object.entries(r.skipped).map(([k, v]) => `- ${k}: skipped (${v})`),
    '',
    'Data plane (medians; "(0.50x)" is the fraction of direct; ratio columns are kup/peer, above 1 better for rates, worse for latency, CPU and memory):',
    '',
    renderTable(r.samples, r.contenders),
    '',
    'Targets (issue 15), from this run:',
    '',
    renderTargets(targets),
  ];
  if (r.controlPlane !== null) out.push('', renderControlPlane(r.controlPlane));
  else if (r.plan.controlPlane !== null) out.push('', 'control plane: FAILED (see the log)');
  if (r.fileSource.length > 0) out.push('', '```', renderFileSource(r.fileSource), '```');
  for (const s of r.sections) out.push('', `${s.title}:`, '', s.markdown);
  return out.join('\n');
}

/** Older result files name no contender order: take the settings' order. */
function normalise(raw: BenchResult): BenchResult {
  return {
    ...raw,
    contenders: raw.contenders ?? Object.keys(raw.settings),
    fileSource: raw.fileSource ?? [],
    sections: raw.sections ?? [],
    totalSeconds: raw.totalSeconds ?? NaN,
  };
}

function cli(): void {
  let args: { values: { markdown?: boolean; note?: string }; positionals: string[] };
  try {
    args = parseArgs({
      allowPositionals: true,
      options: { markdown: { type: 'boolean', default: false }, note: { type: 'string' } },
    });
  } catch (err) {
    process.stderr.write(`report: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const { values, positionals } = args;
  const file = positionals[0];
  if (values.markdown !== true || file === undefined || positionals.length !== 1) {
    process.stderr.write('usage: node dist/bench/report.js --markdown RESULTS.json [--note TEXT]\n');
    process.exit(2);
  }
  let raw: BenchResult;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8')) as BenchResult;
  } catch (err) {
    process.stderr.write(`report: cannot read ${file}: ${(err as Error).message.split('\n')[0]}\n`);
    process.exit(1);
  }
  if (raw.machine?.loadStart === undefined || raw.samples === undefined) {
    process.stderr.write(`report: ${file} is not a results file of this bench version (no machine.loadStart or samples)\n`);
    process.exit(1);
  }
  process.stdout.write(`${renderReport(normalise(raw), values.note)}\n`);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) cli();
