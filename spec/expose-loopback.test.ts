/**
 * `kup run --expose-on-loopback`, as a laptop user runs it against a file:
 * each Service answers on its own 127.x.y.z at its real port, round-robin over
 * its backends; the hosts-file block is printed; the address survives a
 * restart; a port that cannot be bound is one clear line and the rest serve.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { chmod, chown, mkdir, readFile } from 'node:fs/promises';
import dgram from 'node:dgram';
import net from 'node:net';
import { dirname, join } from 'node:path';
import t, { type Test } from 'tap';
import type { StatusDocument } from '../lib/admin/status.js';
import { loopbackAddressFor } from '../lib/core/loopback-address.js';
import { finished, KUP, KUP_NODE_FLAGS, recordOutput, runKup, startKup, waitForOutput } from './support/cli.js';
import { writeObjectsFile } from './support/kup-process.js';
import { collect, nameServer, udpEchoServer } from './support/net.js';
import { service, slicesFor } from './support/objects.js';
import { waitFor } from './support/wait.js';

const PORT = 8080;

/** The name a nameServer behind host:port answered with. */
async function whoAnswersAt(host: string, port: number): Promise<string> {
  const s = net.connect({ host, port, allowHalfOpen: true });
  const r = await collect(s, 5000, () => s.end());
  return r.data.toString().trim() || r.ended;
}

