import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { ApiServerDouble } from '../spec/support/apiserver-double.js';
import { endpointSlice, node, service } from '../spec/support/objects.js';
import { kupRunArgs, waitForLog } from './contenders.js';
import { freePort, openFiles, sleep, startProcess, treeMemoryKiB } from './procs.js';
import { median } from './stats.js';

export interface ControlPlaneOptions {
  readonly services: number;
  readonly endpointsPerService: number;
  readonly changes: number;
  readonly small: boolean;
  readonly workDir: string;
  readonly log: (msg: string) => void;
}

export interface StartupFigures {
  readonly services: number;
  readonly endpoints: number;
  /** kup's own figure: "synced N service ports, M endpoints in Xs" (from before the initial list). */
  readonly syncedSeconds: number;
  /** Wall time from spawn to the first connection through a proxy port reaching an endpoint. */
  readonly firstServedSeconds: number;
  /** Wall time from spawn to the "synced" line (every listener open). */
  readonly allServingSeconds: number;
  /** From kup's "initial list ... delivered" line to its "synced" line (both stamped by kup): serving after the list arrived. */
  readonly afterListSeconds: number;
  readonly rssMiB: number;
  /** RSS again after the change rows (the heap settled after start-up; null when no change rows ran). */
  readonly rssAfterChangesMiB: number | null;
  readonly openFiles: number;
  readonly fdLimit: number;
}

export interface ControlPlaneResult {
  readonly small: StartupFigures | null;
  readonly large: StartupFigures | null;
  readonly changes: readonly ChangeFigures[] | null;
  readonly flags: string;
}

export interface ChangeFigures {
  /** EndpointSlice changes issued per second, each to a different service. */
  readonly perSecond: number;
  readonly count: number;
  readonly servicesPresent: number;
  readonly p50ms: number;
  readonly p99ms: number;
  readonly maxms: number;
  /** Changes that took longer than 20 ms (the target for p99). */
  readonly over20ms: number;
  readonly failed: number;
  /** When the row's first change was issued, in ms since kup was spawned (to place kup's --trace-gc lines; change j is issued j * 1000 / perSecond ms later). */
  readonly startedAfterSpawnMs: number;
  /** Each change's latency in issue order (ms, rounded to 0.1; -1 when never reached), for finding what an outlier met. */
  readonly samples: readonly number[];
}

/**
 * Candidate --proxy-port-range blocks, below the kernel's ephemeral ports
 * (32768-) so the bench's own connections never take one; each holds 10,000
 * listeners. Another kup on the machine (a parallel bench) may hold one
 * block: the run takes the block with the fewest listeners.
 */
const PORT_BLOCKS: readonly { readonly first: number; readonly last: number }[] = [
  { first: 10_001, last: 20_999 },
  { first: 21_001, last: 31_999 },
];

/** TCP ports in LISTEN state on this machine (/proc/net/tcp and tcp6). */
function listeningPorts(): Set<number> {
  const out = new Set<number>();
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      // local_address is ADDR:PORT in hex; state 0A is LISTEN.
      if (cols[3] === '0A') out.add(parseInt(cols[1]?.split(':')[1] ?? '', 16));
    }
  }
  return out;
}

/** The range to give kup, and its first free port: the first listener kup opens, probed from spawn on. */
function portRange(): { range: string; firstPort: number } {
  const used = listeningPorts();
  const busy = (b: { first: number; last: number }): number => [...used].filter((p) => p >= b.first && p <= b.last).length;
  const block = PORT_BLOCKS.reduce((a, b) => (busy(b) < busy(a) ? b : a));
  let firstPort = block.first;
  while (used.has(firstPort) && firstPort < block.last) firstPort++;
  return { range: `${block.first}-${block.last}`, firstPort };
}
const ENDPOINT_PORT_NAME = 'p';

interface Sinks {
  readonly port: number;
  readonly ips: readonly string[];
  readonly accepted: { n: number };
  close(): void;
}

/** Endpoints that accept and close: 127.0.1.1..k on one port (all of 127/8 is loopback). */
async function startSinks(count: number): Promise<Sinks> {
  const accepted = { n: 0 };
  const servers: net.Server[] = [];
  let port = 0;
  const ips: string[] = [];
  for (let k = 1; k <= count; k++) {
    const ip = `127.0.1.${k}`;
    const srv = net.createServer((s) => {
      accepted.n++;
      s.on('error', () => {});
      s.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, ip, () => {
        port = (srv.address() as net.AddressInfo).port;
        resolve();
      });
    });
    servers.push(srv);
    ips.push(ip);
  }
  return { port, ips, accepted, close: () => servers.forEach((s) => s.close()) };
}

