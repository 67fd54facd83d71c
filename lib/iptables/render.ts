/**
 * Renders the service table into iptables-restore scripts. Pure: the same
 * table always gives the same text, so `kup rules` can print exactly what a
 * sync would apply and tests can pin it.
 *
 * Model: the legacy userspace proxier's portals (Kubernetes pkg/proxy/userspace),
 * with the KUP- prefix so a real kube-proxy's KUBE-* chains are never touched.
 *
 *   nat PREROUTING  -> KUP-PORTALS-CONTAINER  (prepended; virtual IPs, traffic arriving on the node)
 *   nat PREROUTING  -> KUP-NODEPORT-CONTAINER (appended; NodePorts, after every other portal)
 *   nat OUTPUT      -> KUP-PORTALS-HOST       (prepended; the node's own processes)
 *   nat OUTPUT      -> KUP-NODEPORT-HOST      (appended)
 *   filter INPUT    -> KUP-PROXY-PORTS        (prepended; per proxy port: REJECT when the service port has no
 *                                              endpoints at all, DROP when its listener's Local policy finds none
 *                                              on this node, else ACCEPT)
 *   filter INPUT, FORWARD, OUTPUT -> KUP-FIREWALL (prepended; loadBalancerSourceRanges: DROP, as upstream)
 *
 * Listeners (see ListenerScope): ClusterIP traffic goes to the internal one
 * (iTP), external traffic arriving on the node to the external one (eTP), and
 * the node's own traffic to external addresses, like pod traffic the local
 * detector catches for an eTP-Local service, to the one over all cluster
 * endpoints (clusterTrafficPort).
 *
 * Every value that reaches the text is validated here (addresses with
 * node:net, ports as integers in range); anything else is left out and
 * reported in `warnings`, so a malformed object can never inject a rule.
 */
import { familyName, HOST_PREFIX, isValidPort, joinHostPort, parseCidr, type FamilyName } from '../core/address.js';
import { isLoopbackIP, type NodePortIPs } from '../core/nodeport-addresses.js';
import { cidrContainsAddress, intersectCidrs, type LocalTrafficDetector } from '../core/local-detector.js';
import {
  clusterTrafficPort,
  externalEndpoints,
  internalEndpoints,
  isExternallyReachable,
  portLabel,
  type ProxyPortNumbers,
  type ServicePort,
  type ServicePortKey,
  type ServiceTable,
} from '../core/types.js';

export type RuleTable = 'nat' | 'filter';

export const CHAIN_PREFIX = 'KUP-';

export const CHAINS = {
  portalsContainer: 'KUP-PORTALS-CONTAINER',
  portalsHost: 'KUP-PORTALS-HOST',
  nodePortContainer: 'KUP-NODEPORT-CONTAINER',
  nodePortHost: 'KUP-NODEPORT-HOST',
  proxyPorts: 'KUP-PROXY-PORTS',
  firewall: 'KUP-FIREWALL',
} as const;

export type KupChain = (typeof CHAINS)[keyof typeof CHAINS];

const NAT_CHAINS: readonly KupChain[] = [CHAINS.portalsContainer, CHAINS.portalsHost, CHAINS.nodePortContainer, CHAINS.nodePortHost];
const FILTER_CHAINS: readonly KupChain[] = [CHAINS.proxyPorts, CHAINS.firewall];

/** The node's own addresses, per family: where host-originated traffic is DNATed when listeners are bound to a wildcard. */
export interface HostIPs {
  readonly ipv4?: string | null;
  readonly ipv6?: string | null;
}

