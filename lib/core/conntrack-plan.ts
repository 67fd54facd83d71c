/**
 * Which UDP conntrack entries a sync makes stale. The kernel keeps a UDP
 * "connection" (and its NAT translation) for as long as datagrams keep
 * coming, so a resolver that reuses its source port keeps being sent to the
 * proxy port of the rules that were in force when its first datagram arrived,
 * even after the rules now name another port (a listener reopened, or kup
 * restarted with different proxy ports). Upstream's CleanStaleEntries
 * (kubernetes pkg/proxy/conntrack/cleanup.go) removes entries whose reply
 * source is no longer a serving endpoint; for a userspace proxy the NAT
 * target is the proxy port, so an entry is stale when the port its address
 * is steered to changed. Pure: the shell runs the filters.
 */
import { familyName, type FamilyName } from './address.js';
import { clusterTrafficPort, type ProxyPortNumbers, type ServicePortKey, type ServiceTable } from './types.js';

/** What one applied table steers where: the input of a plan. */
export interface SteeredTable {
  readonly table: ServiceTable;
  readonly proxyPorts: ReadonlyMap<ServicePortKey, ProxyPortNumbers>;
}

/**
 * One `conntrack -D` filter: UDP entries whose original destination is
 * `dst`:`port`, or with `dst` null every NATed entry to `port` (a NodePort,
 * on any node address).
 */
export interface ConntrackFilter {
  readonly family: FamilyName;
  readonly dst: string | null;
  readonly port: number;
}

/**
 * Every UDP destination the table redirects, keyed "family|dst|port" (dst ""
 * for a NodePort), with the proxy ports it is sent to. Host (and
 * short-circuited pod) traffic to an external address goes to the
 * all-cluster-endpoints listener, so its port counts too.
 */
function steering(s: SteeredTable, families: readonly FamilyName[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const [key, sp] of s.table) {
    if (sp.protocol !== 'UDP') continue;
    const pp = s.proxyPorts.get(key);
    // No listener, no rule: nothing is steered, nothing can go stale through it.
    if (pp === undefined) continue;
    const internal = String(pp.internal);
    const both = `${clusterTrafficPort(sp, pp)}/${pp.external ?? pp.internal}`;
    for (const ip of sp.clusterIPs) out.set(`${familyName(ip) ?? ''}|${ip}|${sp.port}`, internal);
    for (const ip of [...sp.externalIPs, ...sp.loadBalancerIPs]) out.set(`${familyName(ip) ?? ''}|${ip}|${sp.port}`, both);
    if (sp.nodePort !== 0) for (const f of families) out.set(`${f}||${sp.nodePort}`, both);
  }
  return out;
}

/**
 * The filters that clear what `next` made stale, given what `previous` (null
 * at start: a restart leaves entries from the last run's ports) steered.
 * A destination is cleared when it is new or its proxy port changed;
 * unchanged ones keep their live sessions. Invalid addresses are skipped
 * (render leaves them out too).
 */
export function staleConntrackFilters(
  previous: SteeredTable | null,
  next: SteeredTable,
  families: readonly FamilyName[],
): ConntrackFilter[] {
  const before = previous === null ? new Map<string, string>() : steering(previous, families);
  const out: ConntrackFilter[] = [];
  for (const [id, ports] of steering(next, families)) {
    if (before.get(id) === ports) continue;
    const [family, dst = '', portText = '0'] = id.split('|');
    if (family !== 'ipv4' && family !== 'ipv6') continue;
    if (!families.includes(family)) continue;
    out.push({ family, dst: dst === '' ? null : dst, port: Number(portText) });
  }
  return out;
}

/** The `conntrack` arguments that delete the entries one filter names. */
export function conntrackDeleteArgs(f: ConntrackFilter): string[] {
  const base = ['-D', '-f', f.family, '-p', 'udp'];
  // A NodePort filter has no address: --dst-nat keeps it to entries our rules translated, not a local service on that port.
  return f.dst === null
    ? [...base, '--orig-port-dst', String(f.port), '--dst-nat']
    : [...base, '--orig-dst', f.dst, '--orig-port-dst', String(f.port)];
}
