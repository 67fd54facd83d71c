import dgram from 'node:dgram';
import t from 'tap';
import { UdpProxy } from '../lib/dataplane/udp-proxy.js';
import { startHarness } from './support/harness.js';
import { udpAsk, udpEchoServer } from './support/net.js';
import { endpointSlice, service, slicesFor } from './support/objects.js';
import { testRelayChoice } from './support/relay.js';

const KEY = 'default/dns:dns/UDP';
const dnsService = () => service({ name: 'dns', clusterIP: '10.96.0.10', ports: [{ name: 'dns', port: 53, protocol: 'UDP' }] });

t.test('UDP round trip through the proxy, round-robin over sessions', async (t) => {
  const backends = await Promise.all(['a', 'b'].map((n) => udpEchoServer(n)));
  const h = await startHarness();
  t.teardown(async () => {
    await h.close();
    await Promise.all(backends.map((b) => b.close()));
  });
  await h.set(
    [dnsService()],
    slicesFor(
      'dns',
      'dns',
      backends.map((b) => b.port),
      'UDP',
    ),
  );
  const port = h.port(KEY);
  const replies: string[] = [];
  for (let i = 0; i < 4; i++) replies.push(String(await udpAsk(port, `q${i}`)));
  const who = replies.map((r) => r.split(':')[0]);
  t.same(
    replies.map((r) => r.split(':')[1]),
    ['q0', 'q1', 'q2', 'q3'],
    'every query answered',
  );
  t.ok(who[0] !== who[1] && who[0] === who[2] && who[1] === who[3], `new clients alternate: ${who.join(',')}`);

  // One client keeps its session: all its datagrams go to one endpoint, replies come from the service port.
  const client = dgram.createSocket('udp4');
  t.teardown(() => client.close());
  const seenFrom = new Set<number>();
  client.on('message', (_m, r) => seenFrom.add(r.port));
  const same: string[] = [];
  for (let i = 0; i < 5; i++) same.push(String(await udpAsk(port, 'x', 2000, client)).split(':')[0]!);
  t.equal(new Set(same).size, 1, 'a session sticks to its endpoint');
  t.same([...seenFrom], [port], 'replies come from the service port the client sent to');
  t.equal(h.entry(KEY).internal.stats.accepted, 5, 'five sessions');
  const listener = h.entry(KEY).internal;
  const stats = listener.stats;
  t.equal(
    listener instanceof UdpProxy ? listener.relay : 'not UDP',
    testRelayChoice(),
    `the ${testRelayChoice()} relay moved the datagrams`,
  );
  t.equal(stats.datagramsIn, 9, 'nine datagrams in');
  t.equal(stats.datagramsOut, 9, 'nine replies out');
  t.equal(stats.datagramsDropped, 0, 'none dropped');
});

t.test('a 60 KiB datagram passes intact both ways', async (t) => {
  const backend = await udpEchoServer('big');
  const h = await startHarness();
  t.teardown(async () => {
    await h.close();
    await backend.close();
  });
  await h.set([dnsService()], slicesFor('dns', 'dns', [backend.port], 'UDP'));
  const payload = Buffer.alloc(60 * 1024);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7) & 0xff;
  const reply = await udpAsk(h.port(KEY), payload);
  t.ok(reply !== null, 'a reply came');
  t.equal(reply!.length, payload.length + 4, 'no truncation (the legacy proxier cut at 4 KiB)');
  t.ok(reply!.subarray(4).equals(payload), 'byte-exact');
});

t.test('idle sessions expire after --udp-timeout', async (t) => {
  const backend = await udpEchoServer('a');
  const h = await startHarness({ udpTimeoutMs: 300 });
  t.teardown(async () => {
    await h.close();
    await backend.close();
  });
  await h.set([dnsService()], slicesFor('dns', 'dns', [backend.port], 'UDP'));
  const port = h.port(KEY);
  const client = dgram.createSocket('udp4');
  t.teardown(() => client.close());
  t.equal(String(await udpAsk(port, '1', 2000, client)), 'a:1');
  t.equal(h.entry(KEY).internal.connections, 1, 'one live session');
  // Activity within the timeout keeps the session.
  await sleep(150);
  t.equal(String(await udpAsk(port, '2', 2000, client)), 'a:2');
  await sleep(150);
  t.equal(h.entry(KEY).internal.connections, 1, 'still alive while in use');
  await sleep(600);
  t.equal(h.entry(KEY).internal.connections, 0, 'expired once idle');
  t.equal(h.entry(KEY).internal.stats.active, 0);
  t.equal(String(await udpAsk(port, '3', 2000, client)), 'a:3', 'a new session serves the client again');
  t.equal(backend.peers.size, 2, 'the backend saw a second relay socket for the new session');
});