export interface RenderInput {
  readonly table: ServiceTable;
  /** The listeners the data plane opened; a service port missing here gets no rules. */
  readonly proxyPorts: ReadonlyMap<ServicePortKey, ProxyPortNumbers>;
  /** The listeners' bind address: a wildcard ("0.0.0.0", "::") or one local address. */
  readonly bindAddress: string;
  readonly hostIPs?: HostIPs;
  /** The node's addresses that accept NodePorts (--nodeport-addresses resolved); null or absent: every local address. */
  readonly nodePortIPs?: NodePortIPs;
  /**
   * NodePorts at 127.0.0.0/8 for the node's own processes (IPv4 only, as
   * upstream); with nodePortIPs, only at the loopback addresses it holds.
   * Default true (kube-proxy's iptables mode).
   */
  readonly localhostNodePorts?: boolean;
  /** False where the kernel/iptables lacks the comment match: rules are then rendered without it. */
  readonly commentSupported: boolean;
  /** --detect-local-mode's detector; absent or null: pod traffic is not told apart. */
  readonly localDetector?: LocalTrafficDetector | null;
}

export interface RenderedRules {
  /** iptables-restore input, for `iptables-restore --noflush`. */
  readonly ipv4: string;
  /** ip6tables-restore input, for `ip6tables-restore --noflush`. */
  readonly ipv6: string;
  /** Number of rules (excluding chain declarations) per family, for logs and metrics. */
  readonly ruleCount: { readonly ipv4: number; readonly ipv6: number };
  /** What was left out and why (invalid addresses, missing listeners). */
  readonly warnings: readonly string[];
}

/** A rule in a built-in chain that sends traffic into one of ours. Applied with -C then -I/-A, never through restore, so it exists exactly once. */
export interface JumpRule {
  readonly table: RuleTable;
  readonly chain: 'PREROUTING' | 'OUTPUT' | 'INPUT' | 'FORWARD';
  readonly position: 'prepend' | 'append';
  readonly target: KupChain;
  /** Everything after the chain name, as argv (no shell quoting needed). */
  readonly args: readonly string[];
}

export const WILDCARD_ADDRESSES: ReadonlySet<string> = new Set(['', '0.0.0.0', '::', '[::]']);

const LOOPBACK: Record<FamilyName, string> = { ipv4: '127.0.0.1', ipv6: '::1' };
const LOOPBACK_NET: Record<FamilyName, string> = { ipv4: '127.0.0.0/8', ipv6: '::1/128' };
const MAX_COMMENT = 200;

/**
 * Names may hold quotes, spaces, `$(...)` or newlines (a file source does not
 * go through the API server's validation); the comment is reduced to a safe
 * alphabet so it can neither end the quoted argument nor start a new line of
 * the restore script.
 */
export function sanitizeComment(text: string): string {
  const safe = text.replace(/[^A-Za-z0-9_.:/-]/g, '_');
  return safe.length > MAX_COMMENT ? safe.slice(0, MAX_COMMENT) : safe;
}

function commentArgs(commentSupported: boolean, text: string): string[] {
  return commentSupported ? ['-m', 'comment', '--comment', sanitizeComment(text)] : [];
}

/** Quotes an argv element for restore-script text; only the comment can need it, and it is already sanitised. */
function quoteArg(arg: string): string {
  return /^[A-Za-z0-9_.:/!+\-[\]]+$/.test(arg) ? arg : `"${arg}"`;
}

export function formatArgs(args: readonly string[]): string {
  return args.map(quoteArg).join(' ');
}

/** The jump rules, the same for both families. */
export function jumpRules(commentSupported: boolean): readonly JumpRule[] {
  const jump = (table: RuleTable, chain: JumpRule['chain'], position: JumpRule['position'], target: KupChain, why: string): JumpRule => ({
    table,
    chain,
    position,
    target,
    args: [...commentArgs(commentSupported, why), '-j', target],
  });
  return [
    // Before any other PREROUTING rule, like the legacy proxier: a virtual IP must be caught before the NodePort rules see it.
    jump('nat', 'PREROUTING', 'prepend', CHAINS.portalsContainer, 'kup-service-portals'),
    jump('nat', 'OUTPUT', 'prepend', CHAINS.portalsHost, 'kup-service-portals'),
    // Last, so a virtual IP that happens to be local is handled by its portal first.
    jump('nat', 'PREROUTING', 'append', CHAINS.nodePortContainer, 'kup-nodeports'),
    jump('nat', 'OUTPUT', 'append', CHAINS.nodePortHost, 'kup-nodeports'),
    jump('filter', 'INPUT', 'prepend', CHAINS.proxyPorts, 'kup-proxy-ports'),
    jump('filter', 'INPUT', 'prepend', CHAINS.firewall, 'kup-lb-source-ranges'),
    jump('filter', 'FORWARD', 'prepend', CHAINS.firewall, 'kup-lb-source-ranges'),
    jump('filter', 'OUTPUT', 'prepend', CHAINS.firewall, 'kup-lb-source-ranges'),
  ];
}

