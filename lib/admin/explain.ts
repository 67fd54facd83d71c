import { familyName, HOST_PREFIX, type FamilyName, isValidPort, joinHostPort, sameIP, splitHostPort } from '../core/address.js';
import { KupError } from '../core/errors.js';
import type { Protocol } from '../core/types.js';
import type { EndpointStatus, ServiceStatus, StatusDocument } from './status.js';

/** What `kup explain` is asked about. protocol null: either. */
export interface Destination {
  readonly ip: string;
  readonly port: number;
  readonly protocol: Protocol | null;
}

/** Parses IP:PORT[/tcp|udp] (IPv6 as [IP]:PORT). */
export function parseDestination(text: string): Destination {
  const m = /^(.*?)(?:\/(tcp|udp))?$/i.exec(text.trim());
  const hp = m === null ? null : splitHostPort(m[1] ?? '');
  if (m === null || hp === null || !isValidPort(hp.port)) {
    throw new KupError('KUP_BAD_FLAG', `"${text}" is not IP:PORT[/tcp|udp] (for example 10.96.0.10:53/udp or [fd00::10]:80)`);
  }
  const proto = m[2]?.toUpperCase();
  return { ip: hp.host, port: hp.port, protocol: proto === 'TCP' || proto === 'UDP' ? proto : null };
}

export type MatchKind = 'ClusterIP' | 'externalIP' | 'LoadBalancer IP' | 'NodePort' | 'proxy port';

export interface PathMatch {
  readonly kind: MatchKind;
  readonly service: ServiceStatus;
  /** The chains that steer it, as the rules are laid out (empty: no rule involved). */
  readonly chains: readonly string[];
  /** The match part of the rule, iptables-style. */
  readonly rule: string;
  /** Which listener receives it ('cluster': the one over all usable endpoints, for the node's own traffic). */
  readonly scope: 'internal' | 'external' | 'cluster';
  readonly listenerPort: number | null;
  readonly endpoints: readonly EndpointStatus[];
  readonly next: string | null;
  readonly notes: readonly string[];
}

export interface Explanation {
  readonly destination: Destination;
  readonly matches: readonly PathMatch[];
  /** Why nothing matched, when something came close (right IP, wrong port or protocol). */
  readonly misses: readonly string[];
}

function protoOk(d: Destination, s: ServiceStatus): boolean {
  return d.protocol === null || d.protocol === s.protocol;
}

function dst(ip: string): string {
  return `-d ${ip}/${HOST_PREFIX[familyName(ip) ?? 'ipv4']}`;
}

/** Usable somewhere in the cluster (what clusterEndpoints is made of): ready, else serving while terminating. */
function usable(e: EndpointStatus): boolean {
  return e.ready || (e.serving && e.terminating);
}

/**
 * What happens to traffic whose listener has `inPlay` endpoints, as the
 * filter rules (KUP-PROXY-PORTS) decide it; see render.ts proxyPortVerdicts.
 */
function verdictNote(s: ServiceStatus, inPlay: number, policy: string | null, family: FamilyName | null): string | null {
  if (inPlay > 0) return null;
  const elsewhere = s.endpoints.filter((e) => usable(e) && (family === null || familyName(e.ip) === family)).length;
  if (elsewhere === 0) {
    return s.protocol === 'TCP'
      ? 'no usable endpoint anywhere: connections are refused at once (TCP reset)'
      : 'no usable endpoint anywhere: datagrams are refused at once (ICMP port unreachable)';
  }
  return `${policy ?? 'the traffic policy'} Local and no endpoint on this node (${elsewhere} elsewhere): packets are dropped, the client gets no answer and times out (as kube-proxy)`;
}

function familyLabel(f: FamilyName): string {
  return f === 'ipv4' ? 'IPv4' : 'IPv6';
}

/**
 * Null when the Service has rules in the family of `ip`; else why not: rules
 * exist only in the families of its clusterIPs (kube-proxy's proxier of the
 * other family skips the Service whole).
 */
function otherFamily(s: ServiceStatus, ip: string, what: string): string | null {
  const f = familyName(ip);
  if (f === null || s.clusterIPs.some((c) => familyName(c) === f)) return null;
  return `${what} of ${s.name}, a single-stack ${familyLabel(f === 'ipv4' ? 'ipv6' : 'ipv4')} Service: it has no ${familyLabel(f)} rules, so kup does not touch this traffic`;
}

