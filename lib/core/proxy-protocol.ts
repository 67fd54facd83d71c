import { isIPv4, isIPv6 } from 'node:net';
import { normalizeClientIP } from './address.js';

/**
 * The PROXY protocol (haproxy's doc/proxy-protocol.txt): a header a proxy
 * writes to its backend before any payload, naming the original client and
 * the address it connected to. A userspace proxy opens its own connection to
 * the endpoint, so without it every backend sees the node as the client.
 */

export type ProxyProtocolVersion = 'v1' | 'v2';

/** The Service annotation that turns it on, towards every endpoint of its TCP ports. */
export const PROXY_PROTOCOL_ANNOTATION = 'kup.dev/proxy-protocol';

/** The annotation's value, or why it is refused. */
export function parseProxyProtocol(value: string | undefined): ProxyProtocolVersion | null | { error: string } {
  if (value === undefined) return null;
  if (value === 'v1' || value === 'v2') return value;
  return { error: `${PROXY_PROTOCOL_ANNOTATION} ${JSON.stringify(value)} is not v1 or v2` };
}

/** The 12-byte v2 signature: \r\n\r\n\0\r\nQUIT\n. */
export const V2_SIGNATURE: Buffer = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);

/** Both ends of the client's connection to the proxy. */
export interface ProxiedConnection {
  readonly sourceAddress: string;
  readonly sourcePort: number;
  readonly destinationAddress: string;
  readonly destinationPort: number;
}

/**
 * The header for one connection. Node reports IPv4 peers of a dual-stack
 * socket as ::ffff:a.b.c.d; they are IPv4 clients and are sent as such. When
 * the two ends are of different families (cannot happen on one TCP socket,
 * but the addresses are the caller's), or either is not an address, the
 * header says UNKNOWN / LOCAL: the backend then uses the real connection's.
 */
export function proxyProtocolHeader(version: ProxyProtocolVersion, conn: ProxiedConnection): Buffer {
  const src = normalizeClientIP(conn.sourceAddress);
  const dst = normalizeClientIP(conn.destinationAddress);
  const family = isIPv4(src) && isIPv4(dst) ? 4 : isIPv6(src) && isIPv6(dst) ? 6 : 0;
  return version === 'v1' ? headerV1(family, src, dst, conn) : headerV2(family, src, dst, conn);
}

function headerV1(family: 0 | 4 | 6, src: string, dst: string, conn: ProxiedConnection): Buffer {
  if (family === 0) return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
  return Buffer.from(`PROXY TCP${family} ${src} ${dst} ${conn.sourcePort} ${conn.destinationPort}\r\n`, 'latin1');
}

function headerV2(family: 0 | 4 | 6, src: string, dst: string, conn: ProxiedConnection): Buffer {
  const addrLen = family === 4 ? 12 : family === 6 ? 36 : 0;
  const out = Buffer.alloc(16 + addrLen);
  V2_SIGNATURE.copy(out, 0);
  // Version 2; command PROXY (0x1), or LOCAL (0x0) when there is nothing to say.
  out[12] = family === 0 ? 0x20 : 0x21;
  // AF_INET (0x1) / AF_INET6 (0x2), STREAM (0x1).
  out[13] = family === 4 ? 0x11 : family === 6 ? 0x21 : 0x00;
  out.writeUInt16BE(addrLen, 14);
  if (family === 0) return out;
  const size = family === 4 ? 4 : 16;
  writeAddress(out, 16, src, family);
  writeAddress(out, 16 + size, dst, family);
  out.writeUInt16BE(conn.sourcePort, 16 + 2 * size);
  out.writeUInt16BE(conn.destinationPort, 18 + 2 * size);
  return out;
}

function writeAddress(out: Buffer, at: number, ip: string, family: 4 | 6): void {
  if (family === 4) {
    const parts = ip.split('.');
    for (let i = 0; i < 4; i++) out[at + i] = Number(parts[i]);
    return;
  }
  const groups = ipv6Groups(ip);
  for (let i = 0; i < 8; i++) out.writeUInt16BE(groups[i] ?? 0, at + 2 * i);
}

/** The eight 16-bit groups of a valid IPv6 address (:: expanded, a dotted IPv4 tail and a %zone allowed). */
function ipv6Groups(ip: string): number[] {
  const bare = ip.split('%')[0] ?? ip;
  const [head = '', tail] = bare.split('::') as [string, string | undefined];
  const parse = (s: string): number[] => {
    if (s === '') return [];
    const out: number[] = [];
    for (const part of s.split(':')) {
      if (part.includes('.')) {
        const b = part.split('.').map(Number);
        out.push(((b[0] ?? 0) << 8) | (b[1] ?? 0), ((b[2] ?? 0) << 8) | (b[3] ?? 0));
      } else out.push(parseInt(part, 16));
    }
    return out;
  };
  const h = parse(head);
  if (tail === undefined) return h;
  const t = parse(tail);
  return [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
}