/** A jump rule as an iptables command line (for `kup rules` and logs). */
export function formatJumpRule(j: JumpRule): string {
  return `-t ${j.table} ${j.position === 'prepend' ? '-I' : '-A'} ${j.chain} ${formatArgs(j.args)}`;
}

/**
 * True when the service port has no usable endpoint anywhere (of `family`,
 * when given): its traffic is rejected so clients fail at once. Per family
 * because each family's virtual IPs reach only that family's endpoints (as
 * kube-proxy's per-family proxiers), so a dual-stack Service whose pods have
 * only IPv4 addresses refuses IPv6 clients while serving IPv4 ones.
 */
export function hasNoEndpoints(sp: ServicePort, family?: FamilyName): boolean {
  const of = (eps: ServicePort['clusterEndpoints']): boolean =>
    family === undefined ? eps.length > 0 : eps.some((e) => familyName(e.ip) === family);
  return !of(sp.clusterEndpoints) && !of(sp.localEndpoints);
}

interface FamilyRules {
  nat: Map<KupChain, string[][]>;
  filter: Map<KupChain, string[][]>;
}

function emptyFamilyRules(): FamilyRules {
  return {
    nat: new Map(NAT_CHAINS.map((c) => [c, []])),
    filter: new Map(FILTER_CHAINS.map((c) => [c, []])),
  };
}

