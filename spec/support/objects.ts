import { createHash } from 'node:crypto';
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';

/**
 * The one set of builders for Kubernetes objects in tests: Services,
 * EndpointSlices and Nodes in the plain JSON shape an API server sends
 * (defaults filled in the way the API server's defaulting does), so tests
 * describe only what matters to them. The same objects go to the API server
 * double, into source files, and straight to the translator. (Entries of the
 * internal service table are built in service-fixtures.ts.)
 */

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const MANAGED_BY_LABEL = 'endpointslice.kubernetes.io/managed-by';
export const SERVICE_PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name';
export const HEADLESS_LABEL = 'service.kubernetes.io/headless';
export const ZONE_LABEL = 'topology.kubernetes.io/zone';

export type IPFamily = 'IPv4' | 'IPv6';
export type PortProtocol = 'TCP' | 'UDP' | 'SCTP';

export interface ServicePortInput {
  name?: string;
  port: number;
  targetPort?: number | string;
  protocol?: PortProtocol;
  nodePort?: number;
  appProtocol?: string;
}

export interface ServiceInput {
  namespace?: string;
  name: string;
  /** Omit to leave it empty (the API server double allocates one); "None" for headless. */
  clusterIP?: string;
  clusterIPs?: string[];
  ipFamilies?: IPFamily[];
  ports: ServicePortInput[];
  type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName';
  externalName?: string;
  selector?: Record<string, string>;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  sessionAffinity?: 'None' | 'ClientIP';
  sessionAffinityTimeoutSeconds?: number;
  externalIPs?: string[];
  externalTrafficPolicy?: 'Cluster' | 'Local';
  internalTrafficPolicy?: 'Cluster' | 'Local';
  healthCheckNodePort?: number;
  loadBalancerIngressIPs?: string[];
  loadBalancerSourceRanges?: string[];
  publishNotReadyAddresses?: boolean;
  /** Sets the service.kubernetes.io/service-proxy-name label (the service belongs to another proxy). */
  proxyName?: string;
}

function familyOf(ip: string): IPFamily {
  return ip.includes(':') ? 'IPv6' : 'IPv4';
}

