import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';

/** Small builders of Service / EndpointSlice JSON for data-plane tests. */

export interface PortSpec {
  name?: string;
  port: number;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
  targetPort?: number | string;
  nodePort?: number;
}

export function service(
  name: string,
  ports: PortSpec[],
  extra: { namespace?: string; clusterIP?: string; spec?: Record<string, unknown>; labels?: Record<string, string> } = {},
): V1Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: extra.namespace ?? 'default', ...(extra.labels ? { labels: extra.labels } : {}) },
    spec: {
      type: 'ClusterIP',
      clusterIP: extra.clusterIP ?? '10.96.0.10',
      ports: ports.map((p) => ({ protocol: 'TCP', targetPort: p.port, ...p })),
      ...extra.spec,
    },
  };
}

export interface EndpointSpec {
  ip?: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  nodeName?: string;
  zone?: string;
  hints?: string[];
}

export function slice(
  serviceName: string,
  sliceName: string,
  ports: { name?: string; port: number; protocol?: 'TCP' | 'UDP' }[],
  endpoints: EndpointSpec[],
  extra: { namespace?: string; addressType?: 'IPv4' | 'IPv6' } = {},
): V1EndpointSlice {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name: sliceName,
      namespace: extra.namespace ?? 'default',
      labels: { 'kubernetes.io/service-name': serviceName },
    },
    addressType: extra.addressType ?? 'IPv4',
    ports: ports.map((p) => ({ name: p.name ?? '', protocol: p.protocol ?? 'TCP', port: p.port })),
    endpoints: endpoints.map((e) => ({
      addresses: [e.ip ?? '127.0.0.1'],
      conditions: {
        ...(e.ready !== undefined ? { ready: e.ready } : {}),
        ...(e.serving !== undefined ? { serving: e.serving } : {}),
        ...(e.terminating !== undefined ? { terminating: e.terminating } : {}),
      },
      ...(e.nodeName ? { nodeName: e.nodeName } : {}),
      ...(e.zone ? { zone: e.zone } : {}),
      ...(e.hints ? { hints: { forZones: e.hints.map((z) => ({ name: z })) } } : {}),
    })),
  };
}

/** One slice per backend port: loopback backends differ by port, not by address. */
export function slicesFor(serviceName: string, portName: string, ports: number[], protocol: 'TCP' | 'UDP' = 'TCP'): V1EndpointSlice[] {
  return ports.map((p, i) => slice(serviceName, `${serviceName}-${i}`, [{ name: portName, port: p, protocol }], [{}]));
}
