import { KupError } from './errors.js';

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Parses a Go-style duration as kube-proxy's flags take them ("250ms", "30s",
 * "1m30s", "0"), returning milliseconds. A bare number means seconds.
 */
export function parseDuration(flag: string, value: string): number {
  const v = value.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return Math.round(Number(v) * 1000);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let consumed = 0;
  for (let m = re.exec(v); m !== null; m = re.exec(v)) {
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    consumed = re.lastIndex;
  }
  if (v === '' || consumed !== v.length) {
    throw new KupError('KUP_BAD_FLAG', `${flag}: "${value}" is not a duration (examples: 250ms, 30s, 1m30s)`);
  }
  return Math.round(total);
}