export function renderRules(input: RenderInput): RenderedRules {
  const warnings: string[] = [];
  const rules: Record<FamilyName, FamilyRules> = { ipv4: emptyFamilyRules(), ipv6: emptyFamilyRules() };

  const bind = input.bindAddress.trim();
  const wildcard = WILDCARD_ADDRESSES.has(bind);
  const bindFamily = wildcard ? null : familyName(bind);
  if (!wildcard && bindFamily === null) {
    warnings.push(`bind address ${JSON.stringify(bind)} is not an IP address; no rules rendered`);
    return serialize(rules, warnings);
  }

  const hostTarget = (family: FamilyName): string => {
    if (!wildcard) return bind;
    const configured = input.hostIPs?.[family] ?? null;
    return configured !== null && familyName(configured) === family ? configured : LOOPBACK[family];
  };

  const keys = [...input.table.keys()].sort();
  for (const key of keys) {
    const sp = input.table.get(key);
    if (sp === undefined) continue;
    const pp = input.proxyPorts.get(key);
    if (pp === undefined) {
      warnings.push(`${key}: no listener, no rules`);
      continue;
    }
    if (
      !isValidPort(pp.internal) ||
      (pp.external !== undefined && !isValidPort(pp.external)) ||
      (pp.cluster !== undefined && !isValidPort(pp.cluster)) ||
      !isValidPort(sp.port)
    ) {
      warnings.push(`${key}: invalid port number, no rules`);
      continue;
    }
    if (sp.nodePort !== 0 && !isValidPort(sp.nodePort)) {
      warnings.push(`${key}: invalid nodePort ${sp.nodePort} ignored`);
    }
    const internalPort = pp.internal;
    const externalPort = pp.external ?? pp.internal;
    const clusterPort = clusterTrafficPort(sp, pp);
    // Pod traffic to an external address short-circuits to all endpoints only
    // where eTP Local would otherwise narrow it (with Cluster it gets them anyway).
    const detector = sp.externalTrafficPolicy === 'Local' ? (input.localDetector ?? null) : null;
    const proto = sp.protocol === 'UDP' ? 'udp' : 'tcp';
    const comment = commentArgs(input.commentSupported, `${sp.namespace}/${sp.name}:${portLabel(sp)}`);
    const portMatch = ['-p', proto, '-m', proto, '--dport', String(sp.port)];

    const byFamily = (addrs: readonly string[], what: string): Record<FamilyName, string[]> => {
      const out: Record<FamilyName, string[]> = { ipv4: [], ipv6: [] };
      for (const a of addrs) {
        const f = familyName(a);
        if (f === null) warnings.push(`${key}: invalid ${what} ${JSON.stringify(a)} ignored`);
        else out[f].push(a);
      }
      return out;
    };
    const clusterIPs = byFamily(sp.clusterIPs, 'clusterIP');
    const externalIPs = byFamily(sp.externalIPs, 'externalIP');
    const lbIPs = byFamily(sp.loadBalancerIPs, 'load balancer IP');
    const sourceRanges: Record<FamilyName, string[]> = { ipv4: [], ipv6: [] };
    for (const r of sp.loadBalancerSourceRanges) {
      const parsed = parseCidr(r.trim());
      if (parsed === null) warnings.push(`${key}: invalid loadBalancerSourceRange ${JSON.stringify(r)} ignored`);
      else sourceRanges[parsed.family].push(parsed.cidr);
    }
    const restricted = sp.loadBalancerSourceRanges.length > 0;

    for (const family of ['ipv4', 'ipv6'] as const) {
      // A Service exists in the families of its clusterIPs (spec.ipFamilies):
      // kube-proxy's proxier of another family skips it whole, its NodePort,
      // externalIPs and load balancer IPs included (a single-stack IPv4
      // Service has no IPv6 NodePort).
      if (clusterIPs[family].length === 0) continue;
      if (bindFamily !== null && bindFamily !== family) {
        // A DNAT cannot change the family, and the listener exists only in the other one.
        if (clusterIPs[family].length + externalIPs[family].length + lbIPs[family].length > 0) {
          warnings.push(`${key}: ${family} addresses not proxied, listeners are bound to ${bind}`);
        }
        continue;
      }
      const fr = rules[family];
      const nat = (chain: KupChain, args: string[]): void => void fr.nat.get(chain)!.push(args);
      const hostPrefix = HOST_PREFIX[family];

      // Traffic arriving on the node. REDIRECT sends it to the incoming
      // interface's primary address; with a wildcard listener the reply then
      // leaves from that same address, which a UDP client needs. A listener
      // bound to one address does not hear the interface address, so it gets
      // a DNAT to exactly that address instead.
      const containerTarget = (port: number): string[] =>
        wildcard ? ['-j', 'REDIRECT', '--to-ports', String(port)] : ['-j', 'DNAT', '--to-destination', joinHostPort(bind, port)];
      // The node's own processes. REDIRECT of a locally generated packet lands
      // on loopback, and so would a DNAT to 127.0.0.1 / ::1: fine for TCP, but
      // a wildcard UDP socket answers from the address the route back to the
      // client picks (the client's own source, the node's address), so the
      // reply would not match the connection and a DNS client would drop it.
      // DNAT to the node's address makes the reply's source what conntrack
      // expects (the legacy proxier's "hostIP"). With a non-wildcard bind the
      // listener answers from its bound address, so DNAT there.
      const hostTargetArgs = (port: number): string[] => ['-j', 'DNAT', '--to-destination', joinHostPort(hostTarget(family), port)];

      // The source matches that catch this node's pods (none without a
      // detector). `range` narrows them to a loadBalancerSourceRange: a rule
      // carries one -s, so CIDRs are intersected.
      const podSources = (range: string | null): string[][] => {
        if (detector === null) return [];
        if (detector.kind === 'interface') return [['-i', detector.name, ...(range === null ? [] : ['-s', range])]];
        const cidrs = detector.cidrs.filter((c) => parseCidr(c)?.family === family);
        return (range === null ? cidrs : intersectCidrs(cidrs, range, family)).map((c) => ['-s', c]);
      };

      // `hostPort` serves the node's own traffic: to a ClusterIP it keeps iTP;
      // to an external address it is not external traffic and, as in
      // kube-proxy, goes to all cluster endpoints whatever iTP and eTP say.
      const portal = (dst: string, port: number, hostPort: number, extra: string[] = []): void => {
        const match = [...extra, '-d', `${dst}/${hostPrefix}`, ...comment, ...portMatch];
        nat(CHAINS.portalsContainer, [...match, ...containerTarget(port)]);
        nat(CHAINS.portalsHost, [...match, ...hostTargetArgs(hostPort)]);
      };
      /** An external address: pod traffic first (short-circuited), then everyone else to the external listener. */
      const externalPortal = (dst: string, range: string | null): void => {
        const rangeMatch = range === null ? [] : ['-s', range];
        for (const src of podSources(range)) {
          nat(CHAINS.portalsContainer, [...src, '-d', `${dst}/${hostPrefix}`, ...comment, ...portMatch, ...containerTarget(clusterPort)]);
        }
        portal(dst, externalPort, clusterPort, rangeMatch);
      };

      let hasRules = false;
      for (const ip of clusterIPs[family]) {
        portal(ip, internalPort, internalPort);
        hasRules = true;
      }
      for (const ip of externalIPs[family]) {
        externalPortal(ip, null);
        hasRules = true;
      }
      for (const ip of lbIPs[family]) {
        hasRules = true;
        if (!restricted) {
          externalPortal(ip, null);
          continue;
        }
        // Only sources in range are redirected; whatever is left still has the
        // load balancer IP as destination when it reaches the filter table,
        // and KUP-FIREWALL drops it there (as upstream: a blocked client sees
        // nothing). Ranges given only in the other family leave none for this
        // one: nothing is let through (safer than upstream, which then lets
        // everyone in).
        for (const range of sourceRanges[family]) externalPortal(ip, range);
        // Upstream's allowFromNode: when a node address is in range, traffic
        // whose source is the LB IP itself (a load balancer that hairpins
        // the node's own connection back) is let through too.
        const nodeIP = input.hostIPs?.[family] ?? null;
        const nodeInRange =
          nodeIP !== null && familyName(nodeIP) === family && sourceRanges[family].some((r) => cidrContainsAddress(r, nodeIP, family));
        if (nodeInRange) {
          portal(ip, externalPort, clusterPort, ['-s', `${ip}/${hostPrefix}`]);
        }
        fr.filter.get(CHAINS.firewall)!.push(['-d', `${ip}/${hostPrefix}`, ...comment, ...portMatch, '-j', 'DROP']);
      }
      if (isValidPort(sp.nodePort)) {
        hasRules = true;
        const npMatch = [...comment, '-p', proto, '-m', proto, '--dport', String(sp.nodePort)];
        const localhost = family === 'ipv4' && (input.localhostNodePorts ?? true);
        // The node's own traffic to 127.0.0.0/8 is DNATed to loopback (or the
        // bound address): the reply then leaves from the address conntrack
        // expects, so a connected UDP client accepts it (DNAT to the node's
        // address would have a wildcard socket answer from 127.0.0.1). Both
        // ends stay local, so unlike upstream (which DNATs to pod IPs and
        // needs route_localnet=1 plus a martian-packet DROP) no sysctl is
        // changed. Never matched in PREROUTING: a packet arriving from outside
        // addressed to 127/8 stays a martian the kernel drops.
        const loopbackArgs = (): string[] => ['-j', 'DNAT', '--to-destination', joinHostPort(wildcard ? LOOPBACK.ipv4 : bind, clusterPort)];
        const allowed = input.nodePortIPs?.[family] ?? null;
        if (allowed === null) {
          const local = ['-m', 'addrtype', '--dst-type', 'LOCAL'];
          const notLoopback = ['!', '-d', LOOPBACK_NET[family]];
          for (const src of podSources(null)) {
            nat(CHAINS.nodePortContainer, [...src, ...notLoopback, ...npMatch, ...local, ...containerTarget(clusterPort)]);
          }
          nat(CHAINS.nodePortContainer, [...notLoopback, ...npMatch, ...local, ...containerTarget(externalPort)]);
          if (localhost) nat(CHAINS.nodePortHost, ['-d', LOOPBACK_NET.ipv4, ...npMatch, ...loopbackArgs()]);
          // The node's own traffic uses all cluster endpoints (neither policy applies to it), as upstream.
          nat(CHAINS.nodePortHost, [...notLoopback, ...npMatch, ...local, ...hostTargetArgs(clusterPort)]);
        } else {
          // --nodeport-addresses: exactly the node's addresses it selects.
          for (const ip of allowed) {
            const dst = ['-d', `${ip}/${hostPrefix}`];
            if (isLoopbackIP(ip)) {
              if (localhost) nat(CHAINS.nodePortHost, [...dst, ...npMatch, ...loopbackArgs()]);
              continue;
            }
            for (const src of podSources(null))
              nat(CHAINS.nodePortContainer, [...src, ...dst, ...npMatch, ...containerTarget(clusterPort)]);
            nat(CHAINS.nodePortContainer, [...dst, ...npMatch, ...containerTarget(externalPort)]);
            nat(CHAINS.nodePortHost, [...dst, ...npMatch, ...hostTargetArgs(clusterPort)]);
          }
        }
      }

      if (hasRules) {
        // Redirected packets reach INPUT addressed to the proxy port itself, so
        // the proxy port is where an empty service is refused (whatever route
        // the virtual IP had) and where a restrictive INPUT policy is opened.
        for (const [port, verdict] of proxyPortVerdicts(sp, pp, clusterPort, family)) {
          const match = [...comment, '-p', proto, '-m', proto, '--dport', String(port)];
          const chain = fr.filter.get(CHAINS.proxyPorts)!;
          if (verdict === 'REJECT') chain.push([...match, ...rejectArgs(sp.protocol, family)]);
          else {
            // New connections only, as upstream's DROP sits in nat, which sees
            // only a connection's first packet: one already open (its local pod
            // now terminating, still finishing it) keeps flowing, and is accepted.
            if (verdict === 'DROP') chain.push([...match, '-m', 'conntrack', '--ctstate', 'NEW', '-j', 'DROP']);
            chain.push([...match, '-j', 'ACCEPT']);
          }
        }
      }
    }
  }
  return serialize(rules, warnings);
}