t.test('zero endpoints: UDP datagrams are dropped and counted', async (t) => {
  const h = await startHarness();
  t.teardown(() => h.close());
  await h.set([dnsService()], []);
  const reply = await udpAsk(h.port(KEY), 'hello', 300);
  t.equal(reply, null, 'no reply');
  t.equal(h.entry(KEY).internal.stats.datagramsDropped, 1);
  t.equal(h.entry(KEY).internal.stats.noEndpoints, 1);
});

t.test('the session cap evicts the oldest session', async (t) => {
  const backend = await udpEchoServer('a');
  const h = await startHarness({ udpMaxSessions: 3 });
  t.teardown(async () => {
    await h.close();
    await backend.close();
  });
  await h.set([dnsService()], slicesFor('dns', 'dns', [backend.port], 'UDP'));
  const port = h.port(KEY);
  for (let i = 0; i < 5; i++) t.equal(String(await udpAsk(port, `${i}`)), `a:${i}`);
  t.equal(h.entry(KEY).internal.connections, 3, 'never more than the cap');
  t.equal(h.entry(KEY).internal.stats.sessionsEvicted, 2);
});

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A client socket bound once: every datagram leaves from the same source port, as a resolver that reuses its port. */
async function fixedPortClient(t: { teardown(fn: () => void): void }): Promise<dgram.Socket> {
  const client = dgram.createSocket('udp4');
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', () => r()));
  t.teardown(() => client.close());
  return client;
}

t.test('a session whose endpoint is removed ends at once; the same client port is answered by another endpoint next', async (t) => {
  const a = await udpEchoServer('a');
  const b = await udpEchoServer('b');
  const h = await startHarness();
  t.teardown(async () => {
    await h.close();
    await a.close();
    await b.close();
  });
  await h.set([dnsService()], slicesFor('dns', 'dns', [a.port], 'UDP'));
  const port = h.port(KEY);
  const client = await fixedPortClient(t);
  t.equal(String(await udpAsk(port, 'q1', 2000, client)), 'a:q1', 'the session goes to A');
  t.equal(String(await udpAsk(port, 'q2', 2000, client)), 'a:q2');

  // A leaves the endpoints (a rollout replaced it) but still answers: only kup can steer the client away.
  await h.set([dnsService()], slicesFor('dns', 'dns', [b.port], 'UDP'));
  const l = h.entry(KEY).internal;
  t.equal(l.connections, 0, 'the session to A ended with the update, before any datagram');
  t.equal(l.stats.active, 0, 'live sessions gauge');
  t.equal(l.stats.sessionsEndpointGone, 1, 'counted as closed because its endpoint left');
  t.ok(
    h.log.messages('info').some((m) => /closed UDP sessions whose endpoint left/.test(m)),
    'and logged once for the update',
  );

  t.equal(String(await udpAsk(port, 'q3', 2000, client)), 'b:q3', 'the very next datagram from the same port is answered by B');
  t.equal(String(await udpAsk(port, 'q4', 2000, client)), 'b:q4');
  t.equal(l.connections, 1, 'one new session');
  t.equal(l.stats.accepted, 2, 'two sessions in all');
  t.equal(a.peers.size, 1, 'A saw one relay socket');
  t.equal(b.peers.size, 1, 'B saw one relay socket');
});

