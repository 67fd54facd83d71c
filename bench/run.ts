/**
 * npm run bench [-- --quick] [-- --rounds N] [-- --seconds S] [-- --only haproxy,nginx] [-- --no-control-plane] [-- --no-file-source]
 *
 * One machine, one run: the same backends for every contender, each driven in
 * turn by the same load tools, contenders interleaved round by round (A B C A
 * B C ...) so drift hits all alike; medians and ratios printed and written to
 * bench/results/latest.json (`node dist/bench/report.js --markdown FILE`
 * prints the report again, for bench/PERFORMANCE.md). All traffic stays on loopback.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startBackends, type Backends } from './backends.js';
import { CONTENDERS, KUP_JS, KUP_NATIVE, kupContender, type Contender, type Front } from './contenders.js';
import { runControlPlane, type ControlPlaneResult } from './control-plane.js';
import { runFileSource, type FileSourceResult } from './file-source.js';
import { commandExists, stopAll, treeCpuSeconds, treeMemoryKiB } from './procs.js';
import {
  checkTargets,
  mediansOf,
  renderReport,
  type BenchResult,
  type Machine,
  type Plan,
  type ReportSection,
  type Samples,
} from './report.js';
import { restartUnderLoad } from './restart.js';
import { dnsBurst, dnsperf, idleMemory, iperf, wrk, type Sample } from './workloads.js';

const FD_LIMIT = 20_000;

/** Node cannot raise its own descriptor limit: re-run under a shell that does. */
function ensureFdLimit(): boolean {
  const limits = readFileSyncSafe('/proc/self/limits');
  const m = /Max open files\s+(\d+)\s+(\d+)/.exec(limits);
  if (m === null || Number(m[1]) >= Math.min(FD_LIMIT, Number(m[2])) || process.env.KUP_BENCH_ULIMIT === '1') return false;
  const hard = Math.min(FD_LIMIT, Number(m[2]));
  const r = spawnSync('sh', ['-c', `ulimit -n ${hard} && exec "$0" "$@"`, process.execPath, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, KUP_BENCH_ULIMIT: '1' },
  });
  process.exit(r.status ?? 1);
}

function readFileSyncSafe(p: string): string {
  try {
    return spawnSync('cat', [p], { encoding: 'utf8' }).stdout;
  } catch {
    return '';
  }
}

/** What the report says of the machine: /proc/cpuinfo, nproc, uname, node, and how loaded it was. */
function machine(loadStart: readonly number[]): Machine {
  const model = /^model name\s*:\s*(.+)$/m.exec(readFileSyncSafe('/proc/cpuinfo'));
  const nproc = Number(spawnSync('nproc', { encoding: 'utf8' }).stdout.trim());
  return {
    cpuModel: model?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown',
    nproc: Number.isFinite(nproc) && nproc > 0 ? nproc : os.availableParallelism(),
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    uname: spawnSync('uname', ['-srmv'], { encoding: 'utf8' }).stdout.trim() || `Linux ${os.release()}`,
    node: process.version,
    loadStart,
    loadEnd: os.loadavg(),
  };
}

/** A positive number option, or one clear error line. */
function positive(name: string, v: string | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) {
    process.stderr.write(`bench: --${name}: "${v}" is not a positive number\n`);
    process.exit(2);
  }
  return n;
}

function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

