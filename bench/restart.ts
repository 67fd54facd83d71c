/**
 * Restart under load (issue 14): kup serves wrk (new connections, and
 * keep-alive connections) while a second kup takes over on the same proxy
 * ports (SO_REUSEPORT, hand-over over kup.sock in a shared --state-dir) and the
 * first gets SIGTERM and drains. Reports wrk's failed requests and p99 latency
 * over a run that spans the whole hand-over, and how long the take-over took.
 */
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Backends } from './backends.js';
import { kupObjects, kupRunArgs, proxyPortsFromLog, waitForLog } from './contenders.js';
import { sleep, startProcess } from './procs.js';
import { wrk, type Sample } from './workloads.js';

export async function restartUnderLoad(b: Backends, workDir: string, seconds: number, log: (s: string) => void): Promise<Sample> {
  const dir = await mkdtemp(join(workDir, 'restart-'));
  const file = join(dir, 'bench.yaml');
  await writeFile(file, kupObjects(b));
  // The first kup drains its keep-alive connections until wrk closes them (within the grace period).
  const args = kupRunArgs(`file:${file}`, 'dist/bin/kup.js', ['--state-dir', join(dir, 'state'), '--shutdown-grace-period', '60s']);
  const first = startProcess(process.execPath, args);
  let second: ReturnType<typeof startProcess> | null = null;
  try {
    await waitForLog(first, /admin servers listening/, 20_000);
    const port = proxyPortsFromLog(first.output()).get('bench/http:p/TCP');
    if (port === undefined) throw new Error(`kup did not open the http port: ${first.output().slice(-2000)}`);
    // Long enough to span start-up, take-over and drain of the second kup with a margin.
    const s = Math.max(seconds, 6);
    const newconn = wrk({ port, seconds: s, connections: 50, close: true });
    const keepalive = wrk({ port, seconds: s, connections: 10, close: false });
    await sleep(1000);
    const t0 = performance.now();
    second = startProcess(process.execPath, args);
    await waitForLog(second, /took over from kup pid/, 30_000);
    const handoverMs = performance.now() - t0;
    first.child.kill('SIGTERM');
    const [n, k] = await Promise.all([newconn, keepalive]);
    // wrk closed its keep-alive connections: the first kup has nothing left to drain.
    const exited = await Promise.race([
      new Promise<boolean>((r) => first.child.once('exit', (code) => r(code === 0))),
      sleep(10_000).then(() => false),
    ]);
    // 0: connections queued at the first kup's listener when it closes are reset (the bench never changes it).
    const migrate = Number((await readFile('/proc/sys/net/ipv4/tcp_migrate_req', 'utf8').catch(() => '-1')).trim());
    const r: Sample = {
      tcpMigrateReq: migrate,
      rps: n.rps!,
      p99ms: n.p99ms!,
      errors: n.errors!,
      keepaliveP99ms: k.p99ms!,
      keepaliveErrors: k.errors!,
      handoverMs,
      firstExitedOk: exited ? 1 : 0,
    };
    log(`restart under load: ${JSON.stringify(r)}`);
    return r;
  } finally {
    await first.stop();
    await second?.stop();
  }
}
