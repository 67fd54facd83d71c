import { isIP } from 'node:net';

export type IPFamily = 4 | 6;

/** The family of a literal IP address, or 0 when it is not one (hostnames, garbage, leading zeros). */
export function ipFamily(value: unknown): IPFamily | 0 {
  if (typeof value !== 'string' || value.length > 45) return 0;
  // Zone-scoped addresses (fe80::1%eth0) never name a service or an endpoint.
  if (value.includes('%')) return 0;
  return isIP(value) as IPFamily | 0;
}

// A string is only checked (no narrowing, so a failed check leaves it a string);
// an unknown field value that passes is known to be a string.
export function isValidIP(value: string): boolean;
export function isValidIP(value: unknown): value is string;
export function isValidIP(value: unknown): boolean {
  return ipFamily(value) !== 0;
}

/** A CIDR such as 10.0.0.0/8 or 2001:db8::/32; returns its family or 0. */
export function cidrFamily(value: unknown): IPFamily | 0 {
  if (typeof value !== 'string') return 0;
  const slash = value.indexOf('/');
  if (slash < 0) return 0;
  const family = ipFamily(value.slice(0, slash));
  if (family === 0) return 0;
  const bits = value.slice(slash + 1);
  if (!/^\d{1,3}$/.test(bits)) return 0;
  const n = Number(bits);
  return n <= (family === 4 ? 32 : 128) ? family : 0;
}

/**
 * A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; affinity and
 * display want the plain IPv4 address so one client is one client.
 */
export function normalizeClientIP(address: string | undefined): string {
  if (address === undefined) return '';
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

export function isValidPort(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 65535;
}
