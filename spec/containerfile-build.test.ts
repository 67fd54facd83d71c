/**
 * Replays the Containerfile without a container engine (none runs here, and
 * no registry serves the base image): a clean directory holding only what the
 * build stage's COPY lines name, the build stage's npm commands run there (npm
 * ci, which compiles through `prepare`, then the prune); then the final
 * stage's file tree assembled as its COPY, ENV, WORKDIR and RUN lines describe
 * it, under a temporary directory standing for the image's `/`, and kup run
 * from that tree with the pinned Node 24 (the base image's Node): through the
 * `kup` the DaemonSet calls, and through the parsed ENTRYPOINT, as far as a
 * proxy serving traffic and stopping on SIGTERM. The image cannot stop
 * building or running unnoticed: a file the build needs but the stage does not
 * copy, a file kup needs at run time but the final stage leaves out, or an
 * entrypoint that does not start kup, fails here as it would in the image.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, isAbsolute, join, posix, relative, resolve } from 'node:path';
import t from 'tap';
import { finished, recordOutput, waitForOutput } from './support/cli.js';
import { copies, parseStages, type Stage } from './support/containerfile.js';
import { writeObjectsFile } from './support/kup-process.js';
import { nameServer, whoAnswers } from './support/net.js';
import { NODE_BIN } from './support/netns.js';
import { service, slicesFor } from './support/objects.js';

const ROOT = resolve(new URL('../..', import.meta.url).pathname);

function workdir(stage: Stage): string {
  const w = stage.lines.filter((l) => /^WORKDIR\s/i.test(l)).at(-1);
  return w === undefined ? '/' : w.split(/\s+/)[1]!;
}

/** The stage's ENV lines (`ENV K=V`, `ENV K V`), as the image's processes see them. */
function envOf(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const l of stage.lines.filter((x) => /^ENV\s/i.test(x))) {
    const rest = l.replace(/^ENV\s+/i, '');
    // `K=V`: the first `=` ends the name; a value may hold more (NODE_OPTIONS=--max-semi-space-size=8).
    const pairs = rest.includes('=')
      ? rest.split(/\s+/).map((p) => {
          const at = p.indexOf('=');
          return at < 0 ? [p] : [p.slice(0, at), p.slice(at + 1)];
        })
      : [rest.split(/\s+/)];
    for (const [k, v] of pairs) if (k !== undefined) env[k] = v ?? '';
  }
  return env;
}

/** The exec form of ENTRYPOINT plus CMD, as the engine starts the container. */
function entrypointOf(stage: Stage): string[] {
  const exec = (kw: string): string[] => {
    const line = stage.lines.filter((l) => new RegExp(`^${kw}\\s`, 'i').test(l)).at(-1);
    if (line === undefined) return [];
    const parsed: unknown = JSON.parse(line.slice(kw.length).trim());
    if (!Array.isArray(parsed) || !parsed.every((w) => typeof w === 'string')) throw new Error(`${kw} is not in exec form: ${line}`);
    return parsed;
  };
  return [...exec('ENTRYPOINT'), ...exec('CMD')];
}

/** Docker's COPY: a directory's contents go to dest; a file goes to dest, or into it when dest ends in `/`. */
function copyInto(src: string, destRoot: string, dest: string, many: boolean): void {
  const target = join(destRoot, dest);
  if (statSync(src).isDirectory()) cpSync(src, target, { recursive: true });
  else if (many || dest.endsWith('/')) {
    mkdirSync(target, { recursive: true });
    cpSync(src, join(target, basename(src)));
  } else {
    mkdirSync(dirname(target), { recursive: true });
    cpSync(src, target);
  }
}

/** The environment a replayed step or the image's kup runs in: the pinned Node first on PATH, as `node` in the node:24 image. */
function childEnv(extra: Record<string, string> = {}, pathFirst: string[] = []): NodeJS.ProcessEnv {
  // The parent's npm_* variables (set when run via `npm test`) must not steer the replayed npm.
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
  env['PATH'] = [...pathFirst, dirname(NODE_BIN), env['PATH'] ?? ''].join(':');
  // kup run must not find a kubeconfig of this machine.
  env['KUBECONFIG'] = '/nonexistent';
  return { ...env, ...extra };
}

