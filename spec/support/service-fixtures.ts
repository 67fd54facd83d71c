/**
 * Entries of kup's internal service table (ServicePort, ServiceTable) for the
 * specs that start after translation (iptables, syncer, table diff), and
 * their JSON form so a script running inside a network namespace can be
 * handed the same table. These are not Kubernetes objects: those are built
 * in objects.ts.
 */
import {
  serviceName,
  servicePortKey,
  type Endpoint,
  type Protocol,
  type ProxyPortNumbers,
  type ServicePort,
  type ServicePortKey,
  type ServiceTable,
} from '../../lib/core/types.js';

export function endpoint(ip: string, port: number, isLocal = true): Endpoint {
  return {
    ip,
    port,
    ready: true,
    serving: true,
    terminating: false,
    nodeName: isLocal ? 'node-a' : 'node-b',
    zone: null,
    zoneHints: [],
    nodeHints: [],
    isLocal,
  };
}

/** What a test says about one table entry; the rest is defaulted. */
export interface TablePortSpec {
  namespace?: string;
  name: string;
  portName?: string;
  protocol?: Protocol;
  port: number;
  clusterIPs?: string[];
  nodePort?: number;
  externalIPs?: string[];
  loadBalancerIPs?: string[];
  loadBalancerSourceRanges?: string[];
  externalTrafficPolicy?: 'Cluster' | 'Local';
  internalTrafficPolicy?: 'Cluster' | 'Local';
  /** Default: one ready local endpoint. */
  endpoints?: Endpoint[];
}

export function servicePort(s: TablePortSpec): ServicePort {
  const namespace = s.namespace ?? 'default';
  const protocol = s.protocol ?? 'TCP';
  const portName = s.portName ?? '';
  const endpoints = s.endpoints ?? [endpoint('10.244.0.5', 8080)];
  const lb = (s.loadBalancerIPs ?? []).length > 0;
  return {
    key: servicePortKey(namespace, s.name, portName === '' ? s.port : portName, protocol),
    serviceName: serviceName(namespace, s.name),
    namespace,
    name: s.name,
    portName,
    protocol,
    port: s.port,
    type: lb ? 'LoadBalancer' : (s.nodePort ?? 0) !== 0 ? 'NodePort' : 'ClusterIP',
    clusterIPs: s.clusterIPs ?? [],
    nodePort: s.nodePort ?? 0,
    externalIPs: s.externalIPs ?? [],
    loadBalancerIPs: s.loadBalancerIPs ?? [],
    loadBalancerSourceRanges: s.loadBalancerSourceRanges ?? [],
    healthCheckNodePort: 0,
    affinityTimeoutSeconds: 0,
    internalTrafficPolicy: s.internalTrafficPolicy ?? 'Cluster',
    externalTrafficPolicy: s.externalTrafficPolicy ?? 'Cluster',
    endpoints,
    clusterEndpoints: endpoints.filter((e) => e.ready),
    localEndpoints: endpoints.filter((e) => e.ready && e.isLocal),
    usesTopologyHints: false,
    topologyMode: null,
    proxyProtocol: null,
  };
}

export function tableOf(ports: readonly ServicePort[]): ServiceTable {
  return new Map(ports.map((p) => [p.key, p]));
}

/** What a namespace-side script reads: the table and the listeners' ports. */
export interface TableFixture {
  readonly ports: readonly ServicePort[];
  readonly proxyPorts: readonly (readonly [ServicePortKey, ProxyPortNumbers])[];
}

export function fixtureToJson(table: ServiceTable, proxyPorts: ReadonlyMap<ServicePortKey, ProxyPortNumbers>): string {
  const f: TableFixture = { ports: [...table.values()], proxyPorts: [...proxyPorts.entries()] };
  return JSON.stringify(f);
}

export function fixtureFromJson(text: string): { table: ServiceTable; proxyPorts: ReadonlyMap<ServicePortKey, ProxyPortNumbers> } {
  const f = JSON.parse(text) as TableFixture;
  return { table: tableOf(f.ports), proxyPorts: new Map(f.proxyPorts) };
}
