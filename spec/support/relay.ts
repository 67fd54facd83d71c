/**
 * Which relay the data-plane suites run: KUP_TEST_RELAY=native runs them on
 * the native relay thread, anything else (default) on the TypeScript relay.
 * `.ci/run` runs the relay suites once each way. Asked for and missing, the
 * native relay fails the suite: it never silently falls back to the other.
 */
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
