/**
 * A bounded soak of `kup run`: steady new connections, keep-alive HTTP and UDP
 * queries at once, all on loopback, with the proxy's RSS and open descriptors
 * sampled each second. The report says whether they level off (no leak) and
 * how many requests failed (the answer must be none). Shared by
 * spec/soak.test.ts (30 s) and `npm run soak` (bench/soak.ts).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import dgram from 'node:dgram';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KUP } from './cli.js';
import { stringify } from 'yaml';

export interface SoakOptions {
  readonly seconds: number;
  /** New connections per second to aim for. */
  readonly connectRate?: number;
  readonly keepAliveClients?: number;
  readonly udpClients?: number;
  readonly log?: (line: string) => void;
}

export interface SoakSample {
  readonly t: number;
  readonly rssKiB: number;
  readonly fds: number;
  readonly ok: number;
  readonly failed: number;
}

export interface SoakReport {
  readonly seconds: number;
  readonly samples: SoakSample[];
  readonly requests: { readonly connect: number; readonly keepAlive: number; readonly udp: number };
  readonly failures: { readonly connect: number; readonly keepAlive: number; readonly udp: number };
  readonly firstFailure: string | null;
  /** Medians of the second quarter and the last quarter of the run (the first quarter is warm-up). */
  readonly rssKiB: { readonly early: number; readonly late: number; readonly max: number };
  readonly fds: { readonly early: number; readonly late: number; readonly max: number };
  readonly levelsOff: boolean;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : s[Math.floor(s.length / 2)]!;
}

function procStat(pid: number): { rssKiB: number; fds: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rss = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return { rssKiB: rss, fds: readdirSync(`/proc/${pid}/fd`).length };
}

async function listen(server: net.Server | http.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return (server.address() as AddressInfo).port;
}

