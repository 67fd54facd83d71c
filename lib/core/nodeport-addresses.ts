/**
 * Which of the node's addresses accept NodePorts (kube-proxy's
 * --nodeport-addresses / nodePortAddresses): unset means every local address
 * (the rules then match `addrtype LOCAL`); otherwise exactly the node's
 * addresses inside the CIDRs given, plus the node's primary IPs for the
 * keyword `primary` (kube-proxy >= 1.29). Pure: the shell lists the
 * addresses, this picks.
 */
import { familyName, parseCidr, type FamilyName } from './address.js';

/** The node's addresses that accept NodePorts, per family; null: every local address. */
export type NodePortIPs = { readonly ipv4: readonly string[]; readonly ipv6: readonly string[] } | null;

/** Keywords kup accepts besides CIDRs: primary (as upstream), localhost (127.0.0.0/8 and ::1/128), all (no restriction). */
export const NODEPORT_KEYWORDS: ReadonlySet<string> = new Set(['primary', 'localhost', 'all']);

const LOCALHOST_CIDRS = ['127.0.0.0/8', '::1/128'];

/** True for an address kube-proxy treats as localhost: 127.0.0.0/8 or ::1. */
export function isLoopbackIP(ip: string): boolean {
  const f = familyName(ip);
  if (f === 'ipv4') return ip.startsWith('127.');
  return f === 'ipv6' && ipBits(ip) === 1n;
}

/** The address as a number (IPv4 in 32 bits, IPv6 in 128); null when malformed. */
function ipBits(ip: string): bigint | null {
  const family = familyName(ip);
  if (family === 'ipv4') return v4Bits(ip);
  if (family !== 'ipv6') return null;
  let text = ip.replace(/%.*$/, '');
  // An embedded IPv4 tail (::ffff:10.0.0.1) becomes two hex groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4 !== null) {
    const n = v4Bits(v4[1]!);
    if (n === null) return null;
    text = `${text.slice(0, v4.index)}${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  if (groups.length !== 8) return null;
  return groups.reduce((acc, g) => (acc << 16n) | BigInt(`0x${g}`), 0n);
}

function v4Bits(ip: string): bigint | null {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) return null;
  return parts.reduce((acc, p) => (acc << 8n) | BigInt(p), 0n);
}

/** True when `ip` lies inside `cidr` (same family). */
export function cidrContains(cidr: string, ip: string): boolean {
  const c = parseCidr(cidr);
  if (c === null || familyName(ip) !== c.family) return false;
  const width = c.family === 'ipv4' ? 32n : 128n;
  const slash = c.cidr.indexOf('/');
  const len = BigInt(c.cidr.slice(slash + 1));
  const net = ipBits(c.cidr.slice(0, slash));
  const addr = ipBits(ip);
  if (net === null || addr === null) return false;
  const shift = width - len;
  return net >> shift === addr >> shift;
}

/**
 * The addresses that accept NodePorts. `spec` is --nodeport-addresses as
 * parsed (CIDRs and keywords, already validated), `local` every address the
 * node holds (loopback included), `primary` the node's primary IP per family.
 * Addresses are kept in the order the node lists them, each once.
 */
export function resolveNodePortIPs(
  spec: readonly string[],
  local: readonly string[],
  primary: { readonly ipv4?: string | null; readonly ipv6?: string | null },
): NodePortIPs {
  if (spec.length === 0 || spec.includes('all')) return null;
  const cidrs = spec.flatMap((s) => (s === 'localhost' ? LOCALHOST_CIDRS : s === 'primary' ? [] : [s]));
  const out: Record<FamilyName, string[]> = { ipv4: [], ipv6: [] };
  const add = (ip: string): void => {
    const f = familyName(ip);
    if (f !== null && !out[f].includes(ip)) out[f].push(ip);
  };
  if (spec.includes('primary')) {
    for (const ip of [primary.ipv4, primary.ipv6]) if (typeof ip === 'string') add(ip);
  }
  for (const ip of local) if (cidrs.some((c) => cidrContains(c, ip))) add(ip);
  return out;
}
