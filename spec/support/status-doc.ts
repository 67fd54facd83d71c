import {
  STATUS_API_VERSION,
  type EndpointStatus,
  type ServiceStatus,
  type StatusDocument,
  type TrafficStats,
} from '../../lib/admin/status.js';
import { ListenerStats } from '../../lib/dataplane/stats.js';

/**
 * /status documents built by hand, for the pure functions that read them
 * (`kup explain`, `kup status`): each test states only the fields it is about.
 */

export function endpointStatus(ip: string, port: number, over: Partial<EndpointStatus> = {}): EndpointStatus {
  return {
    ip,
    port,
    ready: true,
    serving: true,
    terminating: false,
    nodeName: 'node-a',
    zone: null,
    isLocal: true,
    inUse: true,
    inUseExternal: true,
    activeConnections: 0,
    picks: 0,
    failures: 0,
    ...over,
  };
}

export function serviceStatus(
  namespace: string,
  name: string,
  portName: string,
  portNumber: number,
  over: Partial<ServiceStatus> = {},
): ServiceStatus {
  const protocol = over.protocol ?? 'TCP';
  const port = portName === '' ? String(portNumber) : portName;
  const clusterIPs = over.clusterIPs ?? ['10.96.0.10'];
  const stats: TrafficStats = { ...new ListenerStats() };
  return {
    key: `${namespace}/${name}:${port}/${protocol}`,
    name: `${namespace}/${name}`,
    namespace,
    port,
    portNumber,
    protocol,
    type: 'ClusterIP',
    clusterIP: clusterIPs[0] ?? '',
    clusterIPs,
    nodePort: 0,
    externalIPs: [],
    loadBalancerIPs: [],
    healthCheckNodePort: 0,
    sessionAffinityTimeoutSeconds: 0,
    internalTrafficPolicy: 'Cluster',
    externalTrafficPolicy: 'Cluster',
    proxyPort: 40001,
    externalProxyPort: null,
    clusterProxyPort: null,
    loadBalancerSourceRanges: [],
    exposedAt: null,
    listenerError: null,
    strategy: 'round-robin',
    nextEndpoint: null,
    externalNextEndpoint: null,
    stats,
    endpoints: [],
    ...over,
  };
}

export function statusDocument(services: readonly ServiceStatus[], over: Partial<StatusDocument> = {}): StatusDocument {
  const endpoints = services.flatMap((s) => s.endpoints);
  return {
    apiVersion: STATUS_API_VERSION,
    generatedAt: '2025-01-01T00:00:00.000Z',
    node: 'node-a',
    proxyMode: 'userspace',
    bindAddress: '127.0.0.1',
    client: '',
    health: { healthy: true, proxyHealthy: true, nodeEligible: true, lastUpdated: '2025-01-01T00:00:00.000Z', reason: null },
    source: { kind: 'file', synced: true, lastEventTime: null, lastError: null, detail: {} },
    sync: null,
    iptables: { installed: false, ruleLines: 0 },
    totals: {
      servicePorts: services.length,
      endpoints: endpoints.length,
      readyEndpoints: endpoints.filter((e) => e.ready).length,
      activeConnections: endpoints.reduce((n, e) => n + e.activeConnections, 0),
    },
    services,
    unsupported: [],
    ...over,
  };
}