/** One datagram to host:port and its reply, or null after 2 s. */
async function udpAskAt(host: string, port: number, payload: string): Promise<Buffer | null> {
  const sock = dgram.createSocket('udp4');
  try {
    return await new Promise<Buffer | null>((resolve) => {
      const timer = setTimeout(() => resolve(null), 2000);
      sock.once('message', (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      sock.send(payload, port, host);
    });
  } finally {
    sock.close();
  }
}

function hostsLineRe(name: string): RegExp {
  return new RegExp(
    `^(127\\.\\d+\\.\\d+\\.\\d+) ${name}\\.default ${name}\\.default\\.svc ${name}\\.default\\.svc\\.cluster\\.local$`,
    'm',
  );
}

function runArgs(file: string, extra: readonly string[] = []): string[] {
  return [
    'run',
    '--expose-on-loopback',
    '--source',
    `file:${file}`,
    '--healthz-bind-address',
    '',
    '--metrics-bind-address',
    '127.0.0.1:0',
    '--shutdown-grace-period',
    '1s',
    ...extra,
  ];
}

/** Skips on a laptop, fails under CI=true, as spec/support/netns.ts does. */
function requirement(t: Test, reason: string | null): boolean {
  if (reason === null) return true;
  if (process.env.CI === 'true') t.fail(`CI=true but ${reason}`);
  else t.plan(0, reason);
  return false;
}

async function stop(child: ChildProcessWithoutNullStreams): Promise<number | null> {
  const done = finished(child, 20_000);
  child.kill('SIGTERM');
  return (await done).code;
}

t.test('each Service on its own loopback address at its real port, round-robin, stable across a restart', async (t) => {
  const a = await nameServer('web-a');
  const b = await nameServer('web-b');
  const c = await nameServer('api-a');
  const u = await udpEchoServer('dns-a');
  t.teardown(() => Promise.all([a.close(), b.close(), c.close(), u.close()]));
  // "busy" collides with a listener another process holds: one line, and the others still serve.
  const busyAddress = loopbackAddressFor('default', 'busy');
  const squatter = net.createServer();
  await new Promise<void>((r) => squatter.listen(PORT, busyAddress, () => r()));
  t.teardown(() => new Promise<void>((r) => squatter.close(() => r())));
  const file = await writeObjectsFile(t, [
    service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: PORT }] }),
    ...slicesFor('web', 'http', [a.port, b.port]),
    service({ name: 'api', clusterIP: '10.96.0.11', ports: [{ name: 'http', port: PORT }] }),
    ...slicesFor('api', 'http', [c.port]),
    service({ name: 'busy', clusterIP: '10.96.0.12', ports: [{ name: 'http', port: PORT }] }),
    ...slicesFor('busy', 'http', [c.port]),
    service({ name: 'dns', clusterIP: '10.96.0.13', ports: [{ name: 'dns', port: 5353, protocol: 'UDP' }] }),
    ...slicesFor('dns', 'dns', [u.port], 'UDP'),
  ]);

  const child = startKup(runArgs(file, ['--sync-period', '1s']));
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const stdout: string[] = [];
  const output: string[] = [];
  child.stdout.on('data', (d: Buffer) => (stdout.push(d.toString()), output.push(d.toString())));
  child.stderr.on('data', (d: Buffer) => output.push(d.toString()));
  const dashboard = (await waitForOutput(child, /"dashboard":"(http:\/\/[^"]+?)\/?"/))[1] ?? '';
  // After the first sync; sorted by name, web's line is the block's last.
  await waitForOutput(child, hostsLineRe('web'));
  const printed = stdout.join('');
  t.match(printed, /^# kup --expose-on-loopback: add to \/etc\/hosts$/m, 'the hosts block is printed on stdout');
  const web = hostsLineRe('web').exec(printed)?.[1];
  const api = hostsLineRe('api').exec(printed)?.[1];
  if (web === undefined || api === undefined) return t.fail(`hosts lines for web and api in:\n${printed}`);
  t.equal(web, loopbackAddressFor('default', 'web'), "web's address is the one its name gives");
  t.not(api, web, 'a second Service gets a different address');
  t.match(web, /^127\.(?!0\.)/, 'outside 127.0.0.0/16');

  const answers: string[] = [];
  for (let i = 0; i < 4; i++) answers.push(await whoAnswersAt(web, PORT));
  t.same([...answers].sort(), ['web-a', 'web-a', 'web-b', 'web-b'], `both backends answer at ${web}:${PORT}: ${answers.join(',')}`);
  t.not(answers[0], answers[1], 'round-robin');
  t.equal(await whoAnswersAt(api, PORT), 'api-a', 'the second Service answers at its own address, same port');
  const dns = loopbackAddressFor('default', 'dns');
  t.equal((await udpAskAt(dns, 5353, 'ping'))?.toString(), 'dns-a:ping', `UDP too, at ${dns}:5353`);

  // --sync-period 1s: a few full resyncs retry the port meanwhile; the line is not repeated.
  await new Promise((r) => setTimeout(r, 2500));
  const busyLines = output
    .join('')
    .split('\n')
    .filter((l) => l.includes('default/busy'));
  t.equal(busyLines.length, 1, `one line for the port that cannot be bound, not one per retry:\n${busyLines.join('\n')}`);
  t.match(busyLines[0], `"msg":"cannot listen on ${busyAddress}:${PORT}: another process is listening there; will retry at the next sync"`);

  const doc = (await (await fetch(`${dashboard}/status`)).json()) as StatusDocument;
  t.equal(doc.services.find((s) => s.name === 'default/web')?.exposedAt, `${web}:${PORT}`, '/status shows the exposed address');
  t.equal(doc.services.find((s) => s.name === 'default/busy')?.exposedAt, null);
  t.equal(doc.iptables.installed, false, 'no rules: the mode implies --no-iptables');
  const st = await runKup(['status', '--server', dashboard]);
  t.equal(st.code, 0, st.stderr);
  t.match(
    st.stdout,
    new RegExp(`^default/web:http/TCP\\s+ClusterIP\\s+10\\.96\\.0\\.10:${PORT}\\s+${web.replaceAll('.', '\\.')}:${PORT}\\s`, 'm'),
  );
  t.match(st.stdout, hostsLineRe('web'), '`kup status` prints the hosts block too');

  t.equal(await stop(child), 0, 'stops cleanly');

  const again = startKup(runArgs(file));
  t.teardown(() => {
    if (again.exitCode === null && again.signalCode === null) again.kill('SIGKILL');
  });
  const line = await waitForOutput(again, hostsLineRe('web'));
  t.equal(line[1], web, 'the same address after a restart');
  t.match(await whoAnswersAt(web, PORT), /^web-[ab]$/);
  t.equal(await stop(again), 0);
});