function serviceIP(i: number): string {
  const n = i + 1;
  return `10.${96 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`;
}

function populate(api: ApiServerDouble, services: number, ips: readonly string[], port: number): void {
  api.upsert(node({ name: 'bench-node' }));
  for (let i = 0; i < services; i++) {
    const name = `s${i}`;
    api.upsert(
      service({ namespace: 'scale', name, clusterIP: serviceIP(i), ports: [{ name: ENDPOINT_PORT_NAME, port: 80, targetPort: port }] }),
    );
    api.upsert(
      endpointSlice({
        namespace: 'scale',
        service: name,
        name: `${name}-1`,
        endpoints: ips.map((ip) => ({ ip, ready: true, nodeName: 'bench-node' })),
        ports: [{ name: ENDPOINT_PORT_NAME, port }],
      }),
    );
  }
}

/** One connection attempt: true once it was accepted by the proxy and carried to an endpoint (closed by it). */
function probe(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const t = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, 1000);
    s.on('error', () => {
      clearTimeout(t);
      resolve(false);
    });
    // The sink closes at once: an end (not a reset) means an endpoint answered.
    s.once('end', () => {
      clearTimeout(t);
      s.destroy();
      resolve(true);
    });
    s.resume();
  });
}

async function startup(
  opts: ControlPlaneOptions,
  services: number,
  perService: number,
  keepRunning: boolean,
): Promise<{
  figures: StartupFigures;
  stop: () => Promise<void>;
  ports: Map<string, number>;
  api: ApiServerDouble;
  sinks: Sinks;
  rssMiB: () => number;
  spawnedAt: number;
}> {
  const sinks = await startSinks(perService);
  const api = new ApiServerDouble({ bookmarkIntervalMs: 0 });
  populate(api, services, sinks.ips, sinks.port);
  await api.start();
  const kubeconfig = join(opts.workDir, `kubeconfig-${services}`);
  await api.writeKubeconfig(kubeconfig);
  opts.log(`API server double holds ${services} services, ${services * perService} endpoints`);

  // KUP_BENCH_KUP_ENTRY=DIR/dist/bin/kup.js runs an earlier build (before/after figures);
  // KUP_BENCH_NODE_ARGS="--heapsnapshot-signal=SIGUSR2" and the like go to kup's node.
  const nodeArgs = (process.env.KUP_BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
  const { range, firstPort } = portRange();
  opts.log(`--proxy-port-range ${range}, first proxy port ${firstPort}`);
  // The proxy ports come from /status (kup logs one summary line, not one line per port, for a large sync).
  const statusPort = await freePort();
  const args = [
    ...nodeArgs,
    ...kupRunArgs('kubernetes', process.env.KUP_BENCH_KUP_ENTRY ?? undefined),
    '--kubeconfig',
    kubeconfig,
    '--hostname-override',
    'bench-node',
    '--proxy-port-range',
    range,
    '--metrics-bind-address',
    `127.0.0.1:${statusPort}`,
  ];
  const t0 = performance.now();
  opts.log(`kup spawned at ${Math.round(t0)} ms of the bench process (its --trace-gc clock)`);
  const p = startProcess(process.execPath, args);
  let firstServed = NaN;
  try {
    // Probe the first proxy port from spawn on (it is the first one opened).
    while (performance.now() - t0 < 60_000) {
      if (await probe(firstPort)) {
        firstServed = (performance.now() - t0) / 1000;
        break;
      }
      await sleep(5);
    }
    const m = await waitForLog(p, /synced ([\d,]+) service ports, ([\d,]+) endpoints in ([\d.]+)s/, 120_000);
    const allServing = (performance.now() - t0) / 1000;
    const listAt = logTime(p.output(), /initial list of services and endpointslices delivered/);
    const syncedAt = logTime(p.output(), /"msg":"synced /);
    await sleep(500);
    const figures: StartupFigures = {
      services: Number(m[1]!.replace(/,/g, '')),
      endpoints: Number(m[2]!.replace(/,/g, '')),
      syncedSeconds: Number(m[3]),
      firstServedSeconds: firstServed,
      allServingSeconds: allServing,
      afterListSeconds: (syncedAt - listAt) / 1000,
      rssMiB: treeMemoryKiB(p.pid).rss / 1024,
      rssAfterChangesMiB: null,
      openFiles: openFiles(p.pid),
      fdLimit: fdLimitOf(p.pid),
    };
    opts.log(`startup ${services}x${perService}: ${JSON.stringify(figures)}`);
    const ports = await proxyPortsFromStatus(statusPort);
    const stop = async (): Promise<void> => {
      await p.stop();
      // KUP_BENCH_KUP_LOG=FILE keeps kup's output (with KUP_BENCH_NODE_ARGS=--trace-gc: where the collections fell).
      if (process.env.KUP_BENCH_KUP_LOG) writeFileSync(`${process.env.KUP_BENCH_KUP_LOG}.${services}`, p.output());
      await api.stop();
      sinks.close();
    };
    if (!keepRunning) await stop();
    return { figures, stop, ports, api, sinks, rssMiB: () => treeMemoryKiB(p.pid).rss / 1024, spawnedAt: t0 };
  } catch (err) {
    await p.stop();
    await api.stop();
    sinks.close();
    throw err;
  }
}

/** Service port key -> proxy port, from kup's /status. */
async function proxyPortsFromStatus(port: number): Promise<Map<string, number>> {
  const res = await fetch(`http://127.0.0.1:${port}/status`);
  const doc = (await res.json()) as { services: { key: string; proxyPort: number | null }[] };
  const out = new Map<string, number>();
  for (const s of doc.services) if (s.proxyPort !== null) out.set(s.key, s.proxyPort);
  return out;
}

/** kup's `time` stamp (ISO, ms) of the first log line matching `pattern`, in ms since epoch; NaN when none. */
function logTime(output: string, pattern: RegExp): number {
  const line = output.split('\n').find((l) => pattern.test(l));
  const m = line === undefined ? null : /"time":"([^"]+)"/.exec(line);
  return m === null ? NaN : Date.parse(m[1]!);
}

