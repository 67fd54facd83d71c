/**
 * `kup status`'s table on hand-built /status documents (cli-admin.test.ts
 * prints it from a live proxy): the summary line, one aligned row per service
 * port, the VIP column, and listeners that could not be opened.
 */
import t from 'tap';
import { formatStatusTable, vipList } from '../lib/admin/status-table.js';
import { endpointStatus, serviceStatus, statusDocument } from './support/status-doc.js';

t.test('vipList: ClusterIPs, externalIPs, LB IPs as ip:port (IPv6 bracketed), NodePort as *:port', async (t) => {
  t.equal(vipList(serviceStatus('a', 'web', 'http', 80)), '10.96.0.10:80');
  t.equal(
    vipList(
      serviceStatus('a', 'lb', 'web', 80, {
        clusterIPs: ['10.96.0.20', 'fd00::20'],
        externalIPs: ['192.0.2.10'],
        loadBalancerIPs: ['198.51.100.7'],
        nodePort: 30080,
      }),
    ),
    '10.96.0.20:80,[fd00::20]:80,192.0.2.10:80,198.51.100.7:80,*:30080',
  );
  t.equal(vipList(serviceStatus('a', 'none', 'http', 80, { clusterIPs: [] })), '-');
});

t.test('formatStatusTable: summary, aligned rows, failed listeners listed', async (t) => {
  const web = serviceStatus('shop', 'web', 'http', 80, {
    proxyPort: 40001,
    endpoints: [endpointStatus('10.244.0.5', 8080, { activeConnections: 2 }), endpointStatus('10.244.0.6', 8080, { ready: false })],
    stats: { ...serviceStatus('x', 'x', 'x', 1).stats, active: 2 },
  });
  const dns = serviceStatus('kube-system', 'dns', '', 53, {
    protocol: 'UDP',
    clusterIPs: ['10.96.0.53'],
    proxyPort: null,
    listenerError: 'EADDRINUSE',
  });
  const lb = serviceStatus('shop', 'lb', 'web', 80, { type: 'LoadBalancer', proxyPort: 40003, externalProxyPort: 40004, nodePort: 30080 });
  const text = formatStatusTable(statusDocument([web, dns, lb]));
  const lines = text.split('\n');
  t.equal(lines[0], 'node node-a, userspace mode, source file synced, healthy; 3 service ports, 1/2 endpoints ready, 2 active connections');
  t.equal(lines[1], '');
  t.same(lines.slice(2, 6), [
    'SERVICE                 TYPE          VIPS                   PROXY PORT   ENDPOINTS  ACTIVE',
    'shop/web:http/TCP       ClusterIP     10.96.0.10:80          40001        1/2        2',
    'kube-system/dns:53/UDP  ClusterIP     10.96.0.53:53          FAILED       0/0        0',
    'shop/lb:web/TCP         LoadBalancer  10.96.0.10:80,*:30080  40003,40004  0/0        0',
  ]);
  t.same(lines.slice(6), ['', 'listeners that could not be opened:', '  kube-system/dns:53/UDP: EADDRINUSE', '']);
});

t.test('the summary names an unhealthy proxy and a source error; no failures, no failure list', async (t) => {
  const doc = statusDocument([serviceStatus('a', 'web', 'http', 80, { proxyPort: null })], {
    health: { healthy: false, proxyHealthy: false, nodeEligible: true, lastUpdated: '', reason: 'source not synced' },
    source: { kind: 'kubernetes', synced: false, lastEventTime: null, lastError: 'connection refused', detail: {} },
  });
  const text = formatStatusTable(doc);
  t.equal(
    text.split('\n')[0],
    'node node-a, userspace mode, source kubernetes not synced (error: connection refused), UNHEALTHY (source not synced); 1 service ports, 0/0 endpoints ready, 0 active connections',
  );
  t.match(text, /^a\/web:http\/TCP +ClusterIP +10\.96\.0\.10:80 +- +0\/0 +0$/m, 'no listener yet: -');
  t.notMatch(text, /could not be opened/);
  t.equal(
    formatStatusTable(statusDocument([], { health: null })).split('\n')[0],
    'node node-a, userspace mode, source file synced; 0 service ports, 0/0 endpoints ready, 0 active connections',
    'no health section offline',
  );
});
