/**
 * The all-cluster-endpoints listener (issue 13 item 1): a service port whose
 * traffic policies are both Local gets a third listener over every endpoint,
 * which the node's own traffic to its external addresses is steered to; it
 * opens and closes as the policies change. Real sockets on loopback.
 */
import t from 'tap';
import { startHarness } from './support/harness.js';
import { nameServer, exchange, whoAnswers } from './support/net.js';
import { endpointSlice, service } from './support/objects.js';

const KEY = 'default/web:http/TCP';

t.test('both policies Local: a cluster listener over the remote endpoint, closed when no longer needed', async (t) => {
  const remote = await nameServer('remote');
  t.teardown(() => remote.close());
  const h = await startHarness();
  t.teardown(() => h.close());
  const objects = (itp: 'Cluster' | 'Local') => {
    const svc = service({
      name: 'web',
      type: 'NodePort',
      clusterIP: '10.96.0.10',
      internalTrafficPolicy: itp,
      externalTrafficPolicy: 'Local',
      ports: [{ name: 'http', port: 80, nodePort: 30080 }],
    });
    const slice = endpointSlice({
      service: 'web',
      endpoints: [{ ip: '127.0.0.1', nodeName: 'node-b' }],
      ports: [{ name: 'http', port: remote.port, protocol: 'TCP' }],
    });
    return { services: [svc], slices: [slice] };
  };
  const one = objects('Local');
  await h.set(one.services, one.slices);
  const p = h.entry(KEY);
  t.not(p.cluster, null, 'a third listener');
  t.equal(p.external, null, 'the two Local policies share one listener');
  const pp = h.proxier.proxyPorts().get(KEY as never);
  t.same(pp, { internal: p.internal.port, cluster: p.cluster!.port }, 'rules are told its port');
  t.equal(await whoAnswers(p.cluster!.port), 'remote', 'the cluster listener reaches the endpoint on another node');
  const local = await exchange(p.internal.port);
  t.equal(local.data.length, 0, 'the Local listener has nothing to send it to');
  t.ok(
    h.log.lines.some((l) => l.clusterProxyPort === p.cluster!.port),
    'the opening is logged with its port',
  );

  const two = objects('Cluster');
  await h.set(two.services, two.slices);
  t.equal(h.entry(KEY).cluster, null, 'iTP Cluster: the internal listener has every endpoint, no third one');
  t.same(Object.keys(h.proxier.proxyPorts().get(KEY as never) ?? {}).sort(), ['external', 'internal']);
});
