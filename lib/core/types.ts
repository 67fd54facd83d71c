/**
 * The service table: what every source translates Kubernetes objects into and
 * what the data plane, the rule renderer and the admin face read. It is plain
 * data (no sockets, no timers) so it can be diffed, printed and tested directly.
 */
import { joinHostPort } from './address.js';
import type { ProxyProtocolVersion } from './proxy-protocol.js';

export type Protocol = 'TCP' | 'UDP';

/** "namespace/name:port/PROTOCOL", port being the port's name, or its number when unnamed. */
export type ServicePortKey = string & { readonly __brand: 'ServicePortKey' };

/** "namespace/name": a Service's identity as a map key; made only by serviceName(). */
export type ServiceName = string & { readonly __brand: 'ServiceName' };

export function serviceName(namespace: string, name: string): ServiceName {
  return `${namespace}/${name}` as ServiceName;
}

export type TrafficPolicy = 'Cluster' | 'Local';
/** The names kube-proxy's topologyModeFromHints returns (pkg/proxy/topology.go). */
export type TopologyMode = 'PreferSameNode' | 'PreferSameZone';
export type ServiceType = 'ClusterIP' | 'NodePort' | 'LoadBalancer';

export interface Endpoint {
  readonly ip: string;
  readonly port: number;
  /** EndpointConditions, with Kubernetes' defaults applied (nil ready/serving = true, nil terminating = false). */
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
  readonly nodeName: string | null;
  readonly zone: string | null;
  /** hints.forZones names (topology-aware routing). */
  readonly zoneHints: readonly string[];
  /** hints.forNodes names (trafficDistribution PreferSameNode); they take precedence over zone hints. */
  readonly nodeHints: readonly string[];
  /** True when nodeName is this proxy's node. */
  readonly isLocal: boolean;
}

export interface ServicePort {
  readonly key: ServicePortKey;
  readonly serviceName: ServiceName;
  readonly namespace: string;
  readonly name: string;
  /** The Service port's name; "" when the port is unnamed. */
  readonly portName: string;
  readonly protocol: Protocol;
  readonly port: number;
  readonly type: ServiceType;
  /** Both families, in spec.clusterIPs order. */
  readonly clusterIPs: readonly string[];
  /** 0 when the port has none. */
  readonly nodePort: number;
  readonly externalIPs: readonly string[];
  /** status.loadBalancer.ingress[].ip whose ipMode is unset or VIP. */
  readonly loadBalancerIPs: readonly string[];
  readonly loadBalancerSourceRanges: readonly string[];
  /** 0 when none. */
  readonly healthCheckNodePort: number;
  /** 0 when sessionAffinity is None. */
  readonly affinityTimeoutSeconds: number;
  readonly internalTrafficPolicy: TrafficPolicy;
  readonly externalTrafficPolicy: TrafficPolicy;
  /** Every endpoint the slices list for this port, merged, for display. */
  readonly endpoints: readonly Endpoint[];
  /** Usable endpoints cluster-wide: ready ones, else serving-and-terminating ones; topology hints applied. */
  readonly clusterEndpoints: readonly Endpoint[];
  /** Usable endpoints on this node: ready local ones, else serving-and-terminating local ones. */
  readonly localEndpoints: readonly Endpoint[];
  /** True when clusterEndpoints was narrowed by topology hints (topologyMode is not null). */
  readonly usesTopologyHints: boolean;
  /** Which hints narrowed clusterEndpoints: this node's (forNodes), this zone's (forZones), or none. */
  readonly topologyMode: TopologyMode | null;
  /** kup.dev/proxy-protocol: the PROXY protocol header sent to endpoints first; null = none (always null for UDP). */
  readonly proxyProtocol: ProxyProtocolVersion | null;
}

export type ServiceTable = ReadonlyMap<ServicePortKey, ServicePort>;

/**
 * A service port that is valid Kubernetes but that kup cannot proxy (SCTP:
 * Node has no SCTP sockets). Kept beside the table so /status and the
 * dashboard show it for as long as the Service exists, not only in one log line.
 */
export interface UnsupportedPort {
  readonly serviceName: ServiceName;
  /** The port's name, or its number when unnamed. */
  readonly port: string;
  readonly portNumber: number;
  readonly protocol: string;
  readonly reason: string;
}