function match(kind: MatchKind, s: ServiceStatus, d: Destination, notes: string[] = []): PathMatch {
  const external = kind !== 'ClusterIP' && kind !== 'proxy port' ? true : false;
  const useExternalListener = external && s.externalProxyPort !== null;
  const proto = s.protocol.toLowerCase();
  let chains: string[];
  let rule: string;
  if (kind === 'NodePort') {
    chains = ['KUP-NODEPORT-CONTAINER', 'KUP-NODEPORT-HOST'];
    // Loopback is excluded here: it has rules of its own (loopbackNodePort).
    const loopback = familyName(d.ip) === 'ipv6' ? '::1/128' : '127.0.0.0/8';
    rule = `! -d ${loopback} -p ${proto} -m ${proto} --dport ${s.nodePort} -m addrtype --dst-type LOCAL`;
  } else if (kind === 'proxy port') {
    chains = [];
    rule = 'none: addressed straight to the listener';
  } else {
    chains = ['KUP-PORTALS-CONTAINER', 'KUP-PORTALS-HOST'];
    rule = `${dst(d.ip)} -p ${proto} -m ${proto} --dport ${s.portNumber}`;
  }
  // One family per virtual IP: a connection to an address of one family
  // reaches only endpoints of that family (an exposed listener serves no
  // virtual IP and picks among all).
  const family = kind === 'proxy port' && s.exposedAt !== null ? null : familyName(d.ip);
  const ofFamily = <E extends EndpointStatus>(eps: readonly E[]): E[] =>
    family === null ? [...eps] : eps.filter((e) => familyName(e.ip) === family);
  const inPlay = s.endpoints.filter((e) => (external ? e.inUseExternal : e.inUse));
  const endpoints = ofFamily(inPlay);
  let next = external ? s.externalNextEndpoint : s.nextEndpoint;
  // /status tells the next pick of one family (the client's, else the primary clusterIP's).
  if (next !== null && !endpoints.some((e) => joinHostPort(e.ip, e.port) === next)) next = null;
  const policy = external ? 'externalTrafficPolicy' : 'internalTrafficPolicy';
  const local = external ? s.externalTrafficPolicy === 'Local' : s.internalTrafficPolicy === 'Local';
  if (local) notes.push(`${policy} Local: only endpoints on this node`);
  const verdict = verdictNote(s, endpoints.length, local ? policy : null, family);
  if (verdict !== null) notes.push(verdict);
  if (endpoints.length === 0 && inPlay.length > 0 && family !== null)
    notes.push(`no ${familyLabel(family)} endpoint: each family reaches only its own endpoints (one family per virtual IP, as kube-proxy)`);
  if (external) {
    const all = ofFamily(s.endpoints.filter(usable)).length;
    // The node's own traffic to an external address: neither policy applies (upstream); see render.ts.
    const nodePort = clusterListenerPort(s);
    if (s.internalTrafficPolicy === 'Local' || s.externalTrafficPolicy === 'Local') {
      notes.push(
        `from this node (KUP-*-HOST): all ${all} usable endpoint(s) of the cluster, neither traffic policy applies${nodePort === null ? '' : ` (listener :${nodePort})`}`,
      );
    }
    if (s.externalTrafficPolicy === 'Local') {
      notes.push("from this node's pods, when --detect-local-mode tells them apart: all usable endpoints of the cluster too");
    }
    if (kind === 'LoadBalancer IP' && s.loadBalancerSourceRanges.length > 0) {
      notes.push(
        `loadBalancerSourceRanges ${s.loadBalancerSourceRanges.join(', ')}: other sources are dropped (KUP-FIREWALL), they get no answer`,
      );
    }
  }
  return {
    kind,
    service: s,
    chains,
    rule,
    scope: useExternalListener ? 'external' : 'internal',
    listenerPort: useExternalListener ? s.externalProxyPort : s.proxyPort,
    endpoints,
    next,
    notes,
  };
}

/** The listener the node's own traffic to an external address (or a localhost NodePort) lands on: all usable endpoints. */
function clusterListenerPort(s: ServiceStatus): number | null {
  return s.clusterProxyPort ?? (s.internalTrafficPolicy === 'Cluster' ? s.proxyPort : (s.externalProxyPort ?? s.proxyPort));
}

/**
 * A NodePort at 127.0.0.0/8 is only ever the node's own traffic: render.ts
 * DNATs it in KUP-NODEPORT-HOST to the listener over all usable endpoints
 * (PREROUTING excludes loopback), so neither traffic policy applies and a
 * Local policy's DROP never meets it.
 */
