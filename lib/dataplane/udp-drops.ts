import { readFile } from 'node:fs/promises';
import { endianness } from 'node:os';

/**
 * The kernel's per-socket count of UDP datagrams it dropped (receive buffer
 * full, mostly): the "drops" column of /proc/net/udp and /proc/net/udp6, for
 * the network namespace kup runs in. Read when metrics or /status are asked
 * for, never per datagram.
 */
export type UdpDropTable = ReadonlyMap<string, number>;

/** The key a bound socket is found by: its canonical local address and port. */
export function udpSocketKey(address: string, port: number): string {
  return `${canonicalIP(address)}|${port}`;
}

export async function readUdpDrops(files: readonly string[] = ['/proc/net/udp', '/proc/net/udp6']): Promise<UdpDropTable> {
  const out = new Map<string, number>();
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, 'latin1');
    } catch {
      continue; // no IPv6 in this kernel, or no /proc: nothing to report
    }
    parseProcNetUdp(text, out);
  }
  return out;
}

/** Adds each socket of a /proc/net/udp{,6} text to `into` (summing sockets that share an address, as SO_REUSEPORT ones do). */
export function parseProcNetUdp(text: string, into: Map<string, number>): void {
  const lines = text.split('\n');
  for (let i = 1; i < lines.length; i++) {
    const f = lines[i]!.trim().split(/\s+/);
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
    if (f.length < 13) continue;
    const [addrHex, portHex] = f[1]!.split(':');
    const drops = Number(f[f.length - 1]);
    if (addrHex === undefined || portHex === undefined || !Number.isFinite(drops)) continue;
    const address = decodeProcAddress(addrHex);
    if (address === null) continue;
    const key = `${address}|${parseInt(portHex, 16)}`;
    into.set(key, (into.get(key) ?? 0) + drops);
  }
}

/** The kernel prints each 32-bit word of the address in host byte order. */
function decodeProcAddress(hex: string): string | null {
  if (hex.length !== 8 && hex.length !== 32) return null;
  const bytes = Buffer.from(hex, 'hex');
  if (endianness() === 'LE') for (let w = 0; w < bytes.length; w += 4) bytes.subarray(w, w + 4).reverse();
  if (bytes.length === 4) return bytes.join('.');
  const groups: string[] = [];
  for (let g = 0; g < 16; g += 2) groups.push(bytes.readUInt16BE(g).toString(16));
  return canonicalIP(groups.join(':'));
}

/** One spelling per address (IPv6 compressed, lower case), so both sides compare equal. */
function canonicalIP(address: string): string {
  if (!address.includes(':')) return address;
  try {
    return new URL(`http://[${address.replace(/%.*$/, '')}]/`).hostname.slice(1, -1);
  } catch {
    return address;
  }
}
