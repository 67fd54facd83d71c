/**
 * A machine where the native relay addon cannot be built still installs:
 * the install script (native/build.mjs, run by `npm ci`) says so in one line
 * and exits 0, and kup then runs its TypeScript relay (the run-time fallback is
 * tested in native-relay.test.ts). `npm run build:native` (KUP_NATIVE_STRICT=1,
 * what CI uses) fails instead, so CI never silently loses the addon.
 *
 * The build runs in a scratch copy of the project's build inputs (binding.gyp,
 * native/, package.json, node_modules linked), with a C compiler that always
 * fails: the repository's own build/ is never touched.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

const ROOT = new URL('../..', import.meta.url).pathname;
const NODE = process.execPath;

function scratchCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), 'kup-native-build-'));
  cpSync(join(ROOT, 'binding.gyp'), join(dir, 'binding.gyp'));
  cpSync(join(ROOT, 'package.json'), join(dir, 'package.json'));
  cpSync(join(ROOT, 'native'), join(dir, 'native'), { recursive: true });
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}

function build(dir: string, env: Record<string, string>): { status: number | null; out: string } {
  const r = spawnSync(NODE, [join(dir, 'native/build.mjs')], {
    cwd: dir,
    encoding: 'utf8',
    timeout: 120_000,
    // A compiler that always fails, whatever node-gyp's Makefile asks for.
    env: { ...process.env, CC: '/bin/false', CXX: '/bin/false', LINK: '/bin/false', ...env },
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

t.test('the addon cannot be built: install still succeeds, saying kup uses its TypeScript relay', async (t) => {
  const dir = scratchCopy();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = build(dir, {});
  t.equal(r.status, 0, 'the install script exits 0');
  t.match(r.out, /kup: native relay not built \(.+\); kup will use its TypeScript relay/);
  t.notMatch(r.out, /no Node headers found|node-gyp not found/, 'the build itself was attempted and failed');
  t.notOk(existsSync(join(dir, 'build/Release/kup_relay.node')), 'no addon was produced');
  t.notMatch(r.out, /^\s+at /m, 'no stack trace');
});

t.test('strict (npm run build:native, CI): the same failure fails the command', async (t) => {
  const dir = scratchCopy();
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = build(dir, { KUP_NATIVE_STRICT: '1' });
  t.equal(r.status, 1);
  t.match(r.out, /kup: native relay not built/);
});
