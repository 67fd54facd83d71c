import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import t from 'tap';
import { parseStages as stages, type Stage } from './support/containerfile.js';

/**
 * No container engine runs here, so the Containerfile is checked by reading
 * it: two stages, the build one unprivileged, the final one Node 24 slim with
 * iptables, copying only the compiled package and its runtime dependencies.
 */
t.test('the Containerfile builds unprivileged and ships only the compiled package', async (t) => {
  const all = stages(await readFile(new URL('../../Containerfile', import.meta.url), 'utf8'));
  t.equal(all.length, 2, 'two stages');
  const [build, final] = all as [Stage, Stage];
  t.match(build.from, /node:24[-.\w]*slim/, 'build stage on Node 24 slim');
  const userAt = build.lines.findIndex((l) => /^USER\s+node\b/.test(l));
  const npmAt = build.lines.findIndex((l) => /^RUN\s+npm ci\b/.test(l));
  t.ok(userAt >= 0 && userAt < npmAt, 'npm ci runs as the unprivileged node user');
  t.match(build.lines.join('\n'), /npm prune --omit=dev/, 'dev dependencies are pruned before copying');
  t.match(
    build.lines.join('\n'),
    /apt-get install[^\n]*\bpython3 make g\+\+/,
    'the build stage has what node-gyp needs for the native relay',
  );
  t.match(build.lines.join('\n'), /npm run build:native/, 'the image fails to build rather than ship without its native relay');

  t.match(final.from, /node:24[-.\w]*slim/, 'final stage on Node 24 slim');
  t.match(final.lines.join('\n'), /apt-get install[^\n]*\biptables\b/, 'iptables installed');
  const copies = final.lines.filter((l) => /^COPY\b/.test(l)).map((l) => l.replace(/^COPY\s+/, '').split(/\s+/));
  const fromBuild = copies.filter((c) => c[0] === `--from=${build.name}`).map((c) => c[1]);
  t.same(
    fromBuild.sort(),
    ['/src/build/Release/kup_relay.node', '/src/dist/bin', '/src/dist/lib', '/src/node_modules', '/src/package.json'],
    'only the compiled package, its native relay and runtime deps',
  );
  t.notOk(
    fromBuild.some((p) => /spec|\.ts$|tsconfig/.test(p!)),
    'no tests or sources in the image',
  );
  const fromContext = copies.filter((c) => !c[0]!.startsWith('--from=')).map((c) => c[0]);
  for (const p of fromContext) t.ok(existsSync(new URL(`../../${p}`, import.meta.url)), `${p} exists in the build context`);
  t.match(
    final.lines.find((l) => l.startsWith('ENTRYPOINT')),
    /^ENTRYPOINT \["node",\s*"--disable-sigusr1",\s*"\/app\/dist\/bin\/kup\.js",\s*"run"\]$/,
    'entrypoint is kup run, with no inspector on SIGUSR1',
  );
  t.match(
    final.lines.join('\n'),
    /ln -s \/app\/dist\/bin\/kup\.js \/usr\/local\/bin\/kup/,
    'kup is on PATH (the DaemonSet runs `kup run ...`)',
  );
  t.notOk(
    final.lines.some((l) => /^USER\s+root/.test(l)),
    'no explicit root switch',
  );

  // What the build stage copies in must exist in a checkout.
  for (const l of build.lines.filter((x) => /^COPY\b/.test(x))) {
    const parts = l.replace(/^COPY\s+(--chown=\S+\s+)?/, '').split(/\s+/);
    for (const src of parts.slice(0, -1)) t.ok(existsSync(new URL(`../../${src}`, import.meta.url)), `build context has ${src}`);
  }
});
