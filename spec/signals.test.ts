import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readdir, readFile, readlink, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import t from 'tap';
import { stringify } from 'yaml';
import { finished, KUP, waitForOutput } from './support/cli.js';
import { exchange, nameServer } from './support/net.js';
import { loopbackRunArgs, writeObjectsFile } from './support/kup-process.js';
import { service, slicesFor } from './support/objects.js';

/**
 * Signals as users send them to a kup started as users start it: through
 * bin/kup.js's shebang (what `kup`, the DaemonSet and npx run), and as
 * `node dist/bin/kup.js` with no flags at all.
 */

const INSPECTOR_PORT = 9229;

/** The TCP ports process `pid` listens on, from its descriptors and /proc/net/tcp{,6}. */
async function listeningPorts(pid: number): Promise<number[]> {
  const inodes = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
    const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const m = /^socket:\[(\d+)\]$/.exec(link);
    if (m !== null) inodes.add(m[1]!);
  }
  const ports: number[] = [];
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await readFile(file, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // local_address st ... inode: state 0A is LISTEN
      if (f.length > 9 && f[3] === '0A' && inodes.has(f[9]!)) ports.push(parseInt(f[1]!.split(':')[1]!, 16));
    }
  }
  return ports;
}

/** Runs kup.js the way the kernel runs its shebang line: `interpreter [arg] kup.js args...`. */
async function startViaShebang(args: string[]): Promise<ChildProcessWithoutNullStreams> {
  const first = (await readFile(KUP, 'utf8')).split('\n')[0]!;
  const m = /^#!\s*(\S+)(?:\s+(.*))?$/.exec(first);
  if (m === null) throw new Error(`no shebang in ${KUP}: ${first}`);
  const argv = m[2] === undefined ? [KUP, ...args] : [m[2], KUP, ...args];
  // `node` on PATH is the pinned one, as `npx kup` and the image have it.
  const env = { ...process.env, PATH: `${dirname(process.execPath)}:${process.env['PATH'] ?? ''}`, KUBECONFIG: '/nonexistent' };
  return spawn(m[1]!, argv, { stdio: 'pipe', env });
}

function startPlain(args: string[]): ChildProcessWithoutNullStreams {
  return spawn(process.execPath, [KUP, ...args], { stdio: 'pipe', env: { ...process.env, KUBECONFIG: '/nonexistent' } });
}

function objectsFile(t: { teardown(fn: () => unknown): void }, backendPort: number): Promise<string> {
  return writeObjectsFile(t, [
    service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }),
    ...slicesFor('web', 'http', [backendPort]),
  ]);
}

const runArgs = (file: string): string[] => loopbackRunArgs(file, { healthz: '127.0.0.1:0', metrics: '' }, ['--min-sync-period', '0']);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

for (const [how, start] of [
  ['through its shebang', startViaShebang],
  ['as `node dist/bin/kup.js` without flags', async (a: string[]) => startPlain(a)],
] as const) {
  t.test(`SIGUSR1 to kup started ${how} opens no inspector; kup keeps serving and exits 0 on SIGTERM`, async (t) => {
    const backend = await nameServer('web-1', { eager: true });
    t.teardown(() => backend.close());
    const file = await objectsFile(t, backend.port);
    const child = await start(runArgs(file));
    const done = finished(child, 30_000);
    t.teardown(() => void child.kill('SIGKILL'));
    const port = Number((await waitForOutput(child, /"proxyPort":(\d+)/))[1]);
    await waitForOutput(child, /admin servers listening/);
    const pid = child.pid!;
    t.notOk((await listeningPorts(pid)).includes(INSPECTOR_PORT), 'no inspector before the signal');

    child.kill('SIGUSR1');
    await sleep(700);
    const ports = await listeningPorts(pid);
    t.notOk(ports.includes(INSPECTOR_PORT), `kup listens on no ${INSPECTOR_PORT} after SIGUSR1 (listening on ${ports.join(', ')})`);
    t.equal(child.exitCode, null, 'still running');
    t.equal((await exchange(port, 'hi')).data.toString(), 'web-1\n', 'still proxies');

    child.kill('SIGTERM');
    const r = await done;
    t.equal(r.code, 0, 'exit 0 on SIGTERM');
    t.notMatch(r.stderr, /Debugger listening|inspector/i, 'Node never started (or tried to start) the inspector');
  });
}

t.test('SIGHUP re-reads the file source at once, says so in one line, and never stops kup', async (t) => {
  const a = await nameServer('web-a', { eager: true });
  const b = await nameServer('web-b', { eager: true });
  t.teardown(() => Promise.all([a.close(), b.close()]).then(() => undefined));
  const file = await objectsFile(t, a.port);
  const child = await startViaShebang(runArgs(file));
  const done = finished(child, 30_000);
  t.teardown(() => void child.kill('SIGKILL'));
  const port = Number((await waitForOutput(child, /"proxyPort":(\d+)/))[1]);
  await waitForOutput(child, /admin servers listening/);
  t.equal((await exchange(port, 'x')).data.toString(), 'web-a\n');

  child.kill('SIGHUP');
  const line = await waitForOutput(child, /"msg":"SIGHUP: ([^"]*)"/);
  t.match(line[1], /re-read .*objects\.yaml; full resync of listeners requested/, 'one line saying what SIGHUP did');
  await sleep(300);
  t.equal(child.exitCode, null, 'kup is still running after SIGHUP');
  t.equal((await exchange(port, 'x')).data.toString(), 'web-a\n', 'and still serving');

  // Several in a row (the kernel may merge them into one) change nothing either.
  for (let i = 0; i < 3; i++) child.kill('SIGHUP');
  await sleep(300);
  t.equal(child.exitCode, null, 'still running after more SIGHUPs');

  // The re-read sees what is on disk now (the watch would notice too: this checks
  // that a HUP racing a change leaves the new state served, on the same port).
  await writeFile(
    file,
    stringify({
      kind: 'List',
      items: [
        service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }),
        ...slicesFor('web', 'http', [b.port]),
      ],
    }),
  );
  child.kill('SIGHUP');
  let got = '';
  for (let i = 0; i < 40 && got !== 'web-b\n'; i++) {
    await sleep(50);
    got = (await exchange(port, 'x')).data.toString();
  }
  t.equal(got, 'web-b\n', 'the file as it is now is served, on the same proxy port');

  child.kill('SIGTERM');
  const r = await done;
  t.equal(r.code, 0, 'exit 0 on SIGTERM (not 129, the default action of SIGHUP)');
  const lines = (r.stderr.match(/"msg":"SIGHUP: /g) ?? []).length;
  t.ok(lines >= 3 && lines <= 5, `one line per SIGHUP received (${lines})`);
});
