import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Backends } from './backends.js';
import { commandExists, freePort, sleep, startProcess, waitForPort, type Started } from './procs.js';

/** Where a load tool aims for one contender, and the process to measure. */
export interface Front {
  readonly httpPort: number;
  readonly iperfPort: number;
  /** null when the contender cannot carry UDP. */
  readonly dnsPort: number | null;
  /** The proxy's process (its tree is measured); null for direct. */
  readonly pid: number | null;
  stop(): Promise<void>;
}

export interface Contender {
  readonly name: string;
  /** Settings the table states: workers, threads, processes. */
  readonly settings: string;
  /** Why it cannot run here, or null. */
  unavailable(): string | null;
  start(b: Backends, workDir: string): Promise<Front>;
}

async function ports(udp: boolean): Promise<{ http: number; iperf: number; dns: number | null }> {
  return { http: await freePort(), iperf: await freePort(), dns: udp ? await freePort(true) : null };
}

export const direct: Contender = {
  name: 'direct',
  settings: 'load tool straight to the backend (the physical limit)',
  unavailable: () => null,
  start(b) {
    return Promise.resolve({ httpPort: b.httpPort, iperfPort: b.iperfPort, dnsPort: b.dnsPort, pid: null, stop: async () => {} });
  },
};

/** The YAML a user would write for the three bench services. */
export function kupObjects(b: Backends): string {
  const svc = (name: string, port: number, target: number, protocol: 'TCP' | 'UDP', ip: string): string => `---
apiVersion: v1
kind: Service
metadata: {name: ${name}, namespace: bench}
spec:
  type: ClusterIP
  clusterIP: ${ip}
  clusterIPs: [${ip}]
  ports: [{name: p, port: ${port}, targetPort: ${target}, protocol: ${protocol}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ${name}-1
  namespace: bench
  labels: {kubernetes.io/service-name: ${name}}
addressType: IPv4
endpoints: [{addresses: ["127.0.0.1"], conditions: {ready: true}}]
ports: [{name: p, port: ${target}, protocol: ${protocol}}]
`;
  let out = svc('http', 80, b.httpPort, 'TCP', '10.96.0.10') + svc('iperf', 5201, b.iperfPort, 'TCP', '10.96.0.11');
  if (b.dnsPort !== null) out += svc('dns', 53, b.dnsPort, 'UDP', '10.96.0.12');
  return out;
}

/** Parses kup's "opened proxy port" log lines into service name -> proxy port. */
export function proxyPortsFromLog(log: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of log.split('\n')) {
    if (!line.includes('opened proxy port')) continue;
    try {
      const rec = JSON.parse(line) as { servicePort?: string; proxyPort?: number };
      if (rec.servicePort !== undefined && rec.proxyPort !== undefined) out.set(rec.servicePort, rec.proxyPort);
    } catch {
      // not JSON
    }
  }
  return out;
}

export const kupRunArgs = (source: string, entry = 'dist/bin/kup.js', extra: readonly string[] = []): string[] => [
  // As the shebang and the image start it: no inspector on SIGUSR1, a small young generation.
  '--disable-sigusr1',
  '--max-semi-space-size=8',
  entry,
  'run',
  '--source',
  source,
  '--no-iptables',
  '--bind-address',
  '127.0.0.1',
  '--healthz-bind-address',
  '',
  '--metrics-bind-address',
  '',
  ...extra,
];

export async function waitForLog(p: Started, pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = pattern.exec(p.output());
    if (m !== null) return m;
    if (p.child.exitCode !== null) throw new Error(`process exited (${p.child.exitCode}): ${p.output().slice(-2000)}`);
    if (Date.now() > deadline) throw new Error(`no ${pattern} after ${timeoutMs}ms: ${p.output().slice(-2000)}`);
    await sleep(20);
  }
}

