/**
 * npm run bench [-- --quick] [-- --only kup,haproxy] [-- --no-control-plane] [-- --no-file-source]
 *
 * One machine, one run: the same backends for every contender, each driven in
 * turn by the same load tools, contenders interleaved round by round (A B C A
 * B C ...) so drift hits all alike; medians and ratios printed and written to
 * bench/results/latest.json. All traffic stays on loopback.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startBackends, type Backends } from './backends.js';
import { CONTENDERS, kupContender, type Contender, type Front } from './contenders.js';
import { runControlPlane, type ControlPlaneResult, renderControlPlane } from './control-plane.js';
import { renderFileSource, runFileSource, type FileSourceResult } from './file-source.js';
import { commandExists, stopAll, treeCpuSeconds, treeMemoryKiB } from './procs.js';
import { checkTargets, medianOf, METRICS, renderTable, renderTargets, type Samples } from './report.js';
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

interface Plan {
  rounds: number;
  seconds: number;
  idleConnections: number;
  controlPlane: { services: number; endpointsPerService: number; changes: number; small: boolean } | null;
}

function machine(): Record<string, string | number> {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
  };
}

function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

async function main(): Promise<void> {
  ensureFdLimit();
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      only: { type: 'string' },
      'no-control-plane': { type: 'boolean', default: false },
      'no-file-source': { type: 'boolean', default: false },
      'control-plane-only': { type: 'boolean', default: false },
      rounds: { type: 'string' },
      baseline: { type: 'string' },
      seconds: { type: 'string' },
      out: { type: 'string', default: 'bench/results/latest.json' },
    },
  });
  const quick = values.quick === true;
  const plan: Plan = {
    rounds: values.rounds !== undefined ? Number(values.rounds) : quick ? 1 : 3,
    seconds: values.seconds !== undefined ? Number(values.seconds) : quick ? 1 : 5,
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

  const only = values.only?.split(',') ?? null;
  const contenders: Contender[] = [];
  const skipped: Record<string, string> = {};
  for (const c of CONTENDERS) {
    if (only !== null && c.name !== 'direct' && c.name !== 'kup' && !only.includes(c.name)) continue;
    const why = c.unavailable();
    if (why === null) contenders.push(c);
    else skipped[c.name] = why;
  }
  for (const [n, why] of Object.entries(skipped)) log(`${n} skipped: ${why}`);
  if (values.baseline !== undefined) {
    // An older build of kup (e.g. git archive of a commit, compiled), run side by side for before/after figures.
    contenders.splice(2, 0, kupContender('kup-before', values.baseline, `an earlier build: ${values.baseline}`));
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
      // Idle connections first, on fresh processes whose heaps are not shrinking after load.
      for (const c of contenders) {
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
      const workloads: { name: string; run: (f: Front) => Promise<Sample | null> }[] = [
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
      for (let round = 1; round <= plan.rounds; round++) {
        for (const w of workloads) {
          for (const c of contenders) {
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
      // kup only: a second kup takes over under load and the first drains (bench/restart.ts).
      try {
        add('restart', 'kup', await restartUnderLoad(backends, workDir, plan.seconds, log));
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
  const table = renderTable(samples, names);
  const targets = checkTargets(samples);
  const date = new Date().toISOString();
  const m = machine();
  const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
  const settings = Object.fromEntries(contenders.map((c) => [c.name, c.settings]));
  const text = [
    `kube-userspace-proxy benchmark, ${date}`,
    `machine: ${m.cpus} x ${m.cpuModel}, ${m.memGiB} GiB, Linux ${m.kernel}, Node ${m.node}; load tool, proxy and backend share the cores`,
    `command: ${command}; ${plan.rounds} round(s), ${plan.seconds}s per workload, medians; wrk -t1 -c50, iperf3 -P1/-P8, dnsperf -c1 -q100`,
    `settings: ${Object.entries(settings)
      .map(([k, v]) => `${k}: ${v}`)
      .join('; ')}`,
    ...Object.entries(skipped).map(([k, v]) => `skipped ${k}: ${v}`),
    '',
    table,
    '',
    renderTargets(targets),
    ...(controlPlane !== null ? ['', renderControlPlane(controlPlane)] : []),
    ...(fileSource.length > 0 ? ['', renderFileSource(fileSource)] : []),
    '',
    `total ${((Date.now() - startedAt) / 1000).toFixed(0)}s`,
  ].join('\n');
  process.stdout.write(`${text}\n`);

  const medians: Record<string, Record<string, number | null>> = {};
  for (const metric of METRICS) {
    const row: Record<string, number | null> = {};
    for (const c of names) row[c] = medianOf(samples, metric.workload, c, metric.field);
    medians[`${metric.workload}.${metric.field}`] = row;
  }
  await writeFile(
    values.out,
    `${JSON.stringify({ date, machine: m, command, plan, settings, skipped, medians, samples, targets, controlPlane, fileSource, text }, null, 2)}\n`,
  );
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