t.test('--expose-on-loopback with --iptables: one line, exit 2', async (t) => {
  const file = await writeObjectsFile(t, [service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ port: PORT }] })]);
  const r = await runKup(runArgs(file, ['--iptables']));
  t.equal(r.code, 2);
  t.equal(r.stderr, 'kup: --expose-on-loopback runs without iptables rules (the listeners are the exposure); drop --iptables\n');
  t.equal(r.stdout, '');
});

t.test('a port below 1024 without the privilege: one line saying what is needed; the other ports serve', async (t) => {
  if (!requirement(t, process.getuid?.() === 0 ? null : 'starting kup as an unprivileged user needs root')) return;
  const start = Number((await readFile('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8')).trim());
  // Not a missing tool: a machine where anyone may bind port 80 has nothing to refuse.
  if (start <= 80) return t.plan(0, `net.ipv4.ip_unprivileged_port_start is ${start}: anyone may bind port 80 here`);
  const a = await nameServer('web-a');
  t.teardown(() => a.close());
  const file = await writeObjectsFile(t, [
    service({
      name: 'low',
      clusterIP: '10.96.0.20',
      ports: [
        { name: 'http', port: 80 },
        { name: 'alt', port: PORT },
      ],
    }),
    ...slicesFor('low', 'http', [a.port]),
    ...slicesFor('low', 'alt', [a.port]).map((s) => ({ ...s, metadata: { ...s.metadata, name: 'low-alt' } })),
  ]);
  await chmod(dirname(file), 0o755);
  // The state directory is the user's own: kup binds its lock and hand-over socket, kup.sock, in it.
  const stateDir = join(dirname(file), 'state');
  await mkdir(stateDir, { mode: 0o700 });
  await chown(stateDir, 65534, 65534);
  const child = recordOutput(
    spawn(process.execPath, [...KUP_NODE_FLAGS, KUP, ...runArgs(file, ['--state-dir', stateDir])], {
      stdio: 'pipe',
      uid: 65534,
      gid: 65534,
      // Without the test runner's NODE_OPTIONS: its hooks write where nobody may not.
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', KUBECONFIG: '/nonexistent' },
    }),
  );
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const low = loopbackAddressFor('default', 'low');
  let text = '';
  child.stdout.on('data', (d: Buffer) => (text += d.toString()));
  child.stderr.on('data', (d: Buffer) => (text += d.toString()));
  // The two ports open in table order: wait for both outcomes, whichever comes first.
  // A generous bound (10 s once ran out on this loaded 2-core machine); the error carries kup's log.
  await waitFor(
    'both ports tried',
    () => text.includes('default/low:alt/TCP') && text.includes(`cannot listen on ${low}:80`),
    30_000,
  ).catch((err: unknown) => {
    throw new Error(`${String(err)}; kup said:\n${text}`);
  });
  const lines = text.split('\n').filter((l) => l.includes('default/low:http/TCP'));
  t.equal(lines.length, 1, 'one line for port 80');
  t.match(
    lines[0],
    `"msg":"cannot listen on ${low}:80: ports below 1024 need root or CAP_NET_BIND_SERVICE (or sysctl net.ipv4.ip_unprivileged_port_start=80); will retry at the next sync"`,
  );
  t.match(text, `"msg":"exposed default/low:alt/TCP on ${low}:${PORT}"`);
  t.equal(await whoAnswersAt(low, PORT), 'web-a', `${low}:${PORT} serves`);
  t.equal(await stop(child), 0);
});