/** kup run from `entry` (dist/bin/kup.js, or an older build to compare against). */
export function kupContender(name: string, entry: string, settings: string, extra: readonly string[] = []): Contender {
  return {
    name,
    settings,
    unavailable: () => null,
    async start(b, workDir) {
      const file = join(workDir, `${name}-bench.yaml`);
      await writeFile(file, kupObjects(b));
      // KUP_BENCH_NODE_ARGS="--cpu-prof --cpu-prof-dir=DIR" profiles kup under the same load.
      const nodeArgs = (process.env.KUP_BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
      const p = startProcess(process.execPath, [...nodeArgs, ...kupRunArgs(`file:${file}`, entry, extra)]);
      try {
        await waitForLog(p, /synced \d+ service ports/, 20_000);
        const m = proxyPortsFromLog(p.output());
        const get = (k: string): number => {
          const v = m.get(k);
          if (v === undefined) throw new Error(`kup did not open ${k}: ${p.output().slice(-2000)}`);
          return v;
        };
        return {
          httpPort: get('bench/http:p/TCP'),
          iperfPort: get('bench/iperf:p/TCP'),
          dnsPort: b.dnsPort === null ? null : get('bench/dns:p/UDP'),
          pid: p.pid,
          stop: () => p.stop(),
        };
      } catch (err) {
        await p.stop();
        throw err;
      }
    },
  };
}

/** Contender names of the two relays (bench/report.ts checks both against the targets). */
export const KUP_NATIVE = 'kup-native';
export const KUP_JS = 'kup-js';

/** Why `--relay native` cannot run here, or null: the addon is built per checkout (`npm run build:native`). */
function nativeRelayMissing(): string | null {
  const path = process.env.KUP_NATIVE_RELAY_PATH ?? 'build/Release/kup_relay.node';
  return existsSync(path) ? null : `no native relay addon at ${path}: npm run build:native`;
}

/** The native relay (native/relay.c), asked for explicitly so a missing addon is a skipped column, not a silent JS run. */
export const kupNative: Contender = {
  ...kupContender(
    KUP_NATIVE,
    'dist/bin/kup.js',
    "one Node process (kup run --source file: --no-iptables) with --relay native: bytes moved by the addon's epoll thread",
    ['--relay', 'native'],
  ),
  unavailable: nativeRelayMissing,
};
/** The TypeScript relay (splice.ts), side by side with the native one. */
export const kupJs = kupContender(
  KUP_JS,
  'dist/bin/kup.js',
  'one Node process (kup run --source file: --no-iptables) with --relay js: the TypeScript relay (splice.ts)',
  ['--relay', 'js'],
);

export const haproxy: Contender = {
  name: 'haproxy',
  settings: 'mode tcp, nbthread 1 (no UDP in HAProxy community)',
  unavailable: () => (commandExists('haproxy') ? null : 'apt-get install haproxy'),
  async start(b, workDir) {
    const p = await ports(false);
    const cfg = join(workDir, 'haproxy.cfg');
    await writeFile(
      cfg,
      `global
  nbthread 1
  maxconn 9000
defaults
  mode tcp
  timeout connect 5s
  timeout client 300s
  timeout server 300s
listen http
  bind 127.0.0.1:${p.http}
  server s1 127.0.0.1:${b.httpPort}
listen iperf
  bind 127.0.0.1:${p.iperf}
  server s1 127.0.0.1:${b.iperfPort}
`,
    );
    const proc = startProcess('haproxy', ['-db', '-f', cfg]);
    await waitForPort(p.http);
    return { httpPort: p.http, iperfPort: p.iperf, dnsPort: null, pid: proc.pid, stop: () => proc.stop() };
  },
};

export const nginxStream: Contender = {
  name: 'nginx',
  settings: 'stream module, worker_processes 1',
  unavailable: () => (!commandExists('nginx') ? 'apt-get install nginx-light libnginx-mod-stream' : null),
  async start(b, workDir) {
    const p = await ports(b.dnsPort !== null);
    const dir = join(workDir, 'nginx-stream');
    await mkdir(dir, { recursive: true });
    const udp =
      p.dns !== null && b.dnsPort !== null
        ? `  server { listen 127.0.0.1:${p.dns} udp; proxy_pass 127.0.0.1:${b.dnsPort}; proxy_responses 1; proxy_timeout 30s; }\n`
        : '';
    await writeFile(
      join(dir, 'nginx.conf'),
      `load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 19000; }
stream {
  server { listen 127.0.0.1:${p.http}; proxy_pass 127.0.0.1:${b.httpPort}; }
  server { listen 127.0.0.1:${p.iperf}; proxy_pass 127.0.0.1:${b.iperfPort}; }
${udp}}
`,
    );
    const proc = startProcess('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf')]);
    try {
      await waitForPort(p.http);
    } catch (err) {
      await proc.stop();
      throw new Error(`${(err as Error).message}: ${proc.output()}`, { cause: err });
    }
    return { httpPort: p.http, iperfPort: p.iperf, dnsPort: p.dns, pid: proc.pid, stop: () => proc.stop() };
  },
};

export const socat: Contender = {
  name: 'socat',
  settings: 'fork per connection (TCP) / per client (UDP), nodelay',
  unavailable: () => (commandExists('socat') ? null : 'apt-get install socat'),
  async start(b) {
    const p = await ports(b.dnsPort !== null);
    const tcp = (listen: number, to: number): Started =>
      startProcess('socat', [`TCP4-LISTEN:${listen},bind=127.0.0.1,reuseaddr,fork,backlog=4096,nodelay`, `TCP4:127.0.0.1:${to},nodelay`]);
    const procs = [tcp(p.http, b.httpPort), tcp(p.iperf, b.iperfPort)];
    if (p.dns !== null && b.dnsPort !== null) {
      procs.push(startProcess('socat', [`UDP4-LISTEN:${p.dns},bind=127.0.0.1,reuseaddr,fork`, `UDP4:127.0.0.1:${b.dnsPort}`]));
    }
    await waitForPort(p.http);
    await waitForPort(p.iperf);
    return {
      httpPort: p.http,
      iperfPort: p.iperf,
      dnsPort: p.dns,
      // The HTTP listener's tree is what idle connections grow.
      pid: procs[0]!.pid,
      stop: async () => {
        await Promise.all(procs.map((x) => x.stop()));
      },
    };
  },
};

/** Table and interleaving order: the limit, the peers, then the two relays. */
export const CONTENDERS: readonly Contender[] = [direct, haproxy, nginxStream, socat, kupJs, kupNative];
