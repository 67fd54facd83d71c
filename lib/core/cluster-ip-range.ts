import type { V1Service } from '@kubernetes/client-node';
import { ipFamily, parseCidr } from './address.js';
import { KupError } from './errors.js';
import { asObject, asString, asStringArray, field } from './object-fields.js';

/** --service-cluster-ip-range (IPv4): where a file source finds addresses for Services that name none. */
export interface ServiceCIDR {
  readonly text: string;
  /** The network address as a 32-bit number. */
  readonly base: number;
  readonly size: number;
}

export const DEFAULT_SERVICE_CIDR = '10.96.0.0/12'; // kubeadm's default

function ipv4ToNumber(ip: string): number | undefined {
  if (ipFamily(ip) !== 4) return undefined;
  return ip.split('.').reduce((n, part) => n * 256 + Number(part), 0);
}

function numberToIPv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

export function parseServiceCIDR(flag: string, value: string): ServiceCIDR {
  const c = parseCidr(value.trim());
  const [addr = '', bitsText = ''] = c?.family === 'ipv4' ? c.cidr.split('/') : [];
  const ip = ipv4ToNumber(addr);
  const bits = Number(bitsText);
  if (ip === undefined || bits < 8 || bits > 30) {
    throw new KupError('KUP_BAD_FLAG', `${flag}: "${value}" is not an IPv4 CIDR from /8 to /30 (for example ${DEFAULT_SERVICE_CIDR})`);
  }
  const size = 2 ** (32 - bits);
  return { text: value.trim(), base: ip - (ip % size), size };
}

/** A Service that asks for a virtual IP but names none, as `kubectl create service --dry-run -o yaml` prints it. */
function wantsClusterIP(svc: V1Service): boolean {
  const spec = asObject(field(svc, 'spec'));
  if (spec === undefined || asString(spec['type']) === 'ExternalName') return false;
  return (spec['clusterIP'] === undefined || spec['clusterIP'] === '') && asStringArray(spec['clusterIPs']).length === 0;
}

function keyOf(svc: V1Service): string {
  return `${asString(field(svc, 'metadata', 'namespace')) ?? 'default'}/${asString(field(svc, 'metadata', 'name')) ?? ''}`;
}

/** FNV-1a: a fixed, fast hash, so a Service gets the same address on every node and every restart. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

export interface ClusterIPAssignment {
  readonly services: V1Service[];
  /** namespace/name -> address given, for every Service that got one. */
  readonly assigned: Map<string, string>;
  readonly warnings: string[];
}

/**
 * Gives each Service without a clusterIP an address from `cidr`, as an API
 * server would allocate one: a hash of namespace/name picks the start, the
 * next free address wins (addresses other Services name are taken). The
 * network address, the first host address (the API server keeps it for
 * `kubernetes.default`) and the broadcast address are never given. `previous`
 * keeps an address stable across reloads while it stays free.
 */
export function assignClusterIPs(
  services: readonly V1Service[],
  cidr: ServiceCIDR,
  previous: ReadonlyMap<string, string>,
): ClusterIPAssignment {
  const taken = new Set<string>();
  for (const svc of services)
    for (const ip of [...asStringArray([field(svc, 'spec', 'clusterIP')]), ...asStringArray(field(svc, 'spec', 'clusterIPs'))])
      taken.add(ip);
  const wanting = services.filter(wantsClusterIP);
  const assigned = new Map<string, string>();
  const warnings: string[] = [];
  if (wanting.length === 0) return { services: [...services], assigned, warnings };
  const usable = cidr.size - 3;
  const give = new Map<V1Service, string>();
  // Sorted, so the outcome does not depend on the order of the file.
  const order = [...wanting].sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : keyOf(a) > keyOf(b) ? 1 : 0));
  const pending: V1Service[] = [];
  for (const svc of order) {
    const prev = previous.get(keyOf(svc));
    if (prev !== undefined && !taken.has(prev) && inRange(prev, cidr)) {
      taken.add(prev);
      give.set(svc, prev);
    } else pending.push(svc);
  }
  for (const svc of pending) {
    const start = fnv1a(keyOf(svc)) % usable;
    let ip: string | undefined;
    for (let i = 0; i < usable; i++) {
      const candidate = numberToIPv4(cidr.base + 2 + ((start + i) % usable));
      if (!taken.has(candidate)) {
        ip = candidate;
        break;
      }
    }
    if (ip === undefined) {
      warnings.push(`Service ${keyOf(svc)}: no clusterIP and no free address left in --service-cluster-ip-range ${cidr.text}; skipped`);
      continue;
    }
    taken.add(ip);
    give.set(svc, ip);
  }
  const out = services.map((svc) => {
    const ip = give.get(svc);
    if (ip === undefined) return svc;
    assigned.set(keyOf(svc), ip);
    // The address joins resourceVersion: a Service whose address moves has changed.
    const rv = asString(field(svc, 'metadata', 'resourceVersion')) ?? '';
    return {
      ...svc,
      metadata: { ...svc.metadata, resourceVersion: `${rv}+clusterIP=${ip}` },
      spec: { ...svc.spec, clusterIP: ip, clusterIPs: [ip] },
    };
  });
  return { services: out, assigned, warnings };
}

function inRange(ip: string, cidr: ServiceCIDR): boolean {
  const n = ipv4ToNumber(ip);
  return n !== undefined && n >= cidr.base + 2 && n < cidr.base + cidr.size - 1;
}