function loopbackNodePort(s: ServiceStatus, notes: string[]): PathMatch {
  const proto = s.protocol.toLowerCase();
  const endpoints = s.endpoints.filter((e) => usable(e) && familyName(e.ip) === 'ipv4');
  const listenerPort = clusterListenerPort(s);
  // /status knows the next pick of the internal and external listeners only.
  const known = listenerPort === s.proxyPort ? s.nextEndpoint : listenerPort === s.externalProxyPort ? s.externalNextEndpoint : null;
  const next = known !== null && endpoints.some((e) => joinHostPort(e.ip, e.port) === known) ? known : null;
  const all = `from this node only: all ${endpoints.length} usable endpoint(s) of the cluster, neither traffic policy applies`;
  const verdict = verdictNote(s, endpoints.length, null, 'ipv4');
  return {
    kind: 'NodePort',
    service: s,
    chains: ['KUP-NODEPORT-HOST'],
    rule: `-d 127.0.0.0/8 -p ${proto} -m ${proto} --dport ${s.nodePort}`,
    scope: 'cluster',
    listenerPort,
    endpoints,
    next,
    notes: [...notes, all, ...(verdict === null ? [] : [verdict])],
  };
}

/**
 * The path a packet to `d` takes, worked out from a status document the way
 * the rules would match it: the virtual-IP chains (KUP-PORTALS-*) come first,
 * the node-port chains (KUP-NODEPORT-*, destination type LOCAL) last.
 * `localAddresses` are this machine's addresses (for NodePorts and direct
 * proxy-port traffic).
 */
export function explain(doc: StatusDocument, d: Destination, localAddresses: ReadonlySet<string>): Explanation {
  const matches: PathMatch[] = [];
  const misses: string[] = [];
  let isVip = false;
  for (const s of doc.services) {
    const kinds: [MatchKind, readonly string[]][] = [
      ['ClusterIP', s.clusterIPs],
      ['externalIP', s.externalIPs],
      ['LoadBalancer IP', s.loadBalancerIPs],
    ];
    for (const [kind, ips] of kinds) {
      if (!ips.some((ip) => sameIP(ip, d.ip))) continue;
      isVip = true;
      if (s.portNumber !== d.port || !protoOk(d, s)) continue;
      const skipped = otherFamily(s, d.ip, `${d.ip} is ${kind === 'externalIP' ? 'an' : 'a'} ${kind}`);
      if (skipped !== null) misses.push(skipped);
      else matches.push(match(kind, s, d));
    }
  }
  // (Unless a family already said why: its Service has the port, not the family.)
  if (isVip && matches.length === 0 && misses.length === 0) {
    const owners = new Map<string, string[]>();
    for (const s of doc.services) {
      if (![...s.clusterIPs, ...s.externalIPs, ...s.loadBalancerIPs].some((ip) => sameIP(ip, d.ip))) continue;
      const ports = owners.get(s.name) ?? [];
      ports.push(`${s.portNumber}/${s.protocol}`);
      owners.set(s.name, ports);
    }
    for (const [name, ports] of owners) {
      misses.push(
        `${d.ip} belongs to ${name}, which has no port ${d.port}${d.protocol === null ? '' : `/${d.protocol}`} (it has ${ports.join(', ')}): no rule matches, the packet is rejected`,
      );
    }
  }
  if (!isVip) {
    const local = localAddresses.has(d.ip);
    for (const s of doc.services) {
      if (s.nodePort !== 0 && s.nodePort === d.port && protoOk(d, s)) {
        const skipped = otherFamily(s, d.ip, `${d.port} is the NodePort`);
        if (skipped !== null) {
          misses.push(skipped);
          continue;
        }
        const notes = [
          local
            ? `${d.ip} is an address of this machine`
            : `matches only where ${d.ip} is one of the node's own addresses (it is not one of this machine's)`,
        ];
        // The status document does not carry --iptables-localhost-nodeports / --nodeport-addresses: say what each allows.
        if (d.ip.startsWith('127.'))
          notes.push(
            "loopback: accepted from the node's own processes only (not from the network), unless --iptables-localhost-nodeports=false or --nodeport-addresses leaves 127.0.0.0/8 out",
          );
        else if (d.ip === '::1') notes.push('::1 is never a NodePort address (IPv6 has no localhost NodePorts, as upstream)');
        else notes.push('only where --nodeport-addresses, when set, selects this address');
        matches.push(d.ip.startsWith('127.') ? loopbackNodePort(s, notes) : match('NodePort', s, d, notes));
      }
    }
    const bind = doc.bindAddress;
    const wildcard = bind === '0.0.0.0' || bind === '::';
    if (sameIP(bind, d.ip) || (wildcard && (localAddresses.has(d.ip) || d.ip.startsWith('127.') || d.ip === '::1'))) {
      for (const s of doc.services) {
        if (!protoOk(d, s)) continue;
        if (s.proxyPort === d.port) matches.push(match('proxy port', s, d));
        else if (s.clusterProxyPort === d.port) {
          const m = match('ClusterIP', s, d);
          matches.push({
            ...m,
            kind: 'proxy port',
            chains: [],
            rule: 'none: addressed straight to the listener',
            listenerPort: s.clusterProxyPort,
            endpoints: s.endpoints.filter(usable),
            notes: ["the listener over all of the cluster's endpoints (this node's traffic to external addresses)"],
          });
        } else if (s.externalProxyPort === d.port) {
          const m = match('NodePort', s, d);
          matches.push({
            ...m,
            kind: 'proxy port',
            chains: [],
            rule: 'none: addressed straight to the listener',
            notes: ['the listener for external traffic'],
          });
        }
      }
    }
  }
  if (matches.length === 0 && misses.length === 0) {
    misses.push(
      `no service has ${d.ip}:${d.port}${d.protocol === null ? '' : `/${d.protocol}`} as a ClusterIP, externalIP, LoadBalancer IP or NodePort: no rule matches, kup does not touch this traffic`,
    );
  }
  return { destination: d, matches, misses };
}

