import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { findBinary } from '../lib/iptables/backend.js';
import { startHarness } from './support/harness.js';
import { deadPort } from './support/net.js';
import { service, slicesFor } from './support/objects.js';
import { waitFor } from './support/wait.js';

/**
 * Issue 13, item 10: with kup.dev/proxy-protocol a backend learns the real
 * client (here 127.0.0.2) instead of kup's own address, checked with a real
 * PROXY-protocol consumer: nginx's `listen ... proxy_protocol`.
 */
const KEY = 'default/web:http/TCP';
const CLIENT = '127.0.0.2';
const web = (annotation?: string) =>
  service({
    name: 'web',
    clusterIP: '10.96.0.10',
    ports: [{ name: 'http', port: 80 }],
    ...(annotation === undefined ? {} : { annotations: { 'kup.dev/proxy-protocol': annotation } }),
  });

/** GET / through `port` from CLIENT's address: the body and the client's own port. */
function getFrom(port: number): Promise<{ body: string; localPort: number }> {
  return new Promise((resolve, reject) => {
    // Read at connect: the socket is detached from the request once the response ends.
    let localPort = 0;
    const req = http.get({ host: '127.0.0.1', port, path: '/', localAddress: CLIENT, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ body: Buffer.concat(chunks).toString(), localPort }));
    });
    req.on('socket', (s) => s.on('connect', () => (localPort = s.localPort ?? 0)));
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

interface Nginx {
  readonly proxyPort: number;
  readonly plainPort: number;
  readonly errorLog: () => string;
  stop(): void;
}

async function startNginx(): Promise<Nginx> {
  const dir = mkdtempSync(join(tmpdir(), 'kup-nginx-'));
  mkdirSync(join(dir, 'tmp'));
  const proxyPort = await deadPort();
  const plainPort = await deadPort();
  const conf = `
worker_processes 1;
error_log ${dir}/error.log info;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  default_type text/plain;
  server { listen 127.0.0.1:${proxyPort} proxy_protocol; return 200 "$proxy_protocol_addr:$proxy_protocol_port\\n"; }
  server { listen 127.0.0.1:${plainPort}; return 200 "$remote_addr\\n"; }
}
`;
  writeFileSync(join(dir, 'nginx.conf'), conf);
  const proc = spawn(
    'nginx',
    ['-p', dir, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf'), '-g', `daemon off; pid ${dir}/nginx.pid;`],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let stderr = '';
  proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const up = (p: number) =>
    new Promise<boolean>((r) => {
      const s = net.connect(p, '127.0.0.1', () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
  await waitFor(
    `nginx listening (${stderr})`,
    async () => proc.exitCode === null && (await up(proxyPort)) && (await up(plainPort)),
    10_000,
    50,
  );
  const errorLog = () => {
    try {
      return readFileSync(join(dir, 'error.log'), 'utf8');
    } catch {
      return '';
    }
  };
  return {
    proxyPort,
    plainPort,
    errorLog,
    stop() {
      proc.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const reason = (await findBinary('nginx')) === null ? 'needs nginx (apt-get install -y nginx-light)' : null;
if (reason !== null && process.env.CI === 'true') {
  t.fail(`CI=true but ${reason}`);
} else {
  for (const version of ['v1', 'v2']) {
    t.test(`kup.dev/proxy-protocol: ${version}: nginx sees the client's address and port`, { skip: reason ?? false }, async (t) => {
      const nginx = await startNginx();
      const h = await startHarness();
      t.teardown(async () => {
        await h.close();
        nginx.stop();
      });
      await h.set([web(version)], slicesFor('web', 'http', [nginx.proxyPort]));
      for (let i = 0; i < 3; i++) {
        const r = await getFrom(h.port(KEY));
        t.equal(r.body, `${CLIENT}:${r.localPort}\n`, `request ${i + 1}: nginx answers the client's ${CLIENT}:${r.localPort}`);
      }
      t.notMatch(nginx.errorLog(), /broken header/, 'nginx read every header');
    });
  }

  t.test('without the annotation nginx sees kup (127.0.0.1), not the client', { skip: reason ?? false }, async (t) => {
    const nginx = await startNginx();
    const h = await startHarness();
    t.teardown(async () => {
      await h.close();
      nginx.stop();
    });
    await h.set([web()], slicesFor('web', 'http', [nginx.plainPort]));
    t.equal((await getFrom(h.port(KEY))).body, '127.0.0.1\n');
    // Turned on by an update, without reopening the listener: the next connection carries the header.
    const port = h.port(KEY);
    await h.set([web('v1')], slicesFor('web', 'http', [nginx.proxyPort]));
    t.equal(h.port(KEY), port, 'same listener');
    const r = await getFrom(port);
    t.equal(r.body, `${CLIENT}:${r.localPort}\n`);
  });
}

t.test('an endpoint that resets before answering: the client moves on, and its header is sent again', async (t) => {
  // Resets once kup's header arrived (so the dial had succeeded and the
  // sockets were spliced), before any byte of the client's or its own.
  const rst = net.createServer((s) => s.once('data', () => s.resetAndDestroy()));
  // Answers with the header it was sent (v1 is one line).
  const echo = net.createServer((s) => {
    let got = '';
    s.on('data', (c: Buffer) => {
      got += c.toString('latin1');
      const end = got.indexOf('\r\n');
      if (end >= 0) s.end(got.slice(0, end) + '\n');
    });
  });
  await Promise.all([rst, echo].map((srv) => new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()))));
  const ports = [rst, echo].map((srv) => (srv.address() as net.AddressInfo).port);
  const h = await startHarness();
  t.teardown(async () => {
    await h.close();
    rst.close();
    echo.close();
  });
  await h.set([web('v1')], slicesFor('web', 'http', ports));
  const proxyPort = h.port(KEY);
  for (let i = 0; i < 4; i++) {
    const s = net.connect({ host: '127.0.0.1', port: proxyPort, localAddress: CLIENT });
    const line = await new Promise<string>((resolve, reject) => {
      let d = '';
      s.on('data', (c: Buffer) => (d += c.toString()));
      s.on('end', () => resolve(d));
      s.on('error', reject);
    });
    t.equal(line, `PROXY TCP4 ${CLIENT} 127.0.0.1 ${s.localPort} ${proxyPort}\n`, `client ${i + 1} served, with its own header`);
  }
  t.equal(h.entry(KEY).internal.stats.dialFailures, 1, 'the resetting endpoint failed once, then was passed over');
  t.equal(h.entry(KEY).internal.stats.exhausted, 0);
});
