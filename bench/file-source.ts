/**
 * npm run bench:file [-- --services 5000] [-- --kup path/to/bin/kup.js] [-- --reloads 3]
 *
 * The file source at scale, as issue 10 measured it: a kubectl-style List of N
 * Services + N EndpointSlices (with managedFields and last-applied annotations,
 * as `kubectl get -o yaml` prints them), once as YAML and once as JSON. For
 * each: time to the first sync, time to apply a one-endpoint change, the worst
 * /healthz response time while that change is read (how long the event loop
 * is blocked: a liveness probe sees exactly this), and RSS after the reloads.
 * `kup run --no-iptables` is spawned on loopback; nothing else is touched.
 */
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { clusterList } from '../spec/support/kubectl-list.js';
import { freePort, sleep, startProcess, stopAll, treeMemoryKiB, type Started } from './procs.js';

export interface FileSourceResult {
  readonly format: 'yaml' | 'json';
  readonly services: number;
  readonly fileMiB: number;
  readonly firstSyncSeconds: number;
  readonly reloadSeconds: number[];
  readonly maxHealthzMs: number[];
  readonly rssMiBAfterFirstSync: number;
  readonly rssMiBAfterReloads: number;
}

function render(format: 'yaml' | 'json', list: unknown): string {
  return format === 'yaml' ? stringify(list) : `${JSON.stringify(list, null, 4)}\n`;
}

/** One GET /healthz; resolves to its duration in ms (whatever the status). */
function healthz(port: number): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolveMs) => {
    const req = request({ host: '127.0.0.1', port, path: '/healthz', agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolveMs(performance.now() - t0));
    });
    req.on('error', () => resolveMs(performance.now() - t0));
    req.end();
  });
}

/** Polls /healthz every 10 ms until stopped; the worst response time seen. */
function probe(port: number): { stop(): Promise<number> } {
  let worst = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      worst = Math.max(worst, await healthz(port));
      await sleep(10);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return worst;
    },
  };
}

function count(out: string, needle: string): number {
  let n = 0;
  for (let i = out.indexOf(needle); i !== -1; i = out.indexOf(needle, i + 1)) n++;
  return n;
}

async function waitUntil(cond: () => boolean, timeoutMs: number, what: string, proc: Started): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (proc.child.exitCode !== null) throw new Error(`kup exited while waiting for ${what}:\n${proc.output().slice(-2000)}`);
    if (Date.now() > end) throw new Error(`no ${what} within ${timeoutMs}ms:\n${proc.output().slice(-2000)}`);
    await sleep(5);
  }
}

export async function runFileSource(opts: {
  format: 'yaml' | 'json';
  services: number;
  reloads: number;
  kup: string;
  workDir: string;
  log: (m: string) => void;
}): Promise<FileSourceResult> {
  const ext = opts.format === 'yaml' ? 'yaml' : 'json';
  const file = join(opts.workDir, `cluster.${ext}`);
  const first = render(opts.format, clusterList(opts.services, 0));
  await writeFile(file, first);
  const fileMiB = Buffer.byteLength(first) / 2 ** 20;
  opts.log(`file source ${opts.format}: ${opts.services} services, ${fileMiB.toFixed(1)} MiB`);
  const healthPort = await freePort();
  const t0 = performance.now();
  const kup = startProcess(process.execPath, [
    '--disable-sigusr1',
    opts.kup,
    'run',
    `--source=file:${file}`,
    '--no-iptables',
    '--bind-address=127.0.0.1',
    '--hostname-override=node-0',
    `--healthz-bind-address=127.0.0.1:${healthPort}`,
    '--metrics-bind-address=',
    '--min-sync-period=0',
    // Proxy ports below the ephemeral range, so none takes the health port picked above.
    '--proxy-port-range=20000-29999',
    '--log-level=info',
  ]);
  try {
    await waitUntil(() => kup.output().includes('synced '), 600_000, 'first sync', kup);
    const firstSyncSeconds = (performance.now() - t0) / 1000;
    await sleep(1000);
    const rssMiBAfterFirstSync = treeMemoryKiB(kup.pid).rss / 1024;
    const reloadSeconds: number[] = [];
    const maxHealthzMs: number[] = [];
    for (let r = 1; r <= opts.reloads; r++) {
      const next = render(opts.format, clusterList(opts.services, r));
      await writeFile(`${file}.tmp`, next);
      const before = count(kup.output(), 'objects reloaded');
      const p = probe(healthPort);
      await sleep(200); // a baseline of quick answers first
      const t1 = performance.now();
      await rename(`${file}.tmp`, file);
      await waitUntil(() => count(kup.output(), 'objects reloaded') > before, 600_000, `reload ${r}`, kup);
      reloadSeconds.push((performance.now() - t1) / 1000);
      await sleep(500); // the sync after the reload, under the same probe
      maxHealthzMs.push(await p.stop());
      opts.log(`  reload ${r}: ${reloadSeconds.at(-1)!.toFixed(2)}s, worst /healthz ${maxHealthzMs.at(-1)!.toFixed(0)}ms`);
    }
    await sleep(7000); // past the parse worker's 5 s idle end
    const rssMiBAfterReloads = treeMemoryKiB(kup.pid).rss / 1024;
    return {
      format: opts.format,
      services: opts.services,
      fileMiB,
      firstSyncSeconds,
      reloadSeconds,
      maxHealthzMs,
      rssMiBAfterFirstSync,
      rssMiBAfterReloads,
    };
  } finally {
    await kup.stop();
  }
}

export function renderFileSource(results: readonly FileSourceResult[]): string {
  const rows = results.map((r) =>
    [
      r.format.padEnd(6),
      `${r.services}`.padStart(8),
      r.fileMiB.toFixed(1).padStart(8),
      r.firstSyncSeconds.toFixed(2).padStart(10),
      Math.max(...r.reloadSeconds)
        .toFixed(2)
        .padStart(10),
      Math.max(...r.maxHealthzMs)
        .toFixed(0)
        .padStart(12),
      r.rssMiBAfterFirstSync.toFixed(0).padStart(10),
      r.rssMiBAfterReloads.toFixed(0).padStart(12),
    ].join(' '),
  );
  return [
    'File source at scale (one Service + one EndpointSlice per service, kubectl-style)',
    'format services     MiB first sync  reload(s) worst /healthz  RSS MiB  RSS after n',
    ...rows,
  ].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      services: { type: 'string', default: '5000' },
      reloads: { type: 'string', default: '3' },
      kup: { type: 'string', default: resolve('dist/bin/kup.js') },
      only: { type: 'string' },
    },
  });
  const workDir = await mkdtemp(join(tmpdir(), 'kup-bench-file-'));
  const log = (m: string): void => void process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${m}\n`);
  const results: FileSourceResult[] = [];
  try {
    for (const format of ['yaml', 'json'] as const) {
      if (values.only !== undefined && values.only !== format) continue;
      results.push(
        await runFileSource({ format, services: Number(values.services), reloads: Number(values.reloads), kup: values.kup, workDir, log }),
      );
    }
  } finally {
    stopAll();
    await rm(workDir, { recursive: true, force: true });
  }
  process.stdout.write(`${renderFileSource(results)}\n`);
  process.stdout.write(`${JSON.stringify(results)}\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err: unknown) => {
    stopAll();
    process.stderr.write(`bench: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
