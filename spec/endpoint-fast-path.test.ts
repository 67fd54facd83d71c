import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { connect, createServer, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import t from 'tap';
import { ApiServerDouble } from './support/apiserver-double.js';
import { KUP } from './support/cli.js';
import { endpointSlice, service } from './support/objects.js';
import { waitFor } from './support/wait.js';

/**
 * Endpoint changes reach traffic without waiting on --min-sync-period: kup
 * runs against the API server double with a 10 s period, a sync spends the
 * burst, and a slice change right after must be picked within tens of ms
 * (before, it waited out the period: ~10 s).
 */

const IPS = ['127.0.0.2', '127.0.0.3', '127.0.0.4'];

/** Backends on several loopback addresses, one port, each answering with its address. */
async function backends(): Promise<{ port: number; close(): Promise<void> }> {
  const servers: Server[] = [];
  let port = 0;
  for (const ip of IPS) {
    const s = createServer((c) => c.end(`${ip}\n`));
    await new Promise<void>((r) => s.listen(port, ip, r));
    port = (s.address() as AddressInfo).port;
    servers.push(s);
  }
  return { port, close: async () => void (await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))) };
}

/** One connection's answer, or the error code when refused or reset. */
function request(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let data = '';
    const timer = setTimeout(() => {
      s.destroy();
      resolve('timeout');
    }, 3000);
    s.on('data', (d: Buffer) => (data += d.toString()));
    s.on('end', () => {
      clearTimeout(timer);
      resolve(data.trim() || 'closed');
    });
    s.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve(err.code ?? 'error');
    });
  });
}

/** Probes until `want` answers; resolves with the ms it took. */
async function until(port: number, want: string, limitMs: number): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < limitMs) {
    if ((await request(port)) === want) return performance.now() - t0;
    await new Promise((r) => setTimeout(r, 2));
  }
  return Infinity;
}

t.test('a slice change right after a sync is picked within tens of ms, not after --min-sync-period', async (t) => {
  const api = new ApiServerDouble();
  await api.start();
  t.teardown(() => api.stop());
  const dir = await mkdtemp(join(tmpdir(), 'kup-fast-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const kubeconfig = join(dir, 'kubeconfig');
  await api.writeKubeconfig(kubeconfig);
  const be = await backends();
  t.teardown(() => be.close());
  const slice = (ips: string[]) =>
    endpointSlice({ service: 'web', endpoints: ips.map((ip) => ({ ip, nodeName: 'node-a' })), ports: [{ name: 'http', port: be.port }] });
  api.upsert(service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80, targetPort: 'http' }] }));
  api.upsert(slice([IPS[0]!]));

  const kup: ChildProcess = spawn(
    process.execPath,
    [
      KUP,
      'run',
      '--kubeconfig',
      kubeconfig,
      '--no-iptables',
      '--hostname-override',
      'node-a',
      '--bind-address',
      '127.0.0.1',
      '--min-sync-period',
      '10s',
      '--healthz-bind-address',
      '',
      '--metrics-bind-address',
      '',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  t.teardown(async () => {
    if (kup.exitCode === null) {
      kup.kill('SIGTERM');
      await new Promise((r) => kup.once('exit', r));
    }
  });
  const raw: string[] = [];
  let port: number | undefined;
  for (const stream of [kup.stdout!, kup.stderr!]) {
    createInterface(stream).on('line', (line) => {
      raw.push(line);
      const m = /"msg":"opened proxy port"/.test(line) ? /"proxyPort":(\d+)/.exec(line) : null;
      if (m !== null) port = Number(m[1]);
    });
  }
  await waitFor('the web listener', () => port !== undefined, 20_000).catch((err: Error) => {
    throw new Error(`${err.message}\n${raw.join('\n')}`);
  });
  t.equal(await request(port!), IPS[0], 'the first endpoint serves');

  // The start-up sync and this change spend the burst of two: the period's window is now closed.
  api.upsert(slice([IPS[1]!]));
  t.ok((await until(port!, IPS[1]!, 5000)) < 5000, 'the second endpoint took over');

  api.upsert(slice([IPS[2]!]));
  const ms = await until(port!, IPS[2]!, 5000);
  t.comment(`change to traffic inside the min-sync-period window: ${ms.toFixed(1)} ms`);
  t.ok(ms < 250, `picked in ${ms.toFixed(1)} ms (under 250 ms), not after the 10 s period`);
  t.equal(await request(port!), IPS[2], 'and only it serves');

  api.upsert(slice([]));
  let answer = '';
  const t0 = performance.now();
  while (performance.now() - t0 < 1000) {
    answer = await request(port!);
    if (!IPS.includes(answer)) break;
  }
  t.match(
    answer,
    /^(ECONNRESET|ECONNREFUSED|closed)$/,
    'the last endpoint gone: new connections are reset at once (rules say REJECT later)',
  );
});
