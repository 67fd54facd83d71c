import t from 'tap';
import type { StatusDocument } from '../lib/admin/status.js';
import { freePort, LOOPBACK, startCluster } from './support/admin-fixture.js';
import { runKup } from './support/cli.js';

t.test('kup status and kup explain against a running proxy', async (t) => {
  const c = await startCluster(t.testdir());
  t.teardown(() => c.close());
  const port = (key: string): number => c.runtime.proxier.get(key as never)?.internal.port ?? -1;
  const ext = (key: string): number => c.runtime.proxier.get(key as never)?.external?.port ?? -1;

  const st = await runKup(['status', '--server', c.metricsUrl]);
  t.equal(st.code, 0, st.stderr);
  const lines = st.stdout.split('\n');
  t.match(
    lines[0],
    /^node node-a, userspace mode, source file synced, healthy; 4 service ports, 5\/7 endpoints ready, 0 active connections$/,
  );
  t.match(lines[2], /^SERVICE\s+TYPE\s+VIPS\s+PROXY PORT\s+ENDPOINTS\s+ACTIVE$/);
  const row = (svc: string): string => lines.find((l) => l.startsWith(`${svc} `)) ?? '';
  t.match(
    row('shop/api:http/TCP'),
    new RegExp(`^shop/api:http/TCP\\s+ClusterIP\\s+10\\.96\\.0\\.10:80\\s+${port('shop/api:http/TCP')}\\s+2/3\\s+0$`),
  );
  t.match(
    row('shop/dns:53/UDP'),
    new RegExp(`^shop/dns:53/UDP\\s+NodePort\\s+10\\.96\\.0\\.53:53,\\*:30053\\s+${port('shop/dns:53/UDP')}\\s+1/1\\s+0$`),
  );
  t.match(
    row('shop/lb:web/TCP'),
    new RegExp(
      `^shop/lb:web/TCP\\s+LoadBalancer\\s+10\\.96\\.0\\.20:80,192\\.0\\.2\\.10:80,198\\.51\\.100\\.7:80,\\*:30080\\s+${port('shop/lb:web/TCP')},${ext('shop/lb:web/TCP')}\\s+2/2\\s+0$`,
    ),
  );

  const js = await runKup(['status', '--server', c.metricsUrl, '--json']);
  t.equal(js.code, 0);
  t.equal((JSON.parse(js.stdout) as StatusDocument).services.length, 4);

  const cip = await runKup(['explain', '10.96.0.10:80', '--server', c.metricsUrl]);
  t.equal(cip.code, 0, cip.stderr);
  t.match(cip.stdout, /^10\.96\.0\.10:80 -> shop\/api:http\/TCP \(ClusterIP\)$/m);
  t.match(
    cip.stdout,
    /rule {6}KUP-PORTALS-CONTAINER \(packets from pods\) and KUP-PORTALS-HOST \(packets from this node\): -d 10\.96\.0\.10\/32 -p tcp -m tcp --dport 80/,
  );
  t.match(cip.stdout, new RegExp(`listener  127\\.0\\.0\\.1:${port('shop/api:http/TCP')}/TCP`));
  t.match(cip.stdout, /strategy {2}round-robin, no session affinity, internalTrafficPolicy Cluster/);
  t.match(cip.stdout, /endpoints 2 in play of 3 listed/);
  t.match(cip.stdout, new RegExp(`not in play: 127\\.0\\.0\\.1:${c.ports.dead}`));
  const next = c.runtime.proxier.get('shop/api:http/TCP' as never)?.internal.balancer.peek('')?.id;
  t.match(cip.stdout, new RegExp(`next      ${next?.replace(/\./g, '\\.')} \\(the next connection from a new client goes here\\)`));

  const lb = await runKup(['explain', '198.51.100.7:80/tcp', '--server', c.metricsUrl]);
  t.equal(lb.code, 0);
  t.match(lb.stdout, /-> shop\/lb:web\/TCP \(LoadBalancer IP\)/);
  t.match(
    lb.stdout,
    new RegExp(`listener  127\\.0\\.0\\.1:${ext('shop/lb:web/TCP')}/TCP \\(the service port's listener for external traffic\\)`),
  );
  t.match(lb.stdout, /externalTrafficPolicy Local/);
  t.match(lb.stdout, /endpoints 1 in play of 2 listed/);
  t.match(lb.stdout, new RegExp(`next      127\\.0\\.0\\.1:${c.ports.echoA} `), 'the local endpoint');

  const eip = await runKup(['explain', '192.0.2.10:80', '--server', c.metricsUrl]);
  t.match(eip.stdout, /-> shop\/lb:web\/TCP \(externalIP\)/);

  const np = await runKup(['explain', '192.0.2.99:30053/udp', '--server', c.metricsUrl]);
  t.equal(np.code, 0);
  t.match(np.stdout, /-> shop\/dns:53\/UDP \(NodePort\)/);
  t.match(np.stdout, /KUP-NODEPORT-CONTAINER .* -p udp -m udp --dport 30053 -m addrtype --dst-type LOCAL/);

  const direct = await runKup(['explain', `${LOOPBACK}:${port('shop/api:http/TCP')}`, '--server', c.metricsUrl]);
  t.equal(direct.code, 0);
  t.match(direct.stdout, /\(proxy port\)\n {2}rule {6}none: addressed straight to the listener/);

  const wrongPort = await runKup(['explain', '10.96.0.10:81', '--server', c.metricsUrl]);
  t.equal(wrongPort.code, 1);
  t.match(
    wrongPort.stdout,
    /^10\.96\.0\.10:81: nothing matches\n {2}10\.96\.0\.10 belongs to shop\/api, which has no port 81 \(it has 80\/TCP\)/,
  );
  const wrongProto = await runKup(['explain', '10.96.0.10:80/udp', '--server', c.metricsUrl]);
  t.equal(wrongProto.code, 1);
  const nothing = await runKup(['explain', '203.0.113.9:80', '--server', c.metricsUrl]);
  t.equal(nothing.code, 1);
  t.match(nothing.stdout, /no service has 203\.0\.113\.9:80 as a ClusterIP, externalIP, LoadBalancer IP or NodePort/);
});

