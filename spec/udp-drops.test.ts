import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import t from 'tap';
import { finished, startKup, waitForOutput } from './support/cli.js';
import { startHarness } from './support/harness.js';
import { udpAsk, udpEchoServer } from './support/net.js';
import { loopbackRunArgs, writeObjectsFile } from './support/kup-process.js';
import { service, slicesFor } from './support/objects.js';

/**
 * UDP datagrams the kernel drops on kup's listener (its receive buffer full
 * while kup is busy) were invisible. Now the buffers are sized by
 * --udp-buffer-size and the kernel's drop count is exported. Checked against
 * what `ss` and /proc/net/udp say about the same socket.
 */

const run = promisify(execFile);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The receive buffer `ss` reports for the UDP socket bound to 127.0.0.1:port (skmem rb). */
async function ssReceiveBuffer(port: number): Promise<number> {
  const { stdout } = await run('ss', ['-H', '-u', '-a', '-n', '-m', 'src', `127.0.0.1:${port}`]);
  const m = /\brb(\d+)/.exec(stdout);
  if (m === null) throw new Error(`no skmem for 127.0.0.1:${port} in: ${stdout}`);
  return Number(m[1]);
}

/** The kernel's drop count for the UDP socket bound to 127.0.0.1:port, read by the test itself. */
async function procDrops(port: number): Promise<number> {
  const text = await readFile('/proc/net/udp', 'utf8');
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === `0100007F:${hexPort}`) return Number(f.at(-1));
  }
  throw new Error(`127.0.0.1:${port} not in /proc/net/udp`);
}

const dnsService = () => service({ name: 'dns', clusterIP: '10.96.0.10', ports: [{ name: 'dns', port: 53, protocol: 'UDP' }] });

t.test('the UDP listener gets the buffer --udp-buffer-size asks for (default 4 MiB, capped by net.core.rmem_max)', async (t) => {
  const rmemMax = Number((await readFile('/proc/sys/net/core/rmem_max', 'utf8')).trim());
  const backend = await udpEchoServer('a');
  t.teardown(() => backend.close());
  for (const [asked, label] of [
    [undefined, 'default'],
    [256 * 1024, '256Ki'],
  ] as const) {
    const h = await startHarness(asked === undefined ? {} : { udpBufferSize: asked });
    await h.set([dnsService()], slicesFor('dns', 'dns', [backend.port], 'UDP'));
    const want = 2 * Math.min(asked ?? 4 * 1024 * 1024, rmemMax); // Linux doubles what it grants
    t.equal(await ssReceiveBuffer(h.port('default/dns:dns/UDP')), want, `${label}: ss shows rb${want}`);
    t.ok(String(await udpAsk(h.port('default/dns:dns/UDP'), 'q')).endsWith(':q'), `${label}: still relays`);
    await h.close();
  }
});

t.test('a burst the paused listener cannot hold: kup_udp_receive_drops_total and /status equal the kernel count', async (t) => {
  const backend = await udpEchoServer('a');
  t.teardown(() => backend.close());
  const file = await writeObjectsFile(t, [dnsService(), ...slicesFor('dns', 'dns', [backend.port], 'UDP')]);
  const child = startKup(loopbackRunArgs(file, {}, ['--udp-buffer-size', '64Ki']));
  t.teardown(() => void child.kill('SIGKILL'));
  const done = finished(child, 60_000);
  const port = Number((await waitForOutput(child, /"proxyPort":(\d+)/))[1]);
  const base = (await waitForOutput(child, /"dashboard":"(http:[^"]+)\/"/))[1]!;
  t.equal(await ssReceiveBuffer(port), 2 * 64 * 1024, 'the flag sized the listener (ss: rb131072)');

  // Pause kup (as a long GC pause or a busy loop would) and send more than 64 KiB.
  const SENT = 3000;
  const client = dgram.createSocket('udp4');
  t.teardown(() => client.close());
  client.on('message', () => undefined);
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', () => r()));
  child.kill('SIGSTOP');
  const payload = Buffer.alloc(1000, 0x61);
  for (let i = 0; i < SENT; i++) {
    await new Promise<void>((r) => client.send(payload, port, '127.0.0.1', () => r()));
  }
  const kernel = await procDrops(port);
  child.kill('SIGCONT');
  t.ok(kernel > 0, `the kernel dropped ${kernel} of ${SENT} datagrams on the listener`);
  await sleep(1000);

  const metrics = await (await fetch(`${base}/metrics`)).text();
  const m = /^kup_udp_receive_drops_total\{[^}]*service="dns"[^}]*\} (\d+)$/m.exec(metrics);
  t.ok(m !== null, 'kup_udp_receive_drops_total is exported for the port');
  t.equal(Number(m?.[1]), kernel, 'and equals the kernel count (/proc/net/udp drops)');
  const status = (await (await fetch(`${base}/status`)).json()) as { services: { stats: { receiveDrops: number; datagramsIn: number } }[] };
  const stats = status.services[0]!.stats;
  t.equal(stats.receiveDrops, kernel, '/status shows the same count');
  t.equal(stats.datagramsIn + stats.receiveDrops, SENT, 'every datagram sent is either relayed or counted as dropped');

  child.kill('SIGTERM');
  t.equal((await done).code, 0, 'exit 0');
});
