/**
 * SCTP service ports: Node has no SCTP sockets, so kup cannot proxy them.
 * They must not vanish into one log line: /status lists each with its reason,
 * `kup status` prints it, the dashboard shows a line for it, and it goes away
 * with the Service.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import type { StatusDocument } from '../lib/admin/status.js';
import { formatStatusTable } from '../lib/admin/status-table.js';
import { createLogger } from '../lib/log.js';
import { startProxy } from '../lib/runtime/proxy-runtime.js';
import { get, LOOPBACK, tcpEcho } from './support/admin-fixture.js';
import { chromiumMissing, launchChromium } from './support/browser.js';
import { testRunConfig } from './support/run-config.js';
import { waitFor } from './support/wait.js';

const REASON = 'SCTP is not supported by a userspace proxy (Node has no SCTP sockets)';

function clusterYaml(echoPort: number, withSignal: boolean): string {
  const signal = `
  - apiVersion: v1
    kind: Service
    metadata: { name: signal, namespace: tel }
    spec:
      clusterIP: 10.96.0.70
      ports: [{ protocol: SCTP, port: 2905 }]`;
  return `apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: { name: mixed, namespace: tel }
    spec:
      clusterIP: 10.96.0.60
      ports:
        - { name: http, protocol: TCP, port: 80 }
        - { name: diameter, protocol: SCTP, port: 3868 }
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: { name: mixed-1, namespace: tel, labels: { kubernetes.io/service-name: mixed } }
    addressType: IPv4
    ports: [{ name: http, protocol: TCP, port: ${echoPort} }]
    endpoints:
      - { addresses: [127.0.0.1], conditions: { ready: true }, nodeName: node-a }${withSignal ? signal : ''}
`;
}

t.test('SCTP ports are listed as unsupported, with the reason, on /status, kup status and the dashboard', async (t) => {
  const echo = await tcpEcho();
  t.teardown(() => echo.close());
  const file = join(t.testdir(), 'cluster.yaml');
  await writeFile(file, clusterYaml(echo.port, true));
  const runtime = await startProxy(
    testRunConfig(file, { bindAddress: LOOPBACK, metricsBindAddress: { host: LOOPBACK, port: 0 } }),
    createLogger('silent'),
  );
  t.teardown(() => runtime.stop());
  const url = `http://${LOOPBACK}:${runtime.admin.metricsAddress?.port ?? 0}`;
  const status = async (): Promise<StatusDocument> => JSON.parse((await get(`${url}/status`)).text) as StatusDocument;

  const doc = await status();
  t.same(
    doc.services.map((s) => s.key),
    ['tel/mixed:http/TCP'],
    'the TCP port of the mixed Service is proxied',
  );
  t.same(
    doc.unsupported,
    [
      {
        key: 'tel/mixed:diameter/SCTP',
        name: 'tel/mixed',
        namespace: 'tel',
        port: 'diameter',
        portNumber: 3868,
        protocol: 'SCTP',
        reason: REASON,
      },
      {
        key: 'tel/signal:2905/SCTP',
        name: 'tel/signal',
        namespace: 'tel',
        port: '2905',
        portNumber: 2905,
        protocol: 'SCTP',
        reason: REASON,
      },
    ],
    'each SCTP port is listed with its reason',
  );
  t.match(
    formatStatusTable(doc),
    `service ports not proxied:\n  tel/mixed:diameter/SCTP: ${REASON}\n  tel/signal:2905/SCTP: ${REASON}\n`,
    'kup status prints them',
  );

  const missing = chromiumMissing();
  if (missing !== null && process.env.CI === 'true') t.fail(`the dashboard check must run under CI: ${missing}`);
  else if (missing !== null) t.comment(`dashboard not checked: ${missing}`);
  else {
    const browser = await launchChromium();
    t.teardown(() => browser.close());
    const page = await browser.newPage();
    await page.goto(`${url}/`, { timeout: 15_000 });
    await page.waitForSelector('[data-unsupported="tel/signal:2905/SCTP"]', { timeout: 10_000 });
    t.match(await page.textContent('[data-unsupported="tel/mixed:diameter/SCTP"]'), `not proxied tel/mixed:diameter/SCTP ${REASON}`);
    t.match(await page.textContent('[data-unsupported="tel/signal:2905/SCTP"]'), 'tel/signal:2905/SCTP');
  }

  // The Service goes: so does its line.
  await writeFile(file, clusterYaml(echo.port, false));
  await waitFor('the deleted Service leaves the list', async () => (await status()).unsupported.length === 1, 10_000);
  t.same(
    (await status()).unsupported.map((u) => u.key),
    ['tel/mixed:diameter/SCTP'],
  );
});
