import type { Sample } from './workloads.js';

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** A row of the table: one figure of one workload. */
export interface Metric {
  readonly workload: string;
  readonly field: string;
  readonly label: string;
  readonly unit: string;
  /** Whether more is better (rates) or less (latency, memory, loss). */
  readonly higherIsBetter: boolean;
  readonly digits: number;
}

export const METRICS: readonly Metric[] = [
  { workload: 'keepalive', field: 'rps', label: 'HTTP keep-alive', unit: 'req/s', higherIsBetter: true, digits: 0 },
  { workload: 'keepalive', field: 'p50ms', label: 'keep-alive p50', unit: 'ms', higherIsBetter: false, digits: 2 },
  { workload: 'keepalive', field: 'p99ms', label: 'keep-alive p99', unit: 'ms', higherIsBetter: false, digits: 2 },
  { workload: 'newconn', field: 'rps', label: 'new connections', unit: 'conn/s', higherIsBetter: true, digits: 0 },
  { workload: 'tcp1', field: 'gbps', label: 'TCP 1 stream', unit: 'Gbit/s', higherIsBetter: true, digits: 2 },
  { workload: 'tcp8', field: 'gbps', label: 'TCP 8 streams', unit: 'Gbit/s', higherIsBetter: true, digits: 2 },
  { workload: 'dns', field: 'qps', label: 'UDP DNS', unit: 'q/s', higherIsBetter: true, digits: 0 },
  { workload: 'dns', field: 'lossPct', label: 'UDP DNS loss', unit: '%', higherIsBetter: false, digits: 2 },
  {
    workload: 'dnsburst',
    field: 'burstAnsweredPct',
    label: 'UDP burst: 8,000 DNS queries at once, answered',
    unit: '%',
    higherIsBetter: true,
    digits: 1,
  },
  { workload: 'restart', field: 'errors', label: 'restart: failed new connections', unit: 'req', higherIsBetter: false, digits: 0 },
  { workload: 'restart', field: 'p99ms', label: 'restart: new-connection p99', unit: 'ms', higherIsBetter: false, digits: 2 },
  {
    workload: 'restart',
    field: 'keepaliveErrors',
    label: 'restart: failed keep-alive requests',
    unit: 'req',
    higherIsBetter: false,
    digits: 0,
  },
  { workload: 'restart', field: 'keepaliveP99ms', label: 'restart: keep-alive p99', unit: 'ms', higherIsBetter: false, digits: 2 },
  { workload: 'keepalive', field: 'cpuUsPerReq', label: 'proxy CPU, keep-alive', unit: 'µs/req', higherIsBetter: false, digits: 1 },
  { workload: 'newconn', field: 'cpuUsPerReq', label: 'proxy CPU, new connection', unit: 'µs/conn', higherIsBetter: false, digits: 1 },
  { workload: 'tcp1', field: 'cpuSecPerGB', label: 'proxy CPU, 1 stream', unit: 's/GB', higherIsBetter: false, digits: 3 },
  { workload: 'dns', field: 'cpuUsPerQuery', label: 'proxy CPU, DNS', unit: 'µs/query', higherIsBetter: false, digits: 1 },
  { workload: 'idle', field: 'perConnKiB', label: 'idle conn memory', unit: 'KiB/conn', higherIsBetter: false, digits: 1 },
  { workload: 'base', field: 'rssMiB', label: 'base RSS', unit: 'MiB', higherIsBetter: false, digits: 1 },
];

/** samples[workload][contender] = one Sample per round. */
export type Samples = Record<string, Record<string, Sample[]>>;

export function medianOf(samples: Samples, workload: string, contender: string, field: string): number | null {
  const runs = samples[workload]?.[contender];
  if (runs === undefined || runs.length === 0) return null;
  const vals = runs.map((s) => s[field]).filter((v): v is number => v !== undefined && Number.isFinite(v));
  return vals.length === 0 ? null : median(vals);
}

function fmt(v: number, digits: number): string {
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

const RATIO_VS_DIRECT = new Set(['keepalive/rps', 'newconn/rps', 'tcp1/gbps', 'tcp8/gbps', 'dns/qps']);

/** The Markdown table: medians, x direct for rates, and kup against each peer. */
export function renderTable(samples: Samples, contenders: readonly string[]): string {
  const peers = contenders.filter((c) => c !== 'direct' && c !== 'kup');
  // kup-before is a peer in the sense of a column of ratios: kup against its earlier self.
  const head = ['metric', ...contenders, ...peers.map((p) => `kup/${p}`)];
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
    const k = medianOf(samples, m.workload, 'kup', m.field);
    for (const p of peers) {
      const v = medianOf(samples, m.workload, p, m.field);
      cells.push(k === null || v === null || v === 0 ? 'n/a' : `${(k / v).toFixed(2)}x`);
    }
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

export interface TargetCheck {
  readonly target: string;
  readonly measured: string;
  readonly met: boolean | null;
}

/** The targets, checked against the medians. */
export function checkTargets(samples: Samples): TargetCheck[] {
  const m = (w: string, c: string, f: string): number | null => medianOf(samples, w, c, f);
  const out: TargetCheck[] = [];
  const ratio = (target: string, w: string, f: string, peers: readonly string[], need: number, lowerBetter = false): void => {
    const k = m(w, 'kup', f);
    const vals = peers.map((p) => ({ p, v: m(w, p, f) })).filter((x): x is { p: string; v: number } => x.v !== null);
    if (k === null || vals.length === 0) {
      out.push({ target, measured: 'not measured', met: null });
      return;
    }
    const best = vals.reduce((a, b) => ((lowerBetter ? b.v < a.v : b.v > a.v) ? b : a));
    const r = lowerBetter ? best.v / k : k / best.v;
    out.push({ target, measured: `${r.toFixed(2)}x ${best.p} (kup ${k.toFixed(2)}, ${best.p} ${best.v.toFixed(2)})`, met: r >= need });
  };
  ratio('keep-alive req/s >= 1.1x best peer', 'keepalive', 'rps', ['haproxy', 'nginx', 'socat'], 1.1);
  ratio('new connections/s >= 1.0x HAProxy', 'newconn', 'rps', ['haproxy'], 1.0);
  ratio('TCP throughput (1 stream) >= 1.1x HAProxy', 'tcp1', 'gbps', ['haproxy'], 1.1);
  ratio('TCP throughput (8 streams) >= 1.1x HAProxy', 'tcp8', 'gbps', ['haproxy'], 1.1);
  ratio('UDP queries/s >= 1.5x nginx stream', 'dns', 'qps', ['nginx'], 1.5);
  const loss = m('dns', 'kup', 'lossPct');
  out.push({
    target: 'UDP loss 0',
    measured: loss === null ? 'not measured' : `${loss.toFixed(3)}%`,
    met: loss === null ? null : loss === 0,
  });
  ratio('keep-alive p99 no worse than best peer', 'keepalive', 'p99ms', ['haproxy', 'nginx', 'socat'], 1.0, true);
  const idle = m('idle', 'kup', 'perConnKiB');
  out.push({
    target: 'idle connection <= 4 KiB',
    measured: idle === null ? 'not measured' : `${idle.toFixed(1)} KiB`,
    met: idle === null ? null : idle <= 4,
  });
  return out;
}

export function renderTargets(checks: readonly TargetCheck[]): string {
  const lines = ['| target | measured | met |', '| --- | --- | --- |'];
  for (const c of checks) lines.push(`| ${c.target} | ${c.measured} | ${c.met === null ? '?' : c.met ? 'yes' : 'NO'} |`);
  return lines.join('\n');
}