export type ProxyPortVerdict = 'ACCEPT' | 'DROP' | 'REJECT';

/**
 * What KUP-PROXY-PORTS does at each of a service port's proxy ports, as
 * upstream treats the traffic that reaches it: no endpoint anywhere is
 * REJECTed (the client learns at once, TestNoEndpointsReject); a listener
 * whose Local policy finds no endpoint on this node while there are some
 * elsewhere is DROPped (upstream's "has no local endpoints" DROP: the client
 * sees nothing); every other listener is ACCEPTed.
 */
export function proxyPortVerdicts(
  sp: ServicePort,
  pp: ProxyPortNumbers,
  clusterPort: number = clusterTrafficPort(sp, pp),
  family?: FamilyName,
): Map<number, ProxyPortVerdict> {
  const out = new Map<number, ProxyPortVerdict>();
  // Per family when given: each family's virtual IPs reach only that family's endpoints.
  const usable = (endpoints: ServicePort['clusterEndpoints']): boolean =>
    family === undefined ? endpoints.length > 0 : endpoints.some((e) => familyName(e.ip) === family);
  const verdict = (endpoints: ServicePort['clusterEndpoints']): ProxyPortVerdict =>
    hasNoEndpoints(sp, family) ? 'REJECT' : usable(endpoints) ? 'ACCEPT' : 'DROP';
  out.set(pp.internal, verdict(internalEndpoints(sp)));
  if (pp.external !== undefined) out.set(pp.external, verdict(externalEndpoints(sp)));
  if (isExternallyReachable(sp) && !out.has(clusterPort)) out.set(clusterPort, verdict(sp.clusterEndpoints));
  return out;
}