t.test('a session whose endpoint stops serving (not ready) ends at once; the dead pod gets nothing more', async (t) => {
  const a = await udpEchoServer('a');
  const b = await udpEchoServer('b');
  const h = await startHarness();
  t.teardown(async () => {
    await h.close();
    await b.close();
  });
  const slices = (aReady: boolean) => [
    endpointSlice({
      service: 'dns',
      name: 'dns-a',
      ports: [{ name: 'dns', port: a.port, protocol: 'UDP' }],
      endpoints: [{ ip: '127.0.0.1', ready: aReady, serving: aReady }],
    }),
    endpointSlice({
      service: 'dns',
      name: 'dns-b',
      ports: [{ name: 'dns', port: b.port, protocol: 'UDP' }],
      endpoints: [{ ip: '127.0.0.1' }],
    }),
  ];
  await h.set([dnsService()], slices(true));
  const port = h.port(KEY);
  // Round-robin: the first client takes one endpoint; find a client port whose session is on A.
  let client = await fixedPortClient(t);
  if (String(await udpAsk(port, 'q0', 2000, client)) !== 'a:q0') {
    client = await fixedPortClient(t);
    t.equal(String(await udpAsk(port, 'q0', 2000, client)), 'a:q0', 'the next client goes to A');
  }
  const l = h.entry(KEY).internal;
  const before = l.connections;

  // The pod stops serving and then dies.
  await h.set([dnsService()], slices(false));
  await a.close();
  t.equal(l.connections, before - 1, "the session to A ended; B's sessions were left alone");
  t.equal(l.stats.sessionsEndpointGone, 1);
  t.equal(String(await udpAsk(port, 'q1', 2000, client)), 'b:q1', 'the next datagram from the same port is answered by B');
});

t.test("a new client's burst is answered whole: nothing is dropped while its session is being set up", async (t) => {
  // An echo endpoint and a client with room for the whole burst, so only kup could lose a datagram.
  const BIG = 4 * 1024 * 1024;
  const backend = dgram.createSocket({ type: 'udp4', recvBufferSize: BIG, sendBufferSize: BIG });
  backend.on('message', (m, r) => backend.send(m, r.port, r.address));
  await new Promise<void>((r) => backend.bind(0, '127.0.0.1', () => r()));
  const h = await startHarness();
  t.teardown(async () => {
    await h.close();
    await new Promise<void>((r) => backend.close(() => r()));
  });
  await h.set([dnsService()], slicesFor('dns', 'dns', [backend.address().port], 'UDP'));
  const port = h.port(KEY);
  const client = dgram.createSocket({ type: 'udp4', recvBufferSize: BIG, sendBufferSize: BIG });
  await new Promise<void>((r) => client.bind(0, '127.0.0.1', () => r()));
  t.teardown(() => client.close());
  const N = 500;
  const got = new Set<string>();
  const all = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 3000);
    client.on('message', (m) => {
      got.add(String(m));
      if (got.size === N) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  // All at once, before the session exists: the first datagram opens it, the rest wait for it.
  for (let i = 0; i < N; i++) client.send(`burst-${i}`, port, '127.0.0.1');
  await all;
  t.equal(got.size, N, `all ${N} datagrams of the burst were answered`);
  t.equal(h.entry(KEY).internal.stats.accepted, 1, 'one session');
  t.equal(h.entry(KEY).internal.stats.datagramsDropped, 0, 'none dropped');
});

t.test('an endpoint that answers with ICMP port-unreachable: its session ends and counts as a dial failure', async (t) => {
  // A UDP port bound and released: datagrams to it are refused by the kernel.
  const gone = dgram.createSocket('udp4');
  await new Promise<void>((r) => gone.bind(0, '127.0.0.1', () => r()));
  const deadUdp = gone.address().port;
  await new Promise<void>((r) => gone.close(() => r()));
  const h = await startHarness();
  t.teardown(() => h.close());
  await h.set([dnsService()], slicesFor('dns', 'dns', [deadUdp], 'UDP'));
  const port = h.port(KEY);
  const client = await fixedPortClient(t);
  t.equal(await udpAsk(port, 'q1', 300, client), null, 'no answer from a closed port');
  const l = h.entry(KEY).internal;
  for (let i = 0; i < 40 && l.stats.dialFailures === 0; i++) await sleep(25);
  t.equal(l.stats.dialFailures, 1, 'the refusal counted as a dial failure');
  t.equal(l.connections, 0, 'the session ended at once, not after --udp-timeout');
  t.equal(l.stats.active, 0);
});
