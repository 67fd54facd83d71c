import net from 'node:net';
import { writeFile } from 'node:fs/promises';
import t from 'tap';
import { fixtureYaml, get, LOOPBACK, startCluster } from './support/admin-fixture.js';
import { waitFor } from './support/wait.js';

function refused(port: number): Promise<boolean> {
  return new Promise((r) => {
    const s = net.connect(port, LOOPBACK);
    s.on('connect', () => {
      s.destroy();
      r(false);
    });
    s.on('error', () => r(true));
  });
}

t.test('healthCheckNodePort answers as kube-proxy does, and follows the table', async (t) => {
  const c = await startCluster(t.testdir());
  t.teardown(() => c.close());
  t.same(
    c.runtime.admin.healthCheckPorts(),
    [c.ports.hcLocal, c.ports.hcDraining].sort((a, b) => a - b),
  );

  const ok = await get(`http://${LOOPBACK}:${c.ports.hcLocal}/any/path?x=1`);
  t.equal(ok.status, 200);
  t.equal(ok.headers['content-type'], 'application/json');
  t.equal(ok.headers['x-content-type-options'], 'nosniff');
  t.equal(ok.headers['x-load-balancing-endpoint-weight'], '1');
  t.equal(
    ok.text,
    '{\n\t"service": {\n\t\t"namespace": "shop",\n\t\t"name": "lb"\n\t},\n\t"localEndpoints": 1,\n\t"serviceProxyHealthy": true\n}',
    "kube-proxy's body, byte for byte",
  );

  const draining = await get(`http://${LOOPBACK}:${c.ports.hcDraining}/`);
  t.equal(draining.status, 503, 'a terminating local endpoint does not count');
  t.equal(draining.headers['x-load-balancing-endpoint-weight'], '0');
  t.same(JSON.parse(draining.text), { service: { namespace: 'shop', name: 'lb-draining' }, localEndpoints: 0, serviceProxyHealthy: true });

  // The local endpoint stops being ready: 503.
  await writeFile(c.file, fixtureYaml(c.ports, { lbLocalReady: false }));
  await waitFor(
    '503 once no local endpoint is ready',
    async () => (await get(`http://${LOOPBACK}:${c.ports.hcLocal}/`)).status === 503,
    8000,
  );
  const none = await get(`http://${LOOPBACK}:${c.ports.hcLocal}/`);
  t.equal(none.headers['x-load-balancing-endpoint-weight'], '0');

  // lb-draining goes away: its health check port closes.
  const yaml = fixtureYaml(c.ports).replace(
    / {2}- apiVersion: v1\n {4}kind: Service\n {4}metadata: \{ name: lb-draining[\s\S]*?(?= {2}- apiVersion: discovery)/,
    '',
  );
  await writeFile(c.file, yaml);
  await waitFor('its port is closed', () => refused(c.ports.hcDraining), 8000);
  await waitFor('lb is back to 200', async () => (await get(`http://${LOOPBACK}:${c.ports.hcLocal}/`)).status === 200, 8000);
  t.same(c.runtime.admin.healthCheckPorts(), [c.ports.hcLocal]);
});

t.test('with --nodeport-addresses, healthCheckNodePort listens only on the node addresses it selects (as kube-proxy)', async (t) => {
  // A wildcard --bind-address would have it on every address; 127.0.0.1/32 selects the one loopback address the node holds.
  const c = await startCluster(t.testdir(), { bindAddress: '0.0.0.0', nodePortAddresses: ['127.0.0.1/32'] });
  t.teardown(() => c.close());
  t.equal((await get(`http://${LOOPBACK}:${c.ports.hcLocal}/`)).status, 200, 'answers at the selected address');
  const other = await new Promise<string>((r) => {
    const s = net.connect(c.ports.hcLocal, '127.0.0.2');
    s.on('connect', () => (s.destroy(), r('connected')));
    s.on('error', (err: NodeJS.ErrnoException) => r(err.code ?? err.message));
  });
  t.equal(other, 'ECONNREFUSED', 'refused at another local address (127.0.0.2)');
});
