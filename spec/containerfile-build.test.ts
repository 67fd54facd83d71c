/**
 * Replays the Containerfile without a container engine: a clean directory
 * holding only what the build stage's COPY lines name, the build stage's npm
 * commands run there (npm ci, which compiles through `prepare`, then the
 * prune), the final stage's COPY lines assembled into an /app tree, and
 * `kup --help` run from it with the pinned Node 24. The image cannot stop
 * building unnoticed: a file the build needs but the stage does not copy
 * fails here as it would in `podman build`.
 */
import { spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import t from 'tap';
import { copies, parseStages, type Stage } from './support/containerfile.js';
import { NODE_BIN } from './support/netns.js';

const ROOT = resolve(new URL('../..', import.meta.url).pathname);

function workdir(stage: Stage): string {
  const w = stage.lines.filter((l) => /^WORKDIR\s/i.test(l)).at(-1);
  return w === undefined ? '/' : w.split(/\s+/)[1]!;
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

function run(cmd: string, cwd: string, args: string[] = []): Promise<{ code: number | null; out: string }> {
  // The parent's npm_* variables (set when run via `npm test`) must not steer the replayed npm.
  const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
  // `node` (and so npm's own shebang) is the pinned Node 24, as in the node:24 image; packages come from the npm cache when there.
  env['PATH'] = `${dirname(NODE_BIN)}:${env['PATH'] ?? ''}`;
  env['npm_config_prefer_offline'] = 'true';
  env['npm_config_update_notifier'] = 'false';
  return new Promise((res) => {
    const child = args.length === 0 ? spawn('sh', ['-c', cmd], { cwd, env }) : spawn(cmd, args, { cwd, env });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('close', (code) => res({ code, out }));
  });
}

t.test('the Containerfile build stage, replayed, yields a kup that runs', { timeout: 600_000 }, async (t) => {
  const stages = parseStages(readFileSync(join(ROOT, 'Containerfile'), 'utf8'));
  const build = stages.find((s) => s.name !== null);
  const final = stages.at(-1);
  if (build === undefined || final === undefined || final === build) return t.fail('a named build stage and a final stage');

  const tmp = mkdtempSync(join(tmpdir(), 'kup-image-'));
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }));
  const src = join(tmp, 'src');
  const app = join(tmp, 'app');
  mkdirSync(src);
  mkdirSync(app);

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

  const buildDir = workdir(build);
  for (const c of copies(final)) {
    for (const s of c.sources) {
      const from = c.from === build.name ? join(src, relative(buildDir, isAbsolute(s) ? s : join(buildDir, s))) : join(ROOT, s);
      t.ok(existsSync(from), `${c.from === null ? 'context' : c.from}:${s} exists for the final stage`);
      if (existsSync(from)) copyInto(from, app, c.dest, c.sources.length > 1);
    }
  }
  t.notOk(existsSync(join(app, 'node_modules/typescript')), 'dev dependencies were pruned');

  const help = await run(NODE_BIN, app, [join(app, 'dist/bin/kup.js'), '--help']);
  t.equal(help.code, 0, 'kup --help exits 0 from the image tree', { output: help.out.slice(-2000) });
  t.match(help.out, /Usage: kup \[options\] \[command\]/, 'and prints the usage');
  t.match(help.out, /\brun\b/, 'naming the run command');
});
