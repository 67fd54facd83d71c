/**
 * Dual-stack, one family per virtual IP (issue 13 item 4): a `::` listener
 * hears IPv4 (as ::ffff:a.b.c.d) and IPv6 clients, and each must reach only
 * endpoints of its own family, as kube-proxy's per-family proxiers do. Real
 * sockets on loopback: IPv4 backends on 127.0.0.2 and 127.0.0.3, an IPv6 one
 * on ::1, each answering with its own address.
 */
import dgram from 'node:dgram';
import net, { type AddressInfo } from 'node:net';
import t, { type Test } from 'tap';
import { startHarness } from './support/harness.js';
import { collect } from './support/net.js';
import { endpointSlice, service } from './support/objects.js';

const TCP_KEY = 'default/dual:http/TCP';
const UDP_KEY = 'default/dual:dns/UDP';

/** A TCP server on `host` that answers each connection with its own address and closes. */
async function selfNamingServer(t: Test, host: string, port = 0): Promise<number> {
  const server = net.createServer((s) => {
    s.on('error', () => {});
    s.end(`${s.localAddress}\n`);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as AddressInfo).port;
}

/** A UDP server on `host` that answers each datagram with its own address. */
async function selfNamingUdp(t: Test, host: string, port = 0): Promise<number> {
  const sock = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
  sock.on('message', (_m, r) => sock.send(host, r.port, r.address));
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(port, host, () => resolve());
  });
  t.teardown(() => new Promise<void>((r) => sock.close(() => r())));
  return sock.address().port;
}

/** Who answered a TCP connection to host:port, or how it failed (ECONNRESET...). */
async function askTcp(host: string, port: number): Promise<string> {
  const r = await collect(net.connect({ host, port, allowHalfOpen: true }), 5000);
  const text = r.data.toString().trim();
  return text !== '' ? text : r.ended;
}

/** Who answered one datagram from a fresh socket of the family of `host` (a fresh session each time), or "no reply". */
async function askUdp(host: string, port: number): Promise<string> {
  const sock = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
  try {
    return await new Promise<string>((resolve) => {
      const timer = setTimeout(() => resolve('no reply'), 1500);
      sock.on('message', (m) => {
        clearTimeout(timer);
        resolve(m.toString());
      });
      sock.on('error', () => {
        clearTimeout(timer);
        resolve('no reply');
      });
      sock.send('q', port, host);
    });
  } finally {
    sock.close();
  }
}

function tally(answers: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const a of answers) out[a] = (out[a] ?? 0) + 1;
  return out;
}

const dualService = (ports: { name: string; port: number; protocol?: 'TCP' | 'UDP' }[]) =>
  service({ name: 'dual', clusterIPs: ['10.96.0.10', 'fd00:96::10'], ports });

t.test('TCP on a :: listener: 127.0.0.1 reaches only the IPv4 endpoints, ::1 only the IPv6 one; round-robin per family', async (t) => {
  const p4 = await selfNamingServer(t, '127.0.0.2');
  await selfNamingServer(t, '127.0.0.3', p4);
  const p6 = await selfNamingServer(t, '::1');
  const h = await startHarness({ bindAddress: '0.0.0.0' });
  t.teardown(() => h.close());
  await h.set(
    [dualService([{ name: 'http', port: 80 }])],
    [
      endpointSlice({
        service: 'dual',
        addressType: 'IPv4',
        endpoints: [{ ip: '127.0.0.2' }, { ip: '127.0.0.3' }],
        ports: [{ name: 'http', port: p4 }],
      }),
      endpointSlice({ service: 'dual', addressType: 'IPv6', endpoints: [{ ip: '::1' }], ports: [{ name: 'http', port: p6 }] }),
    ],
  );
  const port = h.port(TCP_KEY);
  // Interleaved, so a shared rotation would hand IPv4 clients the IPv6 endpoint and break the alternation.
  const v4: string[] = [];
  const v6: string[] = [];
  for (let i = 0; i < 6; i++) {
    v4.push(await askTcp('127.0.0.1', port));
    v6.push(await askTcp('::1', port));
  }
  t.same(v4, ['127.0.0.2', '127.0.0.3', '127.0.0.2', '127.0.0.3', '127.0.0.2', '127.0.0.3'], 'IPv4 clients: IPv4 endpoints only, in turn');
  t.same(tally(v6), { '::1': 6 }, 'IPv6 clients: the IPv6 endpoint only');
});

t.test('TCP: a family without endpoints is refused while the other is served', async (t) => {
  const p4 = await selfNamingServer(t, '127.0.0.2');
  const h = await startHarness({ bindAddress: '0.0.0.0' });
  t.teardown(() => h.close());
  await h.set(
    [dualService([{ name: 'http', port: 80 }])],
    [endpointSlice({ service: 'dual', addressType: 'IPv4', endpoints: [{ ip: '127.0.0.2' }], ports: [{ name: 'http', port: p4 }] })],
  );
  const port = h.port(TCP_KEY);
  t.equal(await askTcp('127.0.0.1', port), '127.0.0.2', 'IPv4 served');
  t.equal(await askTcp('::1', port), 'ECONNRESET', 'IPv6 reset at once, as a service without endpoints');
  t.equal(h.entry(TCP_KEY).internal.stats.noEndpoints, 1, 'counted as no endpoints');
});

t.test('UDP on a :: listener: each session picks among its own family only', async (t) => {
  const p4 = await selfNamingUdp(t, '127.0.0.2');
  await selfNamingUdp(t, '127.0.0.3', p4);
  const p6 = await selfNamingUdp(t, '::1');
  const h = await startHarness({ bindAddress: '0.0.0.0' });
  t.teardown(() => h.close());
  await h.set(
    [dualService([{ name: 'dns', port: 53, protocol: 'UDP' }])],
    [
      endpointSlice({
        service: 'dual',
        addressType: 'IPv4',
        endpoints: [{ ip: '127.0.0.2' }, { ip: '127.0.0.3' }],
        ports: [{ name: 'dns', port: p4, protocol: 'UDP' }],
      }),
      endpointSlice({
        service: 'dual',
        addressType: 'IPv6',
        endpoints: [{ ip: '::1' }],
        ports: [{ name: 'dns', port: p6, protocol: 'UDP' }],
      }),
    ],
  );
  const port = h.port(UDP_KEY);
  const v4: string[] = [];
  const v6: string[] = [];
  for (let i = 0; i < 4; i++) {
    v4.push(await askUdp('127.0.0.1', port));
    v6.push(await askUdp('::1', port));
  }
  t.same(v4, ['127.0.0.2', '127.0.0.3', '127.0.0.2', '127.0.0.3'], 'IPv4 sessions: IPv4 endpoints only, in turn');
  t.same(tally(v6), { '::1': 4 }, 'IPv6 sessions: the IPv6 endpoint only');

  // Only IPv6 endpoints left: IPv4 datagrams get no session.
  await h.set(
    [dualService([{ name: 'dns', port: 53, protocol: 'UDP' }])],
    [
      endpointSlice({
        service: 'dual',
        addressType: 'IPv6',
        endpoints: [{ ip: '::1' }],
        ports: [{ name: 'dns', port: p6, protocol: 'UDP' }],
      }),
    ],
  );
  t.equal(await askUdp('127.0.0.1', port), 'no reply', 'IPv4 dropped: no IPv4 endpoint');
  t.equal(await askUdp('::1', port), '::1', 'IPv6 still served');
});