export async function runSoak(opts: SoakOptions): Promise<SoakReport> {
  const log = opts.log ?? (() => {});
  const cleanups: (() => unknown)[] = [];
  try {
    // Backends: HTTP (keep-alive), a TCP name server (new connections), UDP echo.
    const httpServers = [0, 1].map((i) =>
      http.createServer((req, res) => {
        req.resume();
        res.end(`web-${i}\n`);
      }),
    );
    const tcpServers = [0, 1].map((i) =>
      net.createServer((s) => {
        s.on('error', () => {});
        s.end(`conn-${i}\n`);
      }),
    );
    const udpServers = [0, 1].map((i) => {
      const u = dgram.createSocket('udp4');
      u.on('message', (m, r) => u.send(Buffer.concat([Buffer.from(`dns-${i}:`), m]), r.port, r.address));
      return u;
    });
    const httpPorts = await Promise.all(httpServers.map(listen));
    const tcpPorts = await Promise.all(tcpServers.map(listen));
    const udpPorts = await Promise.all(
      udpServers.map((u) => new Promise<number>((r) => u.bind(0, '127.0.0.1', () => r(u.address().port)))),
    );
    cleanups.push(() =>
      httpServers.forEach((s) => {
        s.closeAllConnections();
        s.close();
      }),
    );
    cleanups.push(() => tcpServers.forEach((s) => s.close()));
    cleanups.push(() => udpServers.forEach((u) => u.close()));

    const svc = (name: string, protocol: 'TCP' | 'UDP', ip: string) => ({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name, namespace: 'soak' },
      spec: { clusterIP: ip, ports: [{ name: 'p', protocol, port: 80 }] },
    });
    const slices = (name: string, protocol: 'TCP' | 'UDP', ports: number[]) =>
      ports.map((port, i) => ({
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name: `${name}-${i}`, namespace: 'soak', labels: { 'kubernetes.io/service-name': name } },
        addressType: 'IPv4',
        ports: [{ name: 'p', protocol, port }],
        endpoints: [{ addresses: ['127.0.0.1'] }],
      }));
    const dir = await mkdtemp(join(tmpdir(), 'kup-soak-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'soak.yaml');
    await writeFile(
      file,
      stringify({
        kind: 'List',
        items: [
          svc('web', 'TCP', '10.96.0.10'),
          ...slices('web', 'TCP', httpPorts),
          svc('conn', 'TCP', '10.96.0.11'),
          ...slices('conn', 'TCP', tcpPorts),
          svc('dns', 'UDP', '10.96.0.12'),
          ...slices('dns', 'UDP', udpPorts),
        ],
      }),
    );

    const child: ChildProcessWithoutNullStreams = spawn(
      process.execPath,
      [
        '--disable-sigusr1',
        KUP,
        'run',
        '--no-iptables',
        '--bind-address',
        '127.0.0.1',
        '--source',
        `file:${file}`,
        '--healthz-bind-address',
        '',
        '--metrics-bind-address',
        '',
        '--udp-timeout',
        '5s',
        '--log-level',
        'info',
      ],
      { stdio: 'pipe' },
    );
    cleanups.push(() => child.kill('SIGKILL'));
    let stderr = '';
    const ports = new Map<string, number>();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`kup did not start: ${stderr.slice(-1000)}`)), 15_000);
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        for (const m of stderr.matchAll(/"servicePort":"soak\/(\w+):p\/\w+","proxyPort":(\d+)/g)) ports.set(m[1]!, Number(m[2]));
        if (ports.size === 3) {
          clearTimeout(timer);
          resolve();
        }
        if (stderr.length > 1_000_000) stderr = stderr.slice(-100_000);
      });
      child.once('exit', (code) => reject(new Error(`kup exited ${code}: ${stderr.slice(-1000)}`)));
    });
    log(`kup pid ${child.pid}: web ${ports.get('web')}, conn ${ports.get('conn')}, dns ${ports.get('dns')}`);

    const deadline = Date.now() + opts.seconds * 1000;
    const requests = { connect: 0, keepAlive: 0, udp: 0 };
    const failures = { connect: 0, keepAlive: 0, udp: 0 };
    let firstFailure: string | null = null;
    const fail = (kind: keyof typeof failures, why: string): void => {
      failures[kind]++;
      firstFailure ??= `${kind}: ${why}`;
    };

    // New connections at a steady rate, 8 at a time at most.
    const connectRate = opts.connectRate ?? 200;
    const connectLoop = async (): Promise<void> => {
      let inflight = 0;
      const gap = 1000 / connectRate;
      let next = Date.now();
      const pending: Promise<void>[] = [];
      while (Date.now() < deadline) {
        next += gap;
        const wait = next - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        if (inflight >= 8) continue;
        inflight++;
        const p = new Promise<void>((resolve) => {
          const s = net.connect(ports.get('conn')!, '127.0.0.1');
          let data = '';
          const timer = setTimeout(() => s.destroy(new Error('timeout')), 5000);
          s.on('data', (d: Buffer) => (data += d.toString()));
          s.on('close', () => {
            clearTimeout(timer);
            inflight--;
            requests.connect++;
            if (!/^conn-[01]\n$/.test(data)) fail('connect', `reply ${JSON.stringify(data)}`);
            resolve();
          });
          s.on('error', (e) => void e);
        });
        pending.push(p);
        if (pending.length > 1000) void pending.splice(0, 500);
      }
      await Promise.all(pending);
    };

    // Keep-alive HTTP: each client reuses one connection for sequential requests.
    const keepAliveLoop = async (): Promise<void> => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      try {
        while (Date.now() < deadline) {
          const body = await new Promise<string>((resolve) => {
            const req = http.get({ host: '127.0.0.1', port: ports.get('web'), path: '/', agent, timeout: 5000 }, (res) => {
              let b = '';
              res.on('data', (d) => (b += d));
              res.on('end', () => resolve(b));
            });
            req.on('timeout', () => req.destroy(new Error('timeout')));
            req.on('error', (e) => resolve(`error ${e.message}`));
          });
          requests.keepAlive++;
          if (!/^web-[01]\n$/.test(body)) fail('keepAlive', body);
          await new Promise((r) => setTimeout(r, 2));
        }
      } finally {
        agent.destroy();
      }
    };

    // UDP queries: each client keeps its socket (one proxy session), one query in flight.
    const udpLoop = async (): Promise<void> => {
      const sock = dgram.createSocket('udp4');
      await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
      try {
        let n = 0;
        while (Date.now() < deadline) {
          const q = `q${n++}`;
          const reply = await new Promise<string | null>((resolve) => {
            const timer = setTimeout(() => (sock.off('message', on), resolve(null)), 1000);
            const on = (m: Buffer): void => {
              clearTimeout(timer);
              sock.off('message', on);
              resolve(m.toString());
            };
            sock.on('message', on);
            sock.send(q, ports.get('dns'), '127.0.0.1');
          });
          requests.udp++;
          if (reply === null || !reply.endsWith(`:${q}`)) fail('udp', reply ?? 'no reply within 1s');
          await new Promise((r) => setTimeout(r, 2));
        }
      } finally {
        sock.close();
      }
    };

    const samples: SoakSample[] = [];
    const started = Date.now();
    const sampler = setInterval(() => {
      try {
        const st = procStat(child.pid!);
        const ok = requests.connect + requests.keepAlive + requests.udp;
        const failed = failures.connect + failures.keepAlive + failures.udp;
        samples.push({ t: Math.round((Date.now() - started) / 1000), ...st, ok, failed });
        if (samples.length % 10 === 0)
          log(`t=${samples.at(-1)!.t}s rss=${(st.rssKiB / 1024).toFixed(1)}MiB fds=${st.fds} requests=${ok} failed=${failed}`);
      } catch {
        // the process is gone: the run will fail below
      }
    }, 1000);
    cleanups.push(() => clearInterval(sampler));

    await Promise.all([
      connectLoop(),
      ...Array.from({ length: opts.keepAliveClients ?? 4 }, keepAliveLoop),
      ...Array.from({ length: opts.udpClients ?? 4 }, udpLoop),
    ]);
    clearInterval(sampler);
    if (child.exitCode !== null) throw new Error(`kup died during the soak: ${stderr.slice(-1000)}`);
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));

    const q = Math.max(1, Math.floor(samples.length / 4));
    const early = samples.slice(q, 2 * q);
    const late = samples.slice(-q);
    const rssKiB = {
      early: median(early.map((s) => s.rssKiB)),
      late: median(late.map((s) => s.rssKiB)),
      max: Math.max(...samples.map((s) => s.rssKiB)),
    };
    const fds = {
      early: median(early.map((s) => s.fds)),
      late: median(late.map((s) => s.fds)),
      max: Math.max(...samples.map((s) => s.fds)),
    };
    // Levelled off: late RSS within 25% (or 16 MiB) of early, descriptors within 32.
    const levelsOff = rssKiB.late <= Math.max(rssKiB.early * 1.25, rssKiB.early + 16 * 1024) && fds.late <= fds.early + 32;
    return { seconds: opts.seconds, samples, requests, failures, firstFailure, rssKiB, fds, levelsOff };
  } finally {
    for (const c of cleanups.reverse()) await c();
  }
}