function run(cmd: string, cwd: string, args: string[] = [], env = childEnv()): Promise<{ code: number | null; out: string }> {
  // Packages come from the npm cache when there.
  const npmEnv = { ...env, npm_config_prefer_offline: 'true', npm_config_update_notifier: 'false' };
  return new Promise((res) => {
    const child = args.length === 0 ? spawn('sh', ['-c', cmd], { cwd, env: npmEnv }) : spawn(cmd, args, { cwd, env: npmEnv });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    // A program that is not there (a missing `kup` link) is a failed step with its reason, not an uncaught error.
    child.on('error', (err) => res({ code: null, out: `${out}${err.message}` }));
    child.on('close', (code) => res({ code, out }));
  });
}

t.test('the Containerfile, replayed: the build stage builds, the final stage runs kup', { timeout: 600_000 }, async (t) => {
  const stages = parseStages(readFileSync(join(ROOT, 'Containerfile'), 'utf8'));
  const build = stages.find((s) => s.name !== null);
  const final = stages.at(-1);
  if (build === undefined || final === undefined || final === build) return t.fail('a named build stage and a final stage');

  const tmp = mkdtempSync(join(tmpdir(), 'kup-image-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
  const src = join(tmp, 'src');
  /** The final image's `/`. */
  const image = join(tmp, 'image');
  /** A path inside the image, as the Containerfile writes it, on this machine. */
  const inImage = (p: string): string => join(image, posix.resolve(workdir(final), p));
  mkdirSync(src);
  mkdirSync(image);

  for (const c of copies(build)) {
    t.equal(c.from, null, 'the build stage copies from the build context only');
    for (const s of c.sources) copyInto(join(ROOT, s), src, c.dest, c.sources.length > 1);
  }
  // The build commands of the stage, in order (chown and the like are the engine's business).
  const npmRuns = build.lines.filter((l) => /^RUN\s+npm\s/.test(l)).map((l) => l.replace(/^RUN\s+/, ''));
  t.ok(npmRuns.length > 0, 'the build stage runs npm');
  for (const cmd of npmRuns) {
    const r = await run(cmd, src);
    t.equal(r.code, 0, `\`${cmd}\` succeeds in a tree holding only what the stage copies`, { output: r.out.slice(-3000) });
    if (r.code !== 0) return;
  }

  // The final stage's COPY lines, from the build stage's tree or the context, into the image's tree.
  const buildDir = workdir(build);
  for (const c of copies(final)) {
    for (const s of c.sources) {
      const from = c.from === build.name ? join(src, relative(buildDir, isAbsolute(s) ? s : join(buildDir, s))) : join(ROOT, s);
      t.ok(existsSync(from), `${c.from === null ? 'context' : c.from}:${s} exists for the final stage`);
      if (existsSync(from))
        copyInto(from, image, posix.resolve(workdir(final), c.dest) + (c.dest.endsWith('/') ? '/' : ''), c.sources.length > 1);
    }
  }
  t.notOk(existsSync(inImage('node_modules/typescript')), 'dev dependencies were pruned');

  // The final stage's RUN steps: those that shape kup's files are replayed in
  // the tree; the base image's package installs are not (iptables is the
  // host's here, and the smoke run needs none). A step of another kind must
  // be taught to this replay rather than pass unseen.
  for (const step of final.lines.filter((l) => /^RUN\s/i.test(l)).flatMap((l) => l.replace(/^RUN\s+/i, '').split(/\s*&&\s*/))) {
    const w = step.split(/\s+/);
    if (w[0] === 'chmod' && w.length === 3) chmodSync(inImage(w[2]!), Number.parseInt(w[1]!, 8));
    else if (w[0] === 'ln' && w[1] === '-s' && w.length === 4) {
      mkdirSync(dirname(inImage(w[3]!)), { recursive: true });
      symlinkSync(inImage(w[2]!), inImage(w[3]!));
    } else if (!(w[0] === 'apt-get' || (w[0] === 'rm' && w.at(-1) === '/var/lib/apt/lists/*')))
      t.fail(`a RUN step the replay does not know: \`${step}\``);
  }

  const kupEnv = childEnv(envOf(final), [join(image, 'usr/local/bin')]);
  const app = inImage('.');
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };

  await t.test("`kup` on the image PATH (the DaemonSet's command): --help, --version", async (t) => {
    const help = await run('kup', app, ['--help'], kupEnv);
    t.equal(help.code, 0, 'kup --help exits 0 from the image tree', { output: help.out.slice(-2000) });
    t.match(help.out, /Usage: kup \[options\] \[command\]/, 'and prints the usage');
    t.match(help.out, /\brun\b/, 'naming the run command');
    const version = await run('kup', app, ['--version'], kupEnv);
    t.equal(version.code, 0, 'kup --version exits 0', { output: version.out.slice(-2000) });
    t.equal(version.out, `${pkg.version}\n`, `and prints ${pkg.version}, read from the image's package.json`);
    // The example the final stage copies, read from the image's WORKDIR as `kup demo` and the README use it.
    const rules = await run('kup', app, ['rules', '--source', 'file:examples/demo.yaml'], kupEnv);
    t.equal(rules.code, 0, "kup rules over the image's examples/demo.yaml exits 0", { output: rules.out.slice(-2000) });
    t.match(rules.out, /--comment demo\/web:http/, "and renders the demo's services");
  });

  // The entrypoint as the engine runs it: `node` is the base image's (the
  // pinned Node 24 here), absolute paths are the image's.
  const entrypoint = entrypointOf(final);
  t.ok(entrypoint.length > 0, 'the final stage has an exec-form ENTRYPOINT/CMD');
  const [program, ...entryArgs] = entrypoint;
  const spawnEntrypoint = (args: string[]): ChildProcessWithoutNullStreams =>
    recordOutput(
      spawn(
        program === 'node' ? NODE_BIN : inImage(program ?? ''),
        [...entryArgs.map((a) => (a.startsWith('/') ? inImage(a) : a)), ...args],
        {
          cwd: app,
          env: kupEnv,
          stdio: 'pipe',
        },
      ),
    );

  await t.test("the ENTRYPOINT with --help: the run command's usage", async (t) => {
    const r = await finished(spawnEntrypoint(['--help']), 30_000);
    t.equal(r.code, 0, 'exit 0', { output: (r.stdout + r.stderr).slice(-2000) });
    t.match(r.stdout, /Usage: kup run \[options\]/, 'the entrypoint is `kup run`');
    t.match(r.stdout, /--source <source>/);
  });

  await t.test('the ENTRYPOINT serves: a request through a proxy port, /healthz 200, exit 0 on SIGTERM', async (t) => {
    const backend = await nameServer('pod-in-image');
    t.teardown(() => backend.close());
    const file = await writeObjectsFile(t, [
      service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] }),
      ...slicesFor('web', 'http', [backend.port]),
    ]);
    const child = spawnEntrypoint([
      '--no-iptables',
      '--bind-address',
      '127.0.0.1',
      '--source',
      `file:${file}`,
      '--healthz-bind-address',
      '127.0.0.1:0',
      '--metrics-bind-address',
      '127.0.0.1:0',
    ]);
    const done = finished(child, 60_000);
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    // A kup that exits (a broken image) fails at once, with what it said, rather than at the wait's timeout.
    const exited = done.then((r) => {
      throw new Error(`kup exited (code ${r.code}) before serving:\n${(r.stdout + r.stderr).slice(-2000)}`);
    });
    exited.catch(() => {});
    const logged = async (re: RegExp): Promise<RegExpMatchArray> => Promise.race([waitForOutput(child, re, 30_000), exited]);
    const proxyPort = Number((await logged(/"servicePort":"default\/web:http\/TCP","proxyPort":(\d+)/))[1]);
    const healthz = (await logged(/"healthz":"(http:\/\/[^"]+)".*"msg":"admin servers listening"/))[1]!;
    t.equal(await whoAnswers(proxyPort), 'pod-in-image', 'a TCP request through the proxy port reaches the backend');
    const res = await fetch(healthz);
    t.equal(res.status, 200, '/healthz answers 200');
    t.match(await res.json(), { healthy: true, nodeEligible: true });
    child.kill('SIGTERM');
    const r = await done;
    t.equal(r.code, 0, 'exit 0 on SIGTERM', { output: r.stderr.slice(-2000) });
    t.match(r.stderr, /"msg":"stopped"/);
    t.notMatch(r.stderr, /"level":"error"|"level":50/, 'nothing logged as an error');
  });
});
