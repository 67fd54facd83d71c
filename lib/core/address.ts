/**
 * The one place addresses are read and written: IP family, CIDRs, ports and
 * host:port text (Go's net.JoinHostPort / SplitHostPort, which the legacy
 * proxier uses everywhere). Pure: node:net's isIP is a parser, no I/O.
 */
import { isIP } from 'node:net';

export type IPFamily = 4 | 6;

/** A family as a key of per-family records (rules, binaries, node addresses). */
export type FamilyName = 'ipv4' | 'ipv6';

/** The family of a literal IP address, or 0 when it is not one (hostnames, garbage, leading zeros). */
export function ipFamily(value: unknown): IPFamily | 0 {
  if (typeof value !== 'string' || value.length > 45) return 0;
  // Zone-scoped addresses (fe80::1%eth0) never name a service or an endpoint, and have no place in a rule.
  if (value.includes('%')) return 0;
  return isIP(value) as IPFamily | 0;
}

/** ipFamily as a record key; null when `value` is not an IP address. */
export function familyName(value: unknown): FamilyName | null {
  const f = ipFamily(value);
  return f === 4 ? 'ipv4' : f === 6 ? 'ipv6' : null;
}

// A string is only checked (no narrowing, so a failed check leaves it a string);
// an unknown field value that passes is known to be a string.
export function isValidIP(value: string): boolean;
export function isValidIP(value: unknown): value is string;
export function isValidIP(value: unknown): boolean {
  return ipFamily(value) !== 0;
}

/** True when `a` and `b` are one address, however spelt (2001:db8::1 = 2001:DB8:0::1), as the kernel compares them. */
export function sameIP(a: string, b: string): boolean {
  // The WHATWG URL parser writes an IPv6 host in its one canonical form.
  if (ipFamily(a) === 6 && ipFamily(b) === 6) return new URL(`http://[${a}]`).hostname === new URL(`http://[${b}]`).hostname;
  return a === b;
}

/** The longest prefix of each family: a single address. */
export const HOST_PREFIX: Readonly<Record<FamilyName, number>> = { ipv4: 32, ipv6: 128 };

export interface Cidr {
  readonly family: FamilyName;
  /** The CIDR as written, its prefix length without leading zeros. */
  readonly cidr: string;
}

/** "a.b.c.d/n" or "x::/n" validated for its family; null when malformed. */
export function parseCidr(value: unknown): Cidr | null {
  if (typeof value !== 'string') return null;
  const slash = value.indexOf('/');
  if (slash < 0) return null;
  const addr = value.slice(0, slash);
  const bits = value.slice(slash + 1);
  const family = familyName(addr);
  if (family === null || !/^\d{1,3}$/.test(bits)) return null;
  const len = Number(bits);
  return len <= HOST_PREFIX[family] ? { family, cidr: `${addr}/${len}` } : null;
}

/** A CIDR such as 10.0.0.0/8 or 2001:db8::/32; returns its family or 0. */
export function cidrFamily(value: unknown): IPFamily | 0 {
  const c = parseCidr(value);
  return c === null ? 0 : c.family === 'ipv4' ? 4 : 6;
}

/**
 * A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; affinity and
 * display want the plain IPv4 address so one client is one client.
 */
export function normalizeClientIP(address: string | undefined): string {
  if (address === undefined) return '';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/**
 * The family of a connection as a socket reports its address: a dual-stack
 * socket shows an IPv4 peer (and local address) as ::ffff:a.b.c.d, which is
 * IPv4 traffic. No parse: a socket's address is well-formed, and IPv6 text
 * holds a dot only in that embedded-IPv4 form. 0 when there is no address
 * (the socket is already gone).
 */
export function socketAddressFamily(address: string | undefined): IPFamily | 0 {
  if (address === undefined || address === '') return 0;
  return address.includes('.') ? 4 : 6;
}

/** A port a packet can name: 1..65535 (0 means "kernel-chosen" and is allowed only where a caller says so). */
// As isValidIP: a number is only checked, an unknown field value is narrowed.
export function isValidPort(value: number): boolean;
export function isValidPort(value: unknown): value is number;
export function isValidPort(value: unknown): boolean {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 65535;
}

/** host:port, with an IPv6 host in brackets ([fd00::1]:80), as net.JoinHostPort. */
export function joinHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * "IP:PORT" or "[IPv6]:PORT" split apart, as net.SplitHostPort; null unless
 * the host is an IP address and the port 0..65535 in decimal.
 */
export function splitHostPort(text: string): { host: string; port: number } | null {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  if (m === null) return null;
  const host = m[1] ?? m[2] ?? '';
  const port = Number(m[3]);
  return isValidIP(host) && port <= 65535 ? { host, port } : null;
}

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** http://host:port, for people and `kup status --server`; a wildcard host is shown as loopback. */
export function hostUrl(a: HostPort): string {
  const host = a.host === '0.0.0.0' ? '127.0.0.1' : a.host === '::' ? '::1' : a.host;
  return `http://${joinHostPort(host, a.port)}`;
}