function endpointLine(e: EndpointStatus, next: string | null): string {
  const id = joinHostPort(e.ip, e.port);
  const state = e.terminating ? (e.serving ? 'terminating (serving)' : 'terminating') : e.ready ? 'ready' : 'not ready';
  const node = e.nodeName === null ? '' : `node ${e.nodeName}${e.isLocal ? ' (local)' : ''}`;
  return `${next === id ? '->' : '  '} ${id.padEnd(22)} ${state.padEnd(22)} ${node.padEnd(26)} active ${e.activeConnections}  picks ${e.picks}`.trimEnd();
}

/** What `kup explain` prints. */
export function formatExplanation(doc: StatusDocument, x: Explanation): string {
  const d = x.destination;
  const head = `${joinHostPort(d.ip, d.port)}${d.protocol === null ? '' : `/${d.protocol}`}`;
  const lines: string[] = [];
  if (x.matches.length === 0) {
    lines.push(`${head}: nothing matches`);
    for (const m of x.misses) lines.push(`  ${m}`);
    return `${lines.join('\n')}\n`;
  }
  const running = doc.health !== null;
  for (const m of x.matches) {
    const s = m.service;
    if (lines.length > 0) lines.push('');
    lines.push(`${head} -> ${s.key} (${m.kind})`);
    if (m.chains.length === 1) lines.push(`  rule      ${m.chains[0]} (packets from this node only): ${m.rule}`);
    else if (m.chains.length > 0) {
      lines.push(`  rule      ${m.chains[0]} (packets from pods) and ${m.chains[1]} (packets from this node): ${m.rule}`);
    } else lines.push(`  rule      ${m.rule}`);
    const which =
      m.scope === 'external'
        ? "the service port's listener for external traffic"
        : m.scope === 'cluster'
          ? "the service port's listener over all of the cluster's endpoints"
          : "the service port's listener";
    const listener = !running
      ? `not running: kup picks the proxy port when it starts (${which})`
      : m.listenerPort === null
        ? `none: the listener could not be opened${s.listenerError === null ? '' : ` (${s.listenerError})`}`
        : `${joinHostPort(doc.bindAddress, m.listenerPort)}/${s.protocol} (${which})`;
    lines.push(`  listener  ${listener}`);
    const affinity =
      s.sessionAffinityTimeoutSeconds > 0 ? `ClientIP session affinity ${s.sessionAffinityTimeoutSeconds}s` : 'no session affinity';
    const policy =
      m.scope === 'cluster'
        ? "neither traffic policy (the node's own traffic)"
        : m.scope === 'external' || m.kind === 'NodePort' || m.kind === 'externalIP' || m.kind === 'LoadBalancer IP'
          ? `externalTrafficPolicy ${s.externalTrafficPolicy}`
          : `internalTrafficPolicy ${s.internalTrafficPolicy}`;
    lines.push(`  strategy  ${s.strategy}, ${affinity}, ${policy}`);
    lines.push(`  endpoints ${m.endpoints.length} in play of ${s.endpoints.length} listed`);
    for (const e of s.endpoints) {
      if (m.endpoints.includes(e)) lines.push(`            ${endpointLine(e, m.next)}`);
    }
    const unused = s.endpoints.filter((e) => !m.endpoints.includes(e));
    if (unused.length > 0) lines.push(`            (not in play: ${unused.map((e) => joinHostPort(e.ip, e.port)).join(', ')})`);
    const forWhom = doc.client === '' ? 'a new client' : `client ${doc.client}`;
    lines.push(
      `  next      ${
        m.next !== null
          ? `${m.next} (the next connection from ${forWhom} goes here)`
          : m.endpoints.length === 0
            ? 'none: no endpoint to send it to'
            : `one of the endpoints above (give --client an address of this family to see which)`
      }`,
    );
    for (const n of m.notes) lines.push(`  note      ${n}`);
  }
  return `${lines.join('\n')}\n`;
}