t.test('kup explain --source works without a running proxy', async (t) => {
  const c = await startCluster(t.testdir());
  // Only the file is needed; the proxy is stopped before explaining.
  await c.close();
  const r = await runKup(['explain', '10.96.0.53:53/udp', '--source', `file:${c.file}`, '--hostname-override', 'node-a']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /-> shop\/dns:53\/UDP \(ClusterIP\)/);
  t.match(r.stdout, /listener {2}not running: kup picks the proxy port when it starts/);
  t.match(r.stdout, new RegExp(`next      127\\.0\\.0\\.1:${c.ports.udp} `));
  const lc = await runKup([
    'explain',
    '10.96.0.10:80',
    '--source',
    `file:${c.file}`,
    '--hostname-override',
    'node-a',
    '--lb-strategy',
    'least-connections',
  ]);
  t.match(lc.stdout, /strategy {2}least-connections/);
  const missing = await runKup(['explain', '10.96.0.10:80', '--source', 'file:/nonexistent/cluster.yaml']);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /^kup: cannot read \/nonexistent\/cluster\.yaml/);
});

t.test('kup explain and kup status: mistakes get one line and a non-zero exit', async (t) => {
  const bad = await runKup(['explain', 'not-an-address']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /^kup: "not-an-address" is not IP:PORT\[\/tcp\|udp\]/);
  const both = await runKup(['explain', '10.0.0.1:80', '--server', 'http://127.0.0.1:1', '--source', 'file:x']);
  t.equal(both.code, 2);
  const port = await freePort();
  const down = await runKup(['status', '--server', `http://${LOOPBACK}:${port}`]);
  t.equal(down.code, 1);
  t.match(down.stderr, new RegExp(`^kup: cannot reach kup at http://127\\.0\\.0\\.1:${port}: connection refused`));
  t.notMatch(down.stderr, /\n\s+at /, 'no stack trace');
});
