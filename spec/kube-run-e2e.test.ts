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
 * `kup run --kubeconfig K --no-iptables` as a user runs it, against the API
 * server double, with real traffic to loopback backends. Without iptables the
 * service is reached at its proxy port, learnt from the "opened proxy port" log.
 */

const NODE = process.execPath;
const BACKEND_IPS = ['127.0.0.2', '127.0.0.3', '127.0.0.4'];

interface LogLine {
  msg?: string;
  servicePort?: string;
  proxyPort?: number;
  level?: string;
}

/** TCP backends on several loopback addresses, one port, each answering with its address. */
async function backends(): Promise<{ port: number; close(): Promise<void> }> {
  const first = createServer((s) => s.end(`${BACKEND_IPS[0]}\n`));
  await new Promise<void>((r) => first.listen(0, BACKEND_IPS[0], r));
  const port = (first.address() as AddressInfo).port;
  const servers: Server[] = [first];
  for (const ip of BACKEND_IPS.slice(1)) {
    const s = createServer((c) => c.end(`${ip}\n`));
    await new Promise<void>((r) => s.listen(port, ip, r));
    servers.push(s);
  }
  return { port, close: async () => void (await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))) };
}

/** One connection's whole answer, or the error code when it was refused or reset. */
function request(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    let data = '';
    const timer = setTimeout(() => {
      s.destroy();
      resolve('timeout');
    }, 3000);
    s.on('data', (d) => (data += d.toString()));
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

t.test('kup run follows the API server double and proxies to what it says', async (t) => {
  const api = new ApiServerDouble();
  await api.start();
  t.teardown(() => api.stop());
  const dir = await mkdtemp(join(tmpdir(), 'kup-e2e-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const kubeconfig = join(dir, 'kubeconfig');
  await api.writeKubeconfig(kubeconfig);
  const be = await backends();
  t.teardown(() => be.close());

  const slice = (ips: string[]) =>
    endpointSlice({ service: 'web', endpoints: ips.map((ip) => ({ ip, nodeName: 'node-a' })), ports: [{ name: 'http', port: be.port }] });
  api.upsert(service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80, targetPort: 'http' }] }));
  api.upsert(slice([BACKEND_IPS[0]!]));

  const kup: ChildProcess = spawn(
    NODE,
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
      '0',
      '--healthz-bind-address',
      '',
      '--metrics-bind-address',
      '',
      '--log-level',
      'info',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  t.teardown(async () => {
    if (kup.exitCode === null) {
      kup.kill('SIGTERM');
      await new Promise((r) => kup.once('exit', r));
    }
  });
  const logs: LogLine[] = [];
  const raw: string[] = [];
  for (const stream of [kup.stdout!, kup.stderr!]) {
    createInterface(stream).on('line', (line) => {
      raw.push(line);
      try {
        logs.push(JSON.parse(line) as LogLine);
      } catch {
        // not a log line
      }
    });
  }
  const proxyPort = (sp: string): number | undefined =>
    logs.filter((l) => l.msg === 'opened proxy port' && l.servicePort === sp).at(-1)?.proxyPort;
  const closed = (sp: string): boolean => logs.some((l) => l.msg === 'closed proxy port' && l.servicePort === sp);

  await waitFor('the web listener', () => proxyPort('default/web:http/TCP') !== undefined, 20_000).catch((err: Error) => {
    throw new Error(`${err.message}\n${raw.join('\n')}`);
  });
  const port = proxyPort('default/web:http/TCP')!;

  await t.test('a created service takes traffic, to its named targetPort', async (t) => {
    t.equal(await request(port), BACKEND_IPS[0]);
  });

  const answers = async (n: number): Promise<Set<string>> => {
    const seen = new Set<string>();
    for (let i = 0; i < n; i++) seen.add(await request(port));
    return seen;
  };

  await t.test('endpoints scaled 1 -> 3 -> 0 -> 2', async (t) => {
    api.upsert(slice(BACKEND_IPS));
    let seen = new Set<string>();
    for (let round = 0; round < 20 && seen.size < 3; round++) {
      for (const a of await answers(6)) seen.add(a);
    }
    t.same([...seen].sort(), BACKEND_IPS, 'round robin reaches every endpoint');

    api.upsert(slice([]));
    let answer = '';
    for (let round = 0; round < 50; round++) {
      answer = await request(port);
      if (!BACKEND_IPS.includes(answer)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    t.match(answer, /^(ECONNRESET|ECONNREFUSED|closed)$/, 'no endpoints: the connection is refused, not left hanging');

    api.upsert(slice(BACKEND_IPS.slice(1)));
    for (let round = 0; round < 50; round++) {
      if (BACKEND_IPS.includes(await request(port))) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    seen = await answers(8);
    t.same([...seen].sort(), BACKEND_IPS.slice(1), 'only the two remaining endpoints answer');
  });

  await t.test('API server down for 10 s: traffic keeps flowing, changes made meanwhile apply after', async (t) => {
    // An established connection, held open across the outage by a backend that answers on FIN.
    const hold = createServer({ allowHalfOpen: true }, (c) => {
      c.resume();
      c.on('end', () => c.end('held\n'));
    });
    await new Promise<void>((r) => hold.listen(0, '127.0.0.1', r));
    t.teardown(() => new Promise<void>((r) => hold.close(() => r())));
    api.upsert(service({ name: 'hold', clusterIP: '10.96.0.13', ports: [{ name: 'tcp', port: 80 }] }));
    api.upsert(
      endpointSlice({
        service: 'hold',
        endpoints: [{ ip: '127.0.0.1', nodeName: 'node-a' }],
        ports: [{ name: 'tcp', port: (hold.address() as AddressInfo).port }],
      }),
    );
    await waitFor('the hold listener', () => proxyPort('default/hold:tcp/TCP') !== undefined, 10_000);
    const held = connect(proxyPort('default/hold:tcp/TCP')!, '127.0.0.1');
    const heldReply = new Promise<string>((r) => {
      let d = '';
      held.on('data', (x: Buffer) => (d += x.toString()));
      held.on('close', () => r(d));
      held.on('error', () => {});
    });
    await new Promise((r) => held.once('connect', r));

    await api.stop();
    const during = new Set<string>();
    for (let i = 0; i < 10; i++) {
      for (const a of await answers(3)) during.add(a);
      await new Promise((r) => setTimeout(r, 1000));
    }
    t.same([...during].sort(), BACKEND_IPS.slice(1), 'new connections served from the last known state all along');
    // Changed while the API server is away; applied once it is back.
    api.upsert(slice([BACKEND_IPS[0]!]));
    await api.start();
    held.end();
    t.equal(await heldReply, 'held\n', 'the connection established before the outage still works');
    let after = '';
    for (let round = 0; round < 100 && after !== BACKEND_IPS[0]; round++) {
      after = await request(port);
      if (after !== BACKEND_IPS[0]) await new Promise((r) => setTimeout(r, 200));
    }
    t.equal(after, BACKEND_IPS[0], 'the change made during the outage applied after it');
    t.ok(
      raw.some((l) => /"level":"warn"/.test(l) && /restart|retry|unavailable|ECONNREFUSED|error/i.test(l)),
      'the outage was logged',
    );
    api.upsert(slice(BACKEND_IPS.slice(1)));
  });

  await t.test('a service of another proxy is ignored', async (t) => {
    api.upsert(service({ name: 'other', clusterIP: '10.96.0.11', ports: [{ name: 'http', port: 80 }], proxyName: 'someone-else' }));
    api.upsert(
      endpointSlice({
        service: 'other',
        endpoints: [{ ip: BACKEND_IPS[0]! }],
        ports: [{ name: 'http', port: be.port }],
        labels: { 'service.kubernetes.io/service-proxy-name': 'someone-else' },
      }),
    );
    api.upsert(service({ name: 'marker', clusterIP: '10.96.0.12', ports: [{ name: 'http', port: 80 }] }));
    await waitFor('the later marker service', () => proxyPort('default/marker:http/TCP') !== undefined, 10_000);
    t.equal(proxyPort('default/other:http/TCP'), undefined, 'no listener for it');
  });

  await t.test('a deleted service closes its listener', async (t) => {
    api.remove('Service', 'default', 'web');
    await waitFor('the listener to close', () => closed('default/web:http/TCP'), 10_000);
    t.equal(await request(port), 'ECONNREFUSED', 'nothing listens on the old proxy port');
  });

  t.notOk(
    logs.some((l) => l.level === 'error' || l.level === 'fatal'),
    'no errors logged',
  );
});