function fdLimitOf(pid: number): number {
  try {
    const text = readFileSync(`/proc/${pid}/limits`, 'utf8');
    const m = /Max open files\s+(\d+)/.exec(text);
    return m === null ? NaN : Number(m[1]);
  } catch {
    return NaN;
  }
}

/** One probe: what an endpoint sent before closing ('' from the sinks), or null when refused, reset or timed out. */
function probeData(port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let data = '';
    const t = setTimeout(() => {
      s.destroy();
      resolve(null);
    }, 1000);
    s.on('data', (d: Buffer) => (data += d.toString()));
    s.on('error', () => {
      clearTimeout(t);
      resolve(null);
    });
    s.once('end', () => {
      clearTimeout(t);
      s.destroy();
      resolve(data);
    });
  });
}

/**
 * Latency from an EndpointSlice change to the first new connection reaching
 * the new endpoint, with changes arriving at `perSecond` (each to a different
 * service): a service's slice is replaced by one naming the marker endpoint,
 * which answers "m" where the old endpoints send nothing, and the service's
 * proxy port is probed every 2 ms until a connection brings the "m" back.
 */
async function changesAt(
  api: ApiServerDouble,
  ports: Map<string, number>,
  services: number,
  markerPort: number,
  perSecond: number,
  count: number,
  first: number,
  stride: number,
  spawnedAt: number,
): Promise<ChangeFigures> {
  const lat: number[] = [];
  const samples: number[] = new Array<number>(count).fill(-1);
  let failed = 0;
  const start = performance.now();
  const one = async (j: number): Promise<void> => {
    const i = (first + j * stride) % services;
    const proxyPort = ports.get(`scale/s${i}:${ENDPOINT_PORT_NAME}/TCP`);
    if (proxyPort === undefined) {
      failed++;
      return;
    }
    const t0 = performance.now();
    api.upsert(
      endpointSlice({
        namespace: 'scale',
        service: `s${i}`,
        name: `s${i}-1`,
        endpoints: [{ ip: '127.0.0.1', ready: true, nodeName: 'bench-node' }],
        ports: [{ name: ENDPOINT_PORT_NAME, port: markerPort }],
      }),
    );
    while (performance.now() - t0 < 10_000) {
      if ((await probeData(proxyPort)) === 'm') {
        lat.push(performance.now() - t0);
        samples[j] = Math.round((performance.now() - t0) * 10) / 10;
        return;
      }
      await sleep(2);
    }
    failed++;
  };
  const running: Promise<void>[] = [];
  for (let j = 0; j < count; j++) {
    // On schedule, not after the previous change landed: changes overlap as they do in a cluster.
    const due = start + (j * 1000) / perSecond;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    running.push(one(j));
  }
  await Promise.all(running);
  const sorted = [...lat].sort((a, b) => a - b);
  const pct = (q: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] ?? NaN;
  return {
    perSecond,
    startedAfterSpawnMs: Math.round(start - spawnedAt),
    count: lat.length,
    servicesPresent: services,
    p50ms: median(lat),
    p99ms: pct(0.99),
    maxms: sorted[sorted.length - 1] ?? NaN,
    over20ms: lat.filter((x) => x > 20).length,
    failed,
    samples,
  };
}

