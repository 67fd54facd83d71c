import { KupError } from './errors.js';

/**
 * `kup run --expose-on-loopback`: every Service gets its own loopback address,
 * so each of its ports can listen at its real number (web.default:80) on a
 * laptop without iptables. The address comes from the Service's name alone,
 * so it is the same after a restart and the hosts-file block stays valid.
 */

/**
 * 127.1.0.1 – 127.254.255.254: inside 127.0.0.0/8 (every address of which is
 * local on Linux), away from 127.0.0.0/16 (127.0.0.1, 127.0.0.53 and other
 * well-known ones) and from 127.255.255.255, and with no .0 or .255 last
 * octet, which some tools read as network or broadcast addresses.
 */
const SECOND = 254; // 1..254
const THIRD = 256; // 0..255
const FOURTH = 254; // 1..254
export const LOOPBACK_SLOTS = SECOND * THIRD * FOURTH;

/** FNV-1a, 32 bits: small, pure and the same on every platform and Node version. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

function slotAddress(slot: number): string {
  const fourth = (slot % FOURTH) + 1;
  const rest = Math.floor(slot / FOURTH);
  const third = rest % THIRD;
  const second = Math.floor(rest / THIRD) + 1;
  return `127.${second}.${third}.${fourth}`;
}

/**
 * The loopback address of Service `namespace/name`, given the addresses other
 * Services hold now (`taken`). Without a collision (about one in 16.5 million
 * per pair) it depends on the name only; on one, the next probe (a hash of the
 * name and the attempt number) is taken, so only colliding Services depend on
 * which of them came first.
 */
export function loopbackAddressFor(namespace: string, name: string, taken: ReadonlySet<string> = new Set()): string {
  const base = fnv1a(`${namespace}/${name}`) % LOOPBACK_SLOTS;
  for (let attempt = 0; attempt < 64; attempt++) {
    const slot = attempt === 0 ? base : fnv1a(`${namespace}/${name}#${attempt}`) % LOOPBACK_SLOTS;
    const address = slotAddress(slot);
    if (!taken.has(address)) return address;
  }
  // Only when millions of addresses are taken: the next free one after the first choice.
  for (let i = 1; i < LOOPBACK_SLOTS; i++) {
    const address = slotAddress((base + i) % LOOPBACK_SLOTS);
    if (!taken.has(address)) return address;
  }
  throw new KupError('KUP_LISTEN_FAILED', `no loopback address left for Service ${namespace}/${name}`);
}

/** The names a Service answers to in the cluster's DNS, for the hosts-file line. */
export function hostsLine(address: string, namespace: string, name: string, clusterDomain = 'cluster.local'): string {
  const short = `${name}.${namespace}`;
  return `${address} ${short} ${short}.svc ${short}.svc.${clusterDomain}`;
}

/**
 * The block to paste into /etc/hosts for the Services exposed on loopback,
 * sorted by namespace and name so that it reads the same after a restart.
 */
export function hostsBlock(services: Iterable<{ readonly namespace: string; readonly name: string; readonly address: string }>): string {
  const lines = [...services]
    .sort((a, b) => (a.namespace === b.namespace ? cmp(a.name, b.name) : cmp(a.namespace, b.namespace)))
    .map((s) => hostsLine(s.address, s.namespace, s.name));
  return `# kup --expose-on-loopback: add to /etc/hosts\n${lines.join('\n')}${lines.length > 0 ? '\n' : ''}`;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