function rejectArgs(protocol: ServicePort['protocol'], family: FamilyName): string[] {
  if (protocol === 'TCP') return ['-j', 'REJECT', '--reject-with', 'tcp-reset'];
  return ['-j', 'REJECT', '--reject-with', family === 'ipv4' ? 'icmp-port-unreachable' : 'icmp6-port-unreachable'];
}

function serialize(rules: Record<FamilyName, FamilyRules>, warnings: string[]): RenderedRules {
  const one = (fr: FamilyRules): { text: string; count: number } => {
    const lines: string[] = [];
    let count = 0;
    for (const [table, chains] of [
      ['nat', fr.nat],
      ['filter', fr.filter],
    ] as const) {
      lines.push(`*${table}`);
      // Declaring a chain creates it, or flushes it when it exists, even with
      // --noflush: every sync rewrites our chains whole, which is what repairs
      // rules someone else removed.
      for (const chain of chains.keys()) lines.push(`:${chain} - [0:0]`);
      for (const [chain, list] of chains) {
        for (const args of list) {
          lines.push(`-A ${chain} ${formatArgs(args)}`);
          count++;
        }
      }
      lines.push('COMMIT');
    }
    return { text: lines.join('\n') + '\n', count };
  };
  const v4 = one(rules.ipv4);
  const v6 = one(rules.ipv6);
  return { ipv4: v4.text, ipv6: v6.text, ruleCount: { ipv4: v4.count, ipv6: v6.count }, warnings };
}

