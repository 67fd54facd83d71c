import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort, sleep, startProcess, waitForPort, type Started } from './procs.js';

/** The same backends behind every contender: HTTP (nginx), TCP bulk (iperf3), DNS (dnsmasq). */
export interface Backends {
  readonly httpPort: number;
  readonly iperfPort: number;
  /** null when dnsmasq is not installed. */
  readonly dnsPort: number | null;
  /** Name the DNS backend answers for, and the dnsperf query file. */
  readonly dnsQueryFile: string;
  stop(): Promise<void>;
}

/** One nginx worker serving a 3-byte body; keeps idle connections for 5 minutes. */
function backendNginxConf(dir: string, port: number): string {
  return `worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 19000; }
http {
  access_log off;
  keepalive_timeout 300s;
  keepalive_requests 100000000;
  client_header_timeout 300s;
  server {
    listen 127.0.0.1:${port} backlog=4096;
    location / { return 200 "ok\\n"; }
  }
}
`;
}

export async function startBackends(workDir: string, withDns: boolean): Promise<Backends> {
  const dir = join(workDir, 'backend-nginx');
  await mkdir(dir, { recursive: true });
  const procs: Started[] = [];
  try {
    const httpPort = await freePort();
    await writeFile(join(dir, 'nginx.conf'), backendNginxConf(dir, httpPort));
    procs.push(startProcess('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf')]));
    await waitForPort(httpPort);

    const iperfPort = await freePort();
    procs.push(startProcess('iperf3', ['-s', '-B', '127.0.0.1', '-p', String(iperfPort)]));
    await waitForPort(iperfPort);

    let dnsPort: number | null = null;
    const dnsQueryFile = join(workDir, 'queries.txt');
    await writeFile(dnsQueryFile, 'bench.test A\n');
    if (withDns) {
      // dnsmasq also binds TCP on its port; a port free for UDP may be taken for TCP: try a few.
      for (let attempt = 0; attempt < 5 && dnsPort === null; attempt++) {
        const port = await freePort(true);
        const p = startProcess('dnsmasq', [
          '--keep-in-foreground',
          '--conf-file=/dev/null',
          '--pid-file',
          `--port=${port}`,
          '--listen-address=127.0.0.1',
          '--bind-interfaces',
          '--no-resolv',
          '--no-hosts',
          '--address=/bench.test/10.0.0.1',
          '--user=root',
          '--dns-forward-max=10000',
        ]);
        await sleep(300);
        if (p.child.exitCode === null) {
          procs.push(p);
          dnsPort = port;
        } else await p.stop();
      }
      if (dnsPort === null) throw new Error('dnsmasq would not start');
    }
    return {
      httpPort,
      iperfPort,
      dnsPort,
      dnsQueryFile,
      async stop() {
        await Promise.all(procs.map((p) => p.stop()));
      },
    };
  } catch (err) {
    await Promise.all(procs.map((p) => p.stop()));
    throw err;
  }
}