export function formatSoak(r: SoakReport): string {
  const total = r.requests.connect + r.requests.keepAlive + r.requests.udp;
  const failed = r.failures.connect + r.failures.keepAlive + r.failures.udp;
  const lines = [
    `soak: ${r.seconds}s of new connections, keep-alive HTTP and UDP queries through kup run (loopback)`,
    `  requests: ${total} (new connections ${r.requests.connect}, keep-alive ${r.requests.keepAlive}, UDP ${r.requests.udp}); failed: ${failed}${r.firstFailure !== null ? ` (first: ${r.firstFailure})` : ''}`,
    `  RSS MiB: 2nd quarter median ${(r.rssKiB.early / 1024).toFixed(1)}, last quarter median ${(r.rssKiB.late / 1024).toFixed(1)}, max ${(r.rssKiB.max / 1024).toFixed(1)}`,
    `  open descriptors: 2nd quarter median ${r.fds.early}, last quarter median ${r.fds.late}, max ${r.fds.max}`,
    `  levels off (no leak): ${r.levelsOff ? 'yes' : 'NO'}`,
    '  t(s)  RSS(MiB)  fds  requests  failed',
  ];
  const step = Math.max(1, Math.floor(r.samples.length / 15));
  for (let i = 0; i < r.samples.length; i += step) {
    const s = r.samples[i]!;
    lines.push(
      `  ${String(s.t).padStart(4)}  ${(s.rssKiB / 1024).toFixed(1).padStart(8)}  ${String(s.fds).padStart(3)}  ${String(s.ok).padStart(8)}  ${String(s.failed).padStart(6)}`,
    );
  }
  return lines.join('\n');
}