/**
 * From `iptables-save` output, the restore script that removes every trace of
 * the project: jumps into KUP- chains from any other chain, then the KUP-
 * chains themselves. Empty when there is nothing to remove, so cleanup is
 * idempotent and touches nothing on a clean node.
 */
export function renderCleanup(saveOutput: string): string {
  const out: string[] = [];
  let table: string | null = null;
  let ours: string[] = [];
  let deletes: string[] = [];
  const flush = (): void => {
    if (table !== null && (ours.length > 0 || deletes.length > 0)) {
      out.push(`*${table}`);
      out.push(...deletes);
      // Declaring flushes the chain (so no rule in it still references
      // another of ours), then it can be deleted.
      for (const c of ours) out.push(`:${c} - [0:0]`);
      for (const c of ours) out.push(`-X ${c}`);
      out.push('COMMIT');
    }
    ours = [];
    deletes = [];
  };
  for (const raw of saveOutput.split('\n')) {
    const line = raw.trimEnd();
    if (line.startsWith('*')) {
      flush();
      table = line.slice(1);
    } else if (line === 'COMMIT') {
      flush();
      table = null;
    } else if (table !== null && line.startsWith(`:${CHAIN_PREFIX}`)) {
      ours.push(line.slice(1).split(' ')[0]!);
    } else if (table !== null && line.startsWith('-A ')) {
      const chain = line.split(' ')[1] ?? '';
      if (!chain.startsWith(CHAIN_PREFIX) && new RegExp(`\\s-[jg] ${CHAIN_PREFIX}[A-Z0-9-]+(\\s|$)`).test(line)) {
        deletes.push(`-D ${line.slice(3)}`);
      }
    }
  }
  flush();
  return out.length === 0 ? '' : out.join('\n') + '\n';
}
