/**
 * The node's own address per family: the DNAT target for host-originated
 * traffic (see render.ts for why loopback does not do for UDP). Like the
 * legacy proxier's ChooseHostInterface: the address of the interface holding
 * the default route, else the first global address, else none (loopback is
 * then used, which still serves TCP).
 */
import { readFile } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import type { FamilyName } from '../core/address.js';
import type { HostIPs } from './render.js';

async function defaultRouteInterface(family: FamilyName): Promise<string | null> {
  try {
    if (family === 'ipv4') {
      // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
      const text = await readFile('/proc/net/route', 'utf8');
      for (const line of text.split('\n').slice(1)) {
        const f = line.trim().split(/\s+/);
        if (f.length > 7 && f[1] === '00000000' && f[7] === '00000000') return f[0]!;
      }
    } else {
      // dest prefixlen src srcprefixlen nexthop metric refcnt use flags iface
      const text = await readFile('/proc/net/ipv6_route', 'utf8');
      for (const line of text.split('\n')) {
        const f = line.trim().split(/\s+/);
        if (f.length >= 10 && /^0{32}$/.test(f[0]!) && f[1] === '00' && f[9] !== 'lo') return f[9]!;
      }
    }
  } catch {
    // no procfs: fall through to the first global address
  }
  return null;
}

function usable(family: FamilyName, address: string, internal: boolean): boolean {
  if (internal) return false;
  if (family === 'ipv6') return !/^fe80:/i.test(address);
  return !address.startsWith('169.254.');
}

export async function detectHostIPs(): Promise<HostIPs> {
  const ifaces = networkInterfaces();
  const pick = async (family: FamilyName): Promise<string | null> => {
    const wanted = family === 'ipv4' ? 'IPv4' : 'IPv6';
    const preferred = await defaultRouteInterface(family);
    const order = preferred !== null ? [preferred, ...Object.keys(ifaces).filter((n) => n !== preferred)] : Object.keys(ifaces);
    for (const name of order) {
      for (const a of ifaces[name] ?? []) {
        if (a.family === wanted && usable(family, a.address, a.internal)) return a.address;
      }
    }
    return null;
  };
  return { ipv4: await pick('ipv4'), ipv6: await pick('ipv6') };
}

/** Every address the node holds now, loopback included: what --nodeport-addresses selects from. */
export function localAddresses(): string[] {
  return Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((a) => a.address.replace(/%.*$/, '')));
}
