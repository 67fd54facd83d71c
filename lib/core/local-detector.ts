/**
 * The local-traffic detector: how rules tell traffic from this node's pods
 * apart from other traffic arriving on the node (kube-proxy's
 * --detect-local-mode, pkg/proxy/util/localdetector.go). Upstream uses it to
 * send pod traffic to a Service's external addresses with
 * externalTrafficPolicy Local to all cluster endpoints ("short-circuit pod
 * traffic to the cluster chain"), since a pod reaching its own Service through
 * an LB IP expects an answer, not a drop. Pure: the renderer turns it into
 * `-s CIDR` or `-i IFACE` matches.
 */
import { parseCidr, type FamilyName } from './address.js';

export type LocalTrafficDetector =
  /** ClusterCIDR (--cluster-cidr) or NodeCIDR (the Node's spec.podCIDRs): sources inside are pods. */
  | { readonly kind: 'cidr'; readonly cidrs: readonly string[] }
  /** BridgeInterface (the bridge's name) or InterfaceNamePrefix ("veth+"): pod traffic arrives there. */
  | { readonly kind: 'interface'; readonly name: string };

/** Linux interface names: at most 15 bytes, no '/', no whitespace; kept to a safe alphabet since it reaches rule text. */
const INTERFACE_NAME = /^[A-Za-z0-9_.:@-]{1,15}$/;

export type DetectLocalModeName = 'ClusterCIDR' | 'NodeCIDR' | 'BridgeInterface' | 'InterfaceNamePrefix' | '';

export interface DetectorInput {
  readonly mode: DetectLocalModeName;
  readonly clusterCIDRs: readonly string[];
  /** The Node's spec.podCIDRs (spec.podCIDR when only that is set); null while the Node object is unknown. */
  readonly nodePodCIDRs: readonly string[] | null;
  readonly bridgeInterface: string;
  readonly interfaceNamePrefix: string;
}

/**
 * The detector a configuration gives, or null (no detection: pod traffic is
 * treated as external, as upstream does without one), with why when it is null
 * although a mode was asked for. As upstream, an empty mode means ClusterCIDR,
 * which without --cluster-cidr is no detection.
 */
export function localTrafficDetector(input: DetectorInput): { detector: LocalTrafficDetector | null; reason: string | null } {
  const mode = input.mode === '' ? 'ClusterCIDR' : input.mode;
  const cidrs = (list: readonly string[]): string[] => list.map((c) => parseCidr(c.trim())?.cidr ?? null).filter((c) => c !== null);
  switch (mode) {
    case 'ClusterCIDR': {
      const valid = cidrs(input.clusterCIDRs);
      if (valid.length > 0) return { detector: { kind: 'cidr', cidrs: valid }, reason: null };
      return { detector: null, reason: input.mode === '' ? null : 'detect-local-mode ClusterCIDR without --cluster-cidr' };
    }
    case 'NodeCIDR': {
      if (input.nodePodCIDRs === null)
        return { detector: null, reason: "detect-local-mode NodeCIDR: this node's Node object is not known" };
      const valid = cidrs(input.nodePodCIDRs);
      if (valid.length > 0) return { detector: { kind: 'cidr', cidrs: valid }, reason: null };
      return { detector: null, reason: "detect-local-mode NodeCIDR: this node's Node has no spec.podCIDRs" };
    }
    case 'BridgeInterface':
      if (input.bridgeInterface === '') return { detector: null, reason: 'detect-local-mode BridgeInterface without a bridge interface' };
      if (!INTERFACE_NAME.test(input.bridgeInterface))
        return {
          detector: null,
          reason: `detect-local-mode BridgeInterface: ${JSON.stringify(input.bridgeInterface)} is not an interface name`,
        };
      return { detector: { kind: 'interface', name: input.bridgeInterface }, reason: null };
    case 'InterfaceNamePrefix':
      if (input.interfaceNamePrefix === '')
        return { detector: null, reason: 'detect-local-mode InterfaceNamePrefix without an interface name prefix' };
      if (!INTERFACE_NAME.test(input.interfaceNamePrefix))
        return {
          detector: null,
          reason: `detect-local-mode InterfaceNamePrefix: ${JSON.stringify(input.interfaceNamePrefix)} is not an interface name prefix`,
        };
      return { detector: { kind: 'interface', name: `${input.interfaceNamePrefix}+` }, reason: null };
  }
}

/** An address as a number, for prefix comparisons (addresses are validated before they get here). */
function toBigInt(addr: string, family: FamilyName): bigint {
  if (family === 'ipv4') return addr.split('.').reduce((n, part) => (n << 8n) | BigInt(Number(part) & 255), 0n);
  let text = addr;
  // An embedded IPv4 tail (::ffff:1.2.3.4) is two groups.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4 !== null) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  return groups.reduce((n, g) => (n << 16n) | BigInt(parseInt(g, 16) & 0xffff), 0n);
}

function contains(outer: string, inner: string, family: FamilyName): boolean {
  const [oAddr = '', oLen = '0'] = outer.split('/');
  const [iAddr = '', iLen = '0'] = inner.split('/');
  if (Number(iLen) < Number(oLen)) return false;
  const shift = BigInt((family === 'ipv4' ? 32 : 128) - Number(oLen));
  return toBigInt(oAddr, family) >> shift === toBigInt(iAddr, family) >> shift;
}

/** True when `address` is inside `cidr` (both of `family`). */
export function cidrContainsAddress(cidr: string, address: string, family: FamilyName): boolean {
  return contains(cidr, `${address}/${family === 'ipv4' ? 32 : 128}`, family);
}

/**
 * The source CIDRs that are both pod traffic (`detector`) and inside
 * `range` (a loadBalancerSourceRange), for rules that may carry one `-s`:
 * two CIDRs intersect only when one holds the other, and then the
 * intersection is the narrower one.
 */
export function intersectCidrs(a: readonly string[], range: string, family: FamilyName): string[] {
  const out: string[] = [];
  for (const c of a) {
    if (contains(range, c, family)) out.push(c);
    else if (contains(c, range, family)) out.push(range);
  }
  return out;
}