/** A stable uid derived from the object's identity, shaped like a real one. */
export function fakeUid(kind: string, namespace: string, name: string): string {
  const h = createHash('sha256').update(`${kind}/${namespace}/${name}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export function service(input: ServiceInput): V1Service {
  const namespace = input.namespace ?? 'default';
  const type = input.type ?? 'ClusterIP';
  const labels: Record<string, string> = { ...input.labels };
  if (input.proxyName !== undefined) labels[SERVICE_PROXY_NAME_LABEL] = input.proxyName;
  // The API server defaults externalTrafficPolicy on externally accessible
  // Services, which includes ClusterIP with externalIPs.
  const externallyReachable =
    type === 'NodePort' || type === 'LoadBalancer' || (type === 'ClusterIP' && (input.externalIPs?.length ?? 0) > 0);
  const clusterIPs = input.clusterIPs ?? (input.clusterIP !== undefined ? [input.clusterIP] : undefined);
  const spec: NonNullable<V1Service['spec']> = {
    ports: input.ports.map((p) => ({
      ...(p.name !== undefined ? { name: p.name } : {}),
      protocol: p.protocol ?? 'TCP',
      port: p.port,
      targetPort: p.targetPort ?? p.port,
      ...(p.nodePort !== undefined ? { nodePort: p.nodePort } : {}),
      ...(p.appProtocol !== undefined ? { appProtocol: p.appProtocol } : {}),
    })),
    type,
    sessionAffinity: input.sessionAffinity ?? 'None',
  };
  if (type === 'ExternalName') {
    spec.externalName = input.externalName ?? 'example.invalid';
    spec.ports = input.ports.length > 0 ? spec.ports : [];
  } else {
    if (clusterIPs !== undefined) {
      spec.clusterIP = clusterIPs[0];
      spec.clusterIPs = clusterIPs;
      if (clusterIPs[0] !== 'None') {
        spec.ipFamilies = input.ipFamilies ?? clusterIPs.map(familyOf);
      }
    }
    spec.ipFamilyPolicy = (clusterIPs?.length ?? 1) > 1 ? 'RequireDualStack' : 'SingleStack';
    spec.internalTrafficPolicy = input.internalTrafficPolicy ?? 'Cluster';
  }
  if (input.selector !== undefined) spec.selector = input.selector;
  if (input.sessionAffinity === 'ClientIP') {
    spec.sessionAffinityConfig = { clientIP: { timeoutSeconds: input.sessionAffinityTimeoutSeconds ?? 10800 } };
  }
  if (externallyReachable) spec.externalTrafficPolicy = input.externalTrafficPolicy ?? 'Cluster';
  if (input.externalIPs !== undefined) spec.externalIPs = input.externalIPs;
  if (input.healthCheckNodePort !== undefined) spec.healthCheckNodePort = input.healthCheckNodePort;
  if (input.loadBalancerSourceRanges !== undefined) spec.loadBalancerSourceRanges = input.loadBalancerSourceRanges;
  if (input.publishNotReadyAddresses !== undefined) spec.publishNotReadyAddresses = input.publishNotReadyAddresses;
  if (type === 'LoadBalancer') spec.allocateLoadBalancerNodePorts = true;

  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: input.name,
      namespace,
      ...(Object.keys(labels).length > 0 ? { labels } : {}),
      ...(input.annotations !== undefined ? { annotations: input.annotations } : {}),
    },
    spec,
    status: {
      loadBalancer:
        input.loadBalancerIngressIPs !== undefined ? { ingress: input.loadBalancerIngressIPs.map((ip) => ({ ip, ipMode: 'VIP' })) } : {},
    },
  };
}

export interface EndpointInput {
  ip: string;
  /** Omitted conditions stay absent (nil), which Kubernetes reads as ready/serving true, terminating false. */
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
  nodeName?: string;
  zone?: string;
  /** Zones named in hints.forZones. */
  hints?: string[];
  /** Nodes named in hints.forNodes (trafficDistribution PreferSameNode). */
  nodeHints?: string[];
  /** targetRef Pod name. */
  pod?: string;
}

export interface EndpointPortInput {
  name?: string;
  port: number;
  protocol?: PortProtocol;
  appProtocol?: string;
}

export interface EndpointSliceInput {
  service: string;
  namespace?: string;
  /** Defaults to "<service>-<5 chars>" like the controller's generateName. */
  name?: string;
  addressType?: 'IPv4' | 'IPv6' | 'FQDN';
  endpoints: EndpointInput[];
  ports: EndpointPortInput[];
  /** Extra labels (the controller copies the Service's labels onto its slices). */
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  managedBy?: string;
}

export function endpointSlice(input: EndpointSliceInput): V1EndpointSlice {
  const namespace = input.namespace ?? 'default';
  const addressType = input.addressType ?? 'IPv4';
  const suffix = createHash('sha256').update(`${namespace}/${input.service}/${addressType}`).digest('hex').slice(0, 5);
  const name = input.name ?? `${input.service}-${suffix}`;
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: {
      name,
      namespace,
      labels: {
        ...input.labels,
        [SERVICE_NAME_LABEL]: input.service,
        [MANAGED_BY_LABEL]: input.managedBy ?? 'endpointslice-controller.k8s.io',
      },
      ...(input.annotations !== undefined ? { annotations: input.annotations } : {}),
      ownerReferences: [
        {
          apiVersion: 'v1',
          kind: 'Service',
          name: input.service,
          uid: fakeUid('Service', namespace, input.service),
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
    },
    addressType,
    endpoints: input.endpoints.map((e) => {
      const conditions: Record<string, boolean> = {};
      if (e.ready !== undefined) conditions.ready = e.ready;
      if (e.serving !== undefined) conditions.serving = e.serving;
      if (e.terminating !== undefined) conditions.terminating = e.terminating;
      return {
        addresses: [e.ip],
        conditions,
        ...(e.nodeName !== undefined ? { nodeName: e.nodeName } : {}),
        ...(e.zone !== undefined ? { zone: e.zone } : {}),
        ...(e.hints !== undefined || e.nodeHints !== undefined
          ? {
              hints: {
                ...(e.hints !== undefined ? { forZones: e.hints.map((z) => ({ name: z })) } : {}),
                ...(e.nodeHints !== undefined ? { forNodes: e.nodeHints.map((n) => ({ name: n })) } : {}),
              },
            }
          : {}),
        ...(e.pod !== undefined ? { targetRef: { kind: 'Pod', namespace, name: e.pod } } : {}),
      };
    }),
    ports: input.ports.map((p) => ({
      ...(p.name !== undefined ? { name: p.name } : { name: '' }),
      port: p.port,
      protocol: p.protocol ?? 'TCP',
      ...(p.appProtocol !== undefined ? { appProtocol: p.appProtocol } : {}),
    })),
  };
}

export interface NodeInput {
  name: string;
  zone?: string;
  region?: string;
  addresses?: { type: 'InternalIP' | 'ExternalIP' | 'Hostname'; address: string }[];
  labels?: Record<string, string>;
  podCIDRs?: string[];
}

export function node(input: NodeInput): V1Node {
  const labels: Record<string, string> = {
    'kubernetes.io/hostname': input.name,
    'kubernetes.io/os': 'linux',
    ...input.labels,
  };
  if (input.zone !== undefined) labels[ZONE_LABEL] = input.zone;
  if (input.region !== undefined) labels['topology.kubernetes.io/region'] = input.region;
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: input.name, labels },
    spec: input.podCIDRs !== undefined ? { podCIDR: input.podCIDRs[0], podCIDRs: input.podCIDRs } : {},
    status: {
      addresses: input.addresses ?? [
        { type: 'InternalIP', address: '127.0.0.1' },
        { type: 'Hostname', address: input.name },
      ],
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status' }],
    },
  };
}

/**
 * One slice per backend port, each with one endpoint on 127.0.0.1: loopback
 * backends differ by port, not by address, and a slice's ports apply to all
 * its endpoints.
 */
export function slicesFor(
  serviceName: string,
  portName: string,
  ports: readonly number[],
  protocol: 'TCP' | 'UDP' = 'TCP',
): V1EndpointSlice[] {
  return ports.map((port, i) =>
    endpointSlice({
      service: serviceName,
      name: `${serviceName}-${i}`,
      endpoints: [{ ip: '127.0.0.1' }],
      ports: [{ name: portName, port, protocol }],
    }),
  );
}