export function servicePortKey(namespace: string, name: string, port: string | number, protocol: Protocol): ServicePortKey {
  return `${namespace}/${name}:${port}/${protocol}` as ServicePortKey;
}

/** How a port is shown to people: its name, or its number when unnamed. */
export function portLabel(sp: Pick<ServicePort, 'portName' | 'port'>): string {
  return sp.portName === '' ? String(sp.port) : sp.portName;
}

/** True when the port is reachable from outside the cluster (NodePort, externalIPs, LoadBalancer IPs). */
export function isExternallyReachable(sp: ServicePort): boolean {
  return sp.nodePort !== 0 || sp.externalIPs.length > 0 || sp.loadBalancerIPs.length > 0;
}

/** Endpoints for traffic addressed to a ClusterIP. */
export function internalEndpoints(sp: ServicePort): readonly Endpoint[] {
  return sp.internalTrafficPolicy === 'Local' ? sp.localEndpoints : sp.clusterEndpoints;
}

/** Endpoints for traffic addressed to a NodePort, externalIP or LoadBalancer IP. */
export function externalEndpoints(sp: ServicePort): readonly Endpoint[] {
  return sp.externalTrafficPolicy === 'Local' ? sp.localEndpoints : sp.clusterEndpoints;
}

/**
 * A userspace listener cannot tell which virtual IP a redirected connection was
 * addressed to, so when the two traffic policies pick different endpoint sets
 * the external addresses get a listener of their own.
 */
export function needsExternalListener(sp: ServicePort): boolean {
  return isExternallyReachable(sp) && sp.internalTrafficPolicy !== sp.externalTrafficPolicy;
}

export function endpointId(ep: Pick<Endpoint, 'ip' | 'port'>): string {
  return joinHostPort(ep.ip, ep.port);
}

/**
 * Which endpoint set a listener balances over: ClusterIP traffic (iTP), external
 * traffic (eTP; see needsExternalListener), or every cluster endpoint (the
 * node's own traffic to external addresses, and pod traffic short-circuited
 * by the local-traffic detector; see needsClusterListener).
 */
export type ListenerScope = 'internal' | 'external' | 'cluster';

/** The endpoints a listener of `scope` balances over. */
export function scopeEndpoints(sp: ServicePort, scope: ListenerScope): readonly Endpoint[] {
  if (scope === 'internal') return internalEndpoints(sp);
  if (scope === 'external') return externalEndpoints(sp);
  return sp.clusterEndpoints;
}

/**
 * Upstream sends the node's own traffic to a NodePort, externalIP or LB IP
 * (and short-circuited pod traffic) to all cluster endpoints, whatever iTP
 * and eTP say. A listener is its endpoint set, so that traffic reuses the
 * internal or external listener when one of them already balances over all
 * cluster endpoints; only when both policies are Local is a third listener
 * needed.
 */
export function needsClusterListener(sp: ServicePort): boolean {
  return isExternallyReachable(sp) && sp.internalTrafficPolicy === 'Local' && sp.externalTrafficPolicy === 'Local';
}

/** The scope of the listener that serves all-cluster-endpoints traffic for `sp` (see needsClusterListener). */
export function clusterTrafficScope(sp: ServicePort): ListenerScope {
  if (sp.internalTrafficPolicy === 'Cluster') return 'internal';
  if (needsExternalListener(sp) && sp.externalTrafficPolicy === 'Cluster') return 'external';
  return 'cluster';
}

/** The proxy ports the data plane opened for one service port; rules steer virtual IPs to them. */
export interface ProxyPortNumbers {
  readonly internal: number;
  /** Present only when needsExternalListener(sp); otherwise external traffic goes to `internal`. */
  readonly external?: number;
  /** Present only when needsClusterListener(sp); otherwise clusterTrafficScope(sp) names the listener that serves it. */
  readonly cluster?: number;
}

/** The proxy port that serves all-cluster-endpoints traffic; falls back to `internal` if the listener it names is missing. */
export function clusterTrafficPort(sp: ServicePort, pp: ProxyPortNumbers): number {
  const scope = clusterTrafficScope(sp);
  if (scope === 'external') return pp.external ?? pp.internal;
  if (scope === 'cluster') return pp.cluster ?? pp.internal;
  return pp.internal;
}
