import net from 'node:net';
import { runCommand, sleep, treeMemoryKiB } from './procs.js';

/** One measurement: named values (req/s, ms, Gbit/s, ...). */
export type Sample = Record<string, number>;

function num(re: RegExp, text: string, what: string): number {
  const m = re.exec(text);
  if (m === null) throw new Error(`cannot read ${what} from:\n${text.slice(0, 1500)}`);
  return Number(m[1]);
}

/** wrk latency figures like "1.23ms", "850.00us", "1.2s" in ms. */
function wrkMs(text: string, label: string): number {
  const m = new RegExp(`^\\s*${label}\\s+([\\d.]+)(us|ms|s)\\s*$`, 'm').exec(text);
  if (m === null) throw new Error(`no ${label} latency in wrk output:\n${text}`);
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
}

export interface WrkOptions {
  readonly port: number;
  readonly seconds: number;
  readonly connections: number;
  readonly close: boolean;
}

/** HTTP request rate and latency percentiles with wrk (one thread). */
export async function wrk(o: WrkOptions): Promise<Sample> {
  const args = ['-t1', `-c${o.connections}`, `-d${o.seconds}s`, '--latency', '--timeout', '5s'];
  if (o.close) args.push('-H', 'Connection: close');
  args.push(`http://127.0.0.1:${o.port}/`);
  const r = await runCommand('wrk', args, (o.seconds + 20) * 1000);
  if (r.code !== 0) throw new Error(`wrk failed: ${r.stderr}${r.stdout}`);
  const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(r.stdout);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(r.stdout);
  return {
    rps: num(/Requests\/sec:\s+([\d.]+)/, r.stdout, 'Requests/sec'),
    p50ms: wrkMs(r.stdout, '50%'),
    p99ms: wrkMs(r.stdout, '99%'),
    errors:
      (errors === null ? 0 : Number(errors[1]) + Number(errors[2]) + Number(errors[3]) + Number(errors[4])) +
      (non2xx === null ? 0 : Number(non2xx[1])),
  };
}

/** TCP throughput with iperf3, client to server, in Gbit/s. */
export async function iperf(port: number, seconds: number, streams: number): Promise<Sample> {
  for (let attempt = 0; ; attempt++) {
    const r = await runCommand(
      'iperf3',
      ['-c', '127.0.0.1', '-p', String(port), '-t', String(seconds), '-P', String(streams), '-J'],
      (seconds + 20) * 1000,
    );
    try {
      const j = JSON.parse(r.stdout) as { error?: string; end?: { sum_received?: { bits_per_second: number } } };
      if (j.error !== undefined) throw new Error(j.error);
      const bps = j.end?.sum_received?.bits_per_second;
      if (bps === undefined) throw new Error('no sum_received');
      return { gbps: bps / 1e9 };
    } catch (err) {
      // The iperf3 server runs one test at a time and is briefly busy after one.
      if (attempt >= 3) throw new Error(`iperf3 failed: ${(err as Error).message} ${r.stderr}`, { cause: err });
      await sleep(500);
    }
  }
}

/** DNS queries/s and loss with dnsperf (one client socket, one thread). */
export async function dnsperf(port: number, seconds: number, queryFile: string): Promise<Sample> {
  const r = await runCommand(
    'dnsperf',
    ['-s', '127.0.0.1', '-p', String(port), '-d', queryFile, '-l', String(seconds), '-c', '1', '-T', '1', '-t', '2', '-q', '100'],
    (seconds + 30) * 1000,
  );
  const text = r.stdout + r.stderr;
  const sent = num(/Queries sent:\s+(\d+)/, text, 'Queries sent');
  const lost = num(/Queries lost:\s+(\d+)/, text, 'Queries lost');
  return {
    qps: num(/Queries per second:\s+([\d.]+)/, text, 'Queries per second'),
    lossPct: sent === 0 ? 100 : (100 * lost) / sent,
  };
}

/**
 * UDP loss under a burst: `queries` DNS queries sent at once from one socket
 * (dnsperf with every query outstanding), answered or not within 2s. What a
 * resolver's retry storm does to a proxy whose receive buffer is small.
 */
export async function dnsBurst(port: number, queryFile: string, queries = 8000): Promise<Sample> {
  // The query file holds one query: -n repeats it `queries` times, -q keeps them all in flight.
  const r = await runCommand(
    'dnsperf',
    ['-s', '127.0.0.1', '-p', String(port), '-d', queryFile, '-n', String(queries), '-c', '1', '-T', '1', '-t', '2', '-q', String(queries)],
    60_000,
  );
  const text = r.stdout + r.stderr;
  const sent = num(/Queries sent:\s+(\d+)/, text, 'Queries sent');
  const completed = num(/Queries completed:\s+(\d+)/, text, 'Queries completed');
  return { burstQueries: sent, burstAnsweredPct: sent === 0 ? 0 : (100 * completed) / sent };
}

/**
 * Memory per idle proxied connection: PSS growth of the proxy's process tree
 * while `count` client connections stay open and silent (after a settle
 * time), divided by `count`.
 */
export async function idleMemory(pid: number, port: number, count: number): Promise<Sample> {
  const before = await settledMemory(pid);
  const sockets: net.Socket[] = [];
  try {
    for (let i = 0; i < count; i += 100) {
      const batch: Promise<void>[] = [];
      for (let j = i; j < Math.min(count, i + 100); j++) {
        batch.push(
          new Promise((resolve, reject) => {
            const s = net.connect({ host: '127.0.0.1', port });
            s.once('connect', () => resolve());
            s.once('error', reject);
            sockets.push(s);
          }),
        );
      }
      await Promise.all(batch);
    }
    // Let the proxy finish its dials and its heap settle.
    await sleep(1000);
    const after = await settledMemory(pid);
    const alive = sockets.filter((s) => !s.destroyed).length;
    return {
      perConnKiB: (after.pss - before.pss) / count,
      rssGrowthMiB: (after.rss - before.rss) / 1024,
      open: alive,
    };
  } finally {
    for (const s of sockets) s.destroy();
    await sleep(500);
  }
}

/** Memory once it stops moving (two reads 500 ms apart within 64 KiB), or after 10 s. */
async function settledMemory(pid: number): Promise<{ rss: number; pss: number }> {
  let prev = treeMemoryKiB(pid);
  for (let i = 0; i < 20; i++) {
    await sleep(500);
    const cur = treeMemoryKiB(pid);
    if (Math.abs(cur.pss - prev.pss) < 64) return cur;
    prev = cur;
  }
  return prev;
}
