import { KupError } from './errors.js';

/** Inclusive range of proxy ports; null means "let the kernel choose". */
export interface PortRange {
  readonly base: number;
  readonly size: number;
}

/**
 * kube-proxy's --proxy-port-range: "begin-end", "begin+offset", a single
 * port, or empty / "0" / "0-0" for kernel-chosen ports.
 */
export function parsePortRange(value: string): PortRange | null {
  const v = value.trim();
  if (v === '' || v === '0' || v === '0-0') return null;
  const bad = (why: string): KupError =>
    new KupError('KUP_BAD_FLAG', `--proxy-port-range: "${value}" ${why} (use BEGIN-END, BEGIN+OFFSET or a single port)`);
  const m = /^(\d+)(?:([-+])(\d+))?$/.exec(v);
  if (m === null) throw bad('is not a port range');
  const begin = Number(m[1]);
  let end = begin;
  if (m[2] === '-') end = Number(m[3]);
  else if (m[2] === '+') end = begin + Number(m[3]);
  if (begin < 1 || end > 65535) throw bad('is outside 1-65535');
  if (end < begin) throw bad('ends before it begins');
  return { base: begin, size: end - begin + 1 };
}