async function main(): Promise<void> {
  ensureFdLimit();
  const loadStart = os.loadavg();
  let parsed;
  try {
    parsed = parseArgs({
      options: {
        quick: { type: 'boolean', default: false },
        only: { type: 'string' },
        workloads: { type: 'string' },
        'no-control-plane': { type: 'boolean', default: false },
        'no-file-source': { type: 'boolean', default: false },
        'control-plane-only': { type: 'boolean', default: false },
        rounds: { type: 'string' },
        baseline: { type: 'string' },
        seconds: { type: 'string' },
        out: { type: 'string', default: 'bench/results/latest.json' },
      },
    });
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const { values } = parsed;
  const quick = values.quick === true;
  const plan: Plan = {
    rounds: Math.round(positive('rounds', values.rounds, quick ? 1 : 3)),
    seconds: Math.round(positive('seconds', values.seconds, quick ? 1 : 5)),
    idleConnections: quick ? 1000 : 5000,
    controlPlane: values['no-control-plane']
      ? null
      : quick
        ? { services: 1000, endpointsPerService: 3, changes: 20, small: true }
        : { services: 10_000, endpointsPerService: 5, changes: 200, small: false },
  };
  for (const tool of ['wrk', 'iperf3', 'nginx']) {
    if (!commandExists(tool)) throw new Error(`${tool} is not installed; see bench/README.md (apt-get install wrk iperf3 nginx-light)`);
  }
  const withDns = commandExists('dnsmasq') && commandExists('dnsperf');
  if (!withDns) log('dnsmasq or dnsperf missing: the UDP workload is skipped');

  // --only picks peers; direct and both kup relays always run.
  const only = values.only?.split(',') ?? null;
  const always = new Set(['direct', KUP_NATIVE, KUP_JS]);
  const unknown = only?.filter((n) => !CONTENDERS.some((c) => c.name === n)) ?? [];
  if (unknown.length > 0) {
    process.stderr.write(`bench: --only: no contender ${unknown.join(', ')} (one of ${CONTENDERS.map((c) => c.name).join(', ')})\n`);
    process.exit(2);
  }
  const contenders: Contender[] = [];
  const skipped: Record<string, string> = {};
  for (const c of CONTENDERS) {
    if (only !== null && !always.has(c.name) && !only.includes(c.name)) continue;
    const why = c.unavailable();
    if (why === null) contenders.push(c);
    else skipped[c.name] = why;
  }
  for (const [n, why] of Object.entries(skipped)) log(`${n} skipped: ${why}`);
  if (values.baseline !== undefined) {
    // An older build of kup (e.g. git archive of a commit, compiled), run side by side for before/after figures.
    const at = contenders.findIndex((c) => c.name === KUP_JS);
    contenders.splice(
      at < 0 ? contenders.length : at,
      0,
      kupContender('kup-before', values.baseline, `an earlier build: ${values.baseline}`),
    );
  }

  const workDir = await mkdtemp(join(os.tmpdir(), 'kup-bench-'));
  const samples: Samples = {};
  const add = (w: string, c: string, s: Sample): void => {
    ((samples[w] ??= {})[c] ??= []).push(s);
  };
  let backends: Backends | null = null;
  const fronts = new Map<string, Front>();
  let controlPlane: ControlPlaneResult | null = null;
  const fileSource: FileSourceResult[] = [];
  // Workloads with their own table (bench/report.ts ReportSection) push it here.
  const sections: ReportSection[] = [];
  const startedAt = Date.now();
  try {
    if (!values['control-plane-only']) {
      backends = await startBackends(workDir, withDns);
      for (const c of contenders) {
        const f = await c.start(backends, workDir);
        fronts.set(c.name, f);
        if (f.pid !== null) {
          // Base RSS: started, services configured, no traffic yet.
          await new Promise((r) => setTimeout(r, 500));
          add('base', c.name, { rssMiB: treeMemoryKiB(f.pid).rss / 1024 });
        }
      }
      // --workloads: a subset (e.g. dns,dnsburst); the idle-memory one is named idle.
      const picked = values.workloads?.split(',') ?? null;
      // Idle connections first, on fresh processes whose heaps are not shrinking after load.
      for (const c of picked === null || picked.includes('idle') ? contenders : []) {
        const f = fronts.get(c.name)!;
        if (f.pid === null) continue;
        // socat forks a process per connection: a few hundred show the trend.
        const n = c.name === 'socat' ? Math.min(200, plan.idleConnections) : plan.idleConnections;
        try {
          const r = await idleMemory(f.pid, f.httpPort, n);
          add('idle', c.name, { ...r, connections: n });
          log(`idle ${c.name}: ${JSON.stringify(r)} over ${n} connections`);
        } catch (err) {
          log(`idle ${c.name} FAILED: ${(err as Error).message}`);
        }
      }
      log(`contenders: ${contenders.map((c) => c.name).join(', ')}; ${plan.rounds} round(s) of ${plan.seconds}s per workload`);
      const s = plan.seconds;
      const all: { name: string; run: (f: Front) => Promise<Sample | null> }[] = [
        { name: 'keepalive', run: (f) => wrk({ port: f.httpPort, seconds: s, connections: 50, close: false }) },
        { name: 'newconn', run: (f) => wrk({ port: f.httpPort, seconds: s, connections: 50, close: true }) },
        { name: 'tcp1', run: (f) => iperf(f.iperfPort, s, 1) },
        { name: 'tcp8', run: (f) => iperf(f.iperfPort, s, 8) },
        {
          name: 'dns',
          run: (f) => (f.dnsPort === null || backends === null ? Promise.resolve(null) : dnsperf(f.dnsPort, s, backends.dnsQueryFile)),
        },
        {
          name: 'dnsburst',
          run: (f) => (f.dnsPort === null || backends === null ? Promise.resolve(null) : dnsBurst(f.dnsPort, backends.dnsQueryFile)),
        },
      ];
      const workloads = all.filter((w) => picked === null || picked.includes(w.name));
      for (let round = 1; round <= plan.rounds; round++) {
        // Each round starts one contender later: no one always runs right after
        // the same neighbour (its TIME_WAIT sockets, its caches) or always last.
        const order = contenders.map((_, i) => contenders[(i + round - 1) % contenders.length]!);
        for (const w of workloads) {
          for (const c of order) {
            const f = fronts.get(c.name)!;
            try {
              const cpu0 = f.pid === null ? null : treeCpuSeconds(f.pid);
              const r = await w.run(f);
              if (r !== null && cpu0 !== null && f.pid !== null) {
                // The proxy's own CPU during the run: what its share of the cores bought.
                const cpu1 = treeCpuSeconds(f.pid);
                r.cpuUser = cpu1.user - cpu0.user;
                r.cpuSystem = cpu1.system - cpu0.system;
                // Proxy CPU per unit of work: steadier than rates on a shared, drifting machine.
                // (socat's per-connection children exit before they can be read.)
                const cpu = r.cpuUser + r.cpuSystem;
                if (c.name !== 'socat') {
                  if (r.rps !== undefined && r.rps > 0) r.cpuUsPerReq = (cpu * 1e6) / (r.rps * s);
                  if (r.gbps !== undefined && r.gbps > 0) r.cpuSecPerGB = cpu / ((r.gbps * s) / 8);
                  if (r.qps !== undefined && r.qps > 0) r.cpuUsPerQuery = (cpu * 1e6) / (r.qps * s);
                }
              }
              if (r !== null) {
                add(w.name, c.name, r);
                log(`round ${round} ${w.name} ${c.name}: ${JSON.stringify(r)}`);
              }
            } catch (err) {
              log(`round ${round} ${w.name} ${c.name} FAILED: ${(err as Error).message.slice(0, 500)}`);
            }
            // Let TIME_WAIT sockets and the previous contender's work settle.
            await new Promise((r) => setTimeout(r, 300));
          }
        }
      }
      for (const f of fronts.values()) await f.stop();
      fronts.clear();
      // kup only (default relay: native when built): a second kup takes over under load and the first drains (bench/restart.ts).
      try {
        add('restart', KUP_NATIVE, await restartUnderLoad(backends, workDir, plan.seconds, log));
      } catch (err) {
        log(`restart under load FAILED: ${(err as Error).message.slice(0, 1000)}`);
      }
      await backends.stop();
      backends = null;
    }
    if (plan.controlPlane !== null) {
      log(`control plane: ${plan.controlPlane.services} services x ${plan.controlPlane.endpointsPerService} endpoints`);
      try {
        controlPlane = await runControlPlane({ ...plan.controlPlane, workDir, log });
      } catch (err) {
        // The data-plane table is still worth printing.
        log(`control plane FAILED: ${(err as Error).message.slice(0, 1000)}`);
      }
    }
    if (values['no-file-source'] !== true && values['control-plane-only'] !== true) {
      // A kubectl List of 5,000 Services + EndpointSlices as YAML and as JSON (1,000 with --quick): bench/file-source.ts.
      try {
        for (const format of ['yaml', 'json'] as const) {
          fileSource.push(await runFileSource({ format, services: quick ? 1000 : 5000, reloads: 3, kup: 'dist/bin/kup.js', workDir, log }));
        }
      } catch (err) {
        log(`file source FAILED: ${(err as Error).message.slice(0, 1000)}`);
      }
    }
  } finally {
    for (const f of fronts.values()) await f.stop().catch(() => {});
    await backends?.stop().catch(() => {});
    stopAll();
    await rm(workDir, { recursive: true, force: true });
  }

  const names = contenders.map((c) => c.name);
  const result: BenchResult = {
    date: new Date().toISOString(),
    machine: machine(loadStart),
    command: `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`,
    plan,
    contenders: names,
    settings: Object.fromEntries(contenders.map((c) => [c.name, c.settings])),
    skipped,
    medians: mediansOf(samples, names, controlPlane),
    samples,
    targets: checkTargets(samples, controlPlane, names),
    controlPlane,
    fileSource,
    sections,
    totalSeconds: (Date.now() - startedAt) / 1000,
  };
  const text = renderReport(result);
  process.stdout.write(`${text}\n`);
  await writeFile(values.out, `${JSON.stringify({ ...result, text }, null, 2)}\n`);
  log(`written ${values.out}`);
}

process.once('SIGINT', () => {
  stopAll();
  process.exit(130);
});
process.once('SIGTERM', () => {
  stopAll();
  process.exit(143);
});
main().catch((err: unknown) => {
  stopAll();
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