/** The change rows: 10 and 100 changes per second, each row on services the other does not touch. */
async function changes(
  opts: ControlPlaneOptions,
  api: ApiServerDouble,
  ports: Map<string, number>,
  services: number,
  spawnedAt: number,
): Promise<ChangeFigures[]> {
  const marker = net.createServer((s) => {
    s.on('error', () => {});
    s.end('m');
  });
  await new Promise<void>((resolve) => marker.listen(0, '127.0.0.1', () => resolve()));
  const markerPort = (marker.address() as net.AddressInfo).port;
  try {
    const slow = Math.max(10, Math.round(opts.changes / 4));
    const fast = Math.max(10, opts.changes);
    const stride = Math.max(1, Math.floor(services / (slow + fast)));
    const out: ChangeFigures[] = [];
    // A quiet moment first: the start-up sync is over and the first change is not special.
    await sleep(1100);
    out.push(await changesAt(api, ports, services, markerPort, 10, slow, 0, stride, spawnedAt));
    opts.log(`changes at 10/s: ${JSON.stringify(out[0])}`);
    out.push(await changesAt(api, ports, services, markerPort, 100, fast, slow * stride + Math.floor(stride / 2), stride, spawnedAt));
    opts.log(`changes at 100/s: ${JSON.stringify(out[1])}`);
    return out;
  } finally {
    marker.close();
  }
}

export async function runControlPlane(opts: ControlPlaneOptions): Promise<ControlPlaneResult> {
  const flags =
    'kup run --source kubernetes --no-iptables --bind-address 127.0.0.1 --proxy-port-range 10001-20999 or 21001-31999 (whichever is free) --metrics-bind-address 127.0.0.1:(free port, for /status) (default --min-sync-period 1s, --relay auto)';
  if (opts.small) {
    const s = await startup(opts, opts.services, opts.endpointsPerService, true);
    try {
      const c = await changes(opts, s.api, s.ports, opts.services, s.spawnedAt);
      return { small: { ...s.figures, rssAfterChangesMiB: s.rssMiB() }, large: null, changes: c, flags };
    } finally {
      await s.stop();
    }
  }
  const small = (await startup(opts, 1000, 3, false)).figures;
  const l = await startup(opts, opts.services, opts.endpointsPerService, true);
  try {
    const c = await changes(opts, l.api, l.ports, opts.services, l.spawnedAt);
    return { small, large: { ...l.figures, rssAfterChangesMiB: l.rssMiB() }, changes: c, flags };
  } finally {
    await l.stop();
  }
}

function row(f: StartupFigures): string {
  return `| ${f.services.toLocaleString('en-US')} x ${Math.round(f.endpoints / Math.max(1, f.services))} | ${f.syncedSeconds.toFixed(2)} s | ${f.afterListSeconds.toFixed(2)} s | ${Number.isFinite(f.firstServedSeconds) ? `${f.firstServedSeconds.toFixed(2)} s` : 'not reached in 60 s'} | ${f.allServingSeconds.toFixed(2)} s | ${f.rssMiB.toFixed(0)} MiB${f.rssAfterChangesMiB === null ? '' : ` (${f.rssAfterChangesMiB.toFixed(0)} after the changes)`} | ${f.openFiles.toLocaleString('en-US')} / ${f.fdLimit.toLocaleString('en-US')} |`;
}

export function renderControlPlane(r: ControlPlaneResult): string {
  const lines = [
    `control plane (API server double over HTTPS; ${r.flags})`,
    '',
    '| service ports x endpoints | "synced in" (kup log) | list arrived -> all serving | spawn -> first connection served | spawn -> all serving | RSS | open files / limit |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  ];
  if (r.small !== null) lines.push(row(r.small));
  if (r.large !== null) lines.push(row(r.large));
  if (r.changes !== null) {
    lines.push(
      '',
      'EndpointSlice change -> first new connection at the new endpoint (each change to another service):',
      '',
      '| changes per second | service ports present | changes | p50 | p99 | max | over 20 ms |',
      '| --- | --- | --- | --- | --- | --- | --- |',
    );
    for (const c of r.changes) {
      lines.push(
        `| ${c.perSecond} | ${c.servicesPresent.toLocaleString('en-US')} | ${c.count}${c.failed > 0 ? ` (${c.failed} never reached)` : ''} | ${c.p50ms.toFixed(1)} ms | ${c.p99ms.toFixed(1)} ms | ${c.maxms.toFixed(1)} ms | ${c.over20ms} |`,
      );
    }
  }
  return lines.join('\n');
}
