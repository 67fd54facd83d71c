import { readFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import t from 'tap';
import { DEMO_FILE, startDemo } from '../lib/cli/demo.js';
import { testRunConfig } from './support/run-config.js';
import type { RunConfig } from '../lib/runtime/config.js';
import { createLogger } from '../lib/log.js';
import { freePort, LOOPBACK } from './support/admin-fixture.js';
import { waitFor } from './support/wait.js';
import { chromiumMissing, launchChromium } from './support/browser.js';

/** What the page's elements offer to $$eval callbacks (the DOM library is not in this project's types). */
interface DomElement {
  getAttribute(name: string): string | null;
  readonly textContent: string | null;
}

/** The demo file with its fixed backend ports (380xx) moved to free ones, so parallel tests and a running demo don't collide. */
async function demoCopy(dir: string): Promise<string> {
  let yaml = await readFile(DEMO_FILE, 'utf8');
  const ports = [...new Set(yaml.match(/\b380\d\d\b/g) ?? [])];
  for (const p of ports) yaml = yaml.replace(new RegExp(`\\b${p}\\b`, 'g'), String(await freePort()));
  const file = join(dir, 'demo.yaml');
  await writeFile(file, yaml);
  return file;
}

function demoConfig(file: string): RunConfig {
  return testRunConfig(file, { nodeName: 'demo-node', bindAddress: LOOPBACK, metricsBindAddress: { host: LOOPBACK, port: 0 } });
}

function httpGet(port: number): Promise<string> {
  return new Promise((res, rej) => {
    http
      .get({ host: LOOPBACK, port, path: '/', agent: false, timeout: 5000 }, (r) => {
        let body = '';
        r.setEncoding('utf8');
        r.on('data', (d: string) => (body += d));
        r.on('end', () => res(body));
      })
      .on('error', rej);
  });
}

const DEMO_KEYS = ['demo/echo:echo/UDP', 'demo/empty:http/TCP', 'demo/web-sticky:http/TCP', 'demo/web:http/TCP'];

t.test('the dashboard streams throttled updates over SSE, however much traffic flows', async (t) => {
  const demo = await startDemo(demoConfig(await demoCopy(t.testdir())), createLogger('silent'));
  t.teardown(() => demo.stop());
  const port = demo.runtime.admin.metricsAddress?.port ?? 0;
  const web = demo.runtime.proxier.get('demo/web:http/TCP' as never)?.internal.port ?? 0;
  const events: string[] = [];
  const req = http.get({ host: LOOPBACK, port, path: '/events', agent: false });
  t.teardown(() => req.destroy());
  const res = await new Promise<http.IncomingMessage>((r) => req.on('response', r));
  t.match(res.headers['content-type'], /^text\/event-stream/);
  res.setEncoding('utf8');
  let buf = '';
  res.on('data', (d: string) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const ev = /^event: (\w+)/m.exec(buf.slice(0, i));
      if (ev?.[1] !== undefined) events.push(ev[1]);
      buf = buf.slice(i + 2);
    }
  });
  await new Promise((r) => setTimeout(r, 200));
  t.same(events, ['status', 'rules'], 'a new tab gets the table and the rules at once');
  // 200 requests in about a second: the stream must not carry one update per connection.
  const started = Date.now();
  for (let i = 0; i < 20; i++) {
    await Promise.all(Array.from({ length: 10 }, () => httpGet(web)));
  }
  const elapsed = Date.now() - started;
  await new Promise((r) => setTimeout(r, 700));
  const updates = events.filter((e) => e === 'status').length - 1;
  const bound = Math.ceil((elapsed + 700) / 500) + 1;
  t.ok(updates >= 1, `the traffic was reported (${updates} updates)`);
  t.ok(updates <= bound, `at most 2 updates a second: ${updates} updates for 200 connections in ${elapsed + 700}ms (bound ${bound})`);
});

const missing = chromiumMissing();
if (missing !== null && process.env.CI === 'true') {
  t.fail(`the dashboard browser test must run under CI: ${missing}`);
} else {
  t.test('the dashboard in headless Chromium shows every demo service and live counts', { skip: missing ?? false }, async (t) => {
    const dir = t.testdir();
    const demo = await startDemo(demoConfig(await demoCopy(dir)), createLogger('silent'));
    t.teardown(() => demo.stop());
    const port = demo.runtime.admin.metricsAddress?.port ?? 0;
    const web = demo.runtime.proxier.get('demo/web:http/TCP' as never)?.internal.port ?? 0;
    const browser = await launchChromium();
    t.teardown(() => browser.close());
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const external: string[] = [];
    page.on('request', (r) => {
      if (!r.url().startsWith(`http://${LOOPBACK}:${port}/`)) external.push(r.url());
    });
    await page.goto(`http://${LOOPBACK}:${port}/`, { timeout: 15_000 });
    await page.waitForSelector('[data-key="demo/web:http/TCP"]', { timeout: 10_000 });
    const keys = await page.$$eval('[data-key]', (els: readonly DomElement[]) => els.map((e) => e.getAttribute('data-key')));
    t.same([...keys].sort(), DEMO_KEYS, 'every service port of the demo has a card');
    t.match(await page.textContent('[data-key="demo/web:http/TCP"]'), /ClusterIP 10\.96\.100\.10:80/);
    t.match(await page.textContent('[data-key="demo/web:http/TCP"]'), new RegExp(`listener 127\\.0\\.0\\.1:${web}`));
    t.match(await page.textContent('[data-key="demo/empty:http/TCP"]'), /No endpoints/);
    t.match(await page.textContent('#rules'), /running without iptables rules/);
    t.equal(await page.textContent('#health'), 'healthy');
    const accepted = async (): Promise<string | null> => page.textContent('[data-key="demo/web:http/TCP"] .accepted');
    t.equal(await accepted(), '0');

    const answers = new Set<string>();
    for (let i = 0; i < 6; i++) answers.add((await httpGet(web)).trim());
    t.same([...answers].sort(), ['web-1', 'web-2', 'web-3'], 'the traffic went through the proxy to every pod');
    // Polled from here: the page's CSP forbids the eval that waitForFunction would need.
    await waitFor('the connection count moved by the 6 connections sent', async () => (await accepted()) === '6', 5000);
    const picks = await page.$$eval('[data-key="demo/web:http/TCP"] td.picks', (els: readonly DomElement[]) =>
      els.map((e) => e.textContent ?? ''),
    );
    t.same(
      picks.map((p) => p.split(' ')[0]),
      ['2', '2', '2'],
      'picks per endpoint',
    );
    t.same(external, [], 'the page loads nothing from anywhere else');
    await page.screenshot({ path: join(dir, 'dashboard.png'), fullPage: true });
    t.pass('screenshot saved');
  });
}
