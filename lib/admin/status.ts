import type { Balancer } from '../core/balancer/balancer.js';
import type { EndpointState } from '../core/balancer/endpoint-state.js';
import {
  endpointId,
  portLabel,
  type Protocol,
  type ServicePort,
  type ServiceTable,
  type ServiceType,
  type TrafficPolicy,
  type UnsupportedPort,
} from '../core/types.js';
import { ipFamily, joinHostPort } from '../core/address.js';
import type { RelayKind } from '../dataplane/native-relay.js';
import { ListenerStats } from '../dataplane/stats.js';
import type { SourceKind, SourceState } from '../sources/source.js';
import type { SyncState } from '../sync/syncer.js';
import type { HealthReport } from './health.js';

/**
 * The /status document: the contract scripts (and `kup status`, `kup explain`)
 * rely on. docs/status.md describes it; change it only by adding
 * fields, and bump `apiVersion` if a field ever has to change meaning.
 */
export const STATUS_API_VERSION = 'kup.status/v1';

export interface StatusDocument {
  readonly apiVersion: typeof STATUS_API_VERSION;
  readonly generatedAt: string;
  readonly node: string;
  readonly proxyMode: 'userspace';
  /** Which relay moves established TCP connections' bytes (--relay); absent when no proxy runs (`kup explain --source`). */
  readonly relay?: RelayKind;
  readonly bindAddress: string;
  /** The client address `nextEndpoint` was worked out for (session affinity depends on it). */
  readonly client: string;
  /** null when the document was built from a source without running the proxy (`kup explain --source`). */
  readonly health: {
    readonly healthy: boolean;
    readonly proxyHealthy: boolean;
    readonly nodeEligible: boolean;
    readonly lastUpdated: string;
    readonly reason: string | null;
  } | null;
  readonly source: SourceStatus;
  readonly sync: SyncStatus | null;
  readonly iptables: { readonly installed: boolean; readonly ruleLines: number };
  readonly totals: {
    readonly servicePorts: number;
    readonly endpoints: number;
    readonly readyEndpoints: number;
    readonly activeConnections: number;
  };
  readonly services: readonly ServiceStatus[];
  /** Service ports that are not proxied because kup cannot (SCTP), with the reason; [] when none. */
  readonly unsupported: readonly UnsupportedPortStatus[];
}

export interface UnsupportedPortStatus {
  /** "namespace/name:port/PROTOCOL", as a proxied port's key. */
  readonly key: string;
  /** "namespace/name" */
  readonly name: string;
  readonly namespace: string;
  /** The port's name, or its number when unnamed. */
  readonly port: string;
  readonly portNumber: number;
  readonly protocol: string;
  readonly reason: string;
}

export interface SourceStatus {
  readonly kind: SourceKind;
  readonly synced: boolean;
  /** RFC 3339, null before any event. */
  readonly lastEventTime: string | null;
  readonly lastError: string | null;
  readonly detail: Readonly<Record<string, string | number | boolean>>;
}

export interface SyncStatus {
  /** RFC 3339, null before any successful sync. */
  readonly lastSyncTime: string | null;
  /** RFC 3339 of the oldest change waiting to be applied, null when nothing waits. */
  readonly lastQueuedTime: string | null;
  readonly lastSyncDurationMs: number;
  readonly syncs: number;
  readonly failures: number;
  readonly consecutiveFailures: number;
  readonly lastError: string | null;
}

/** A listener's counters as plain data: the /status contract names them as ListenerStats does. */
export type TrafficStats = { readonly [K in keyof ListenerStats]: number };

export interface EndpointStatus {
  readonly ip: string;
  readonly port: number;
  readonly ready: boolean;
  readonly serving: boolean;
  readonly terminating: boolean;
  readonly nodeName: string | null;
  readonly zone: string | null;
  readonly isLocal: boolean;
  /** Chosen from for ClusterIP traffic (ready, or the terminating fallback; traffic policy and topology applied). */
  readonly inUse: boolean;
  /** Chosen from for NodePort / externalIP / LoadBalancer traffic. */
  readonly inUseExternal: boolean;
  readonly activeConnections: number;
  readonly picks: number;
  readonly failures: number;
}

export interface ServiceStatus {
  /** "namespace/name:port/PROTOCOL" */
  readonly key: string;
  /** "namespace/name" */
  readonly name: string;
  readonly namespace: string;
  /** The port's name, or its number when unnamed. */
  readonly port: string;
  readonly portNumber: number;
  readonly protocol: Protocol;
  readonly type: ServiceType;
  /** The first ClusterIP ("" when none); all of them in clusterIPs. */
  readonly clusterIP: string;
  readonly clusterIPs: readonly string[];
  /** 0 when none. */
  readonly nodePort: number;
  readonly externalIPs: readonly string[];
  readonly loadBalancerIPs: readonly string[];
  /** Sources allowed to the LoadBalancer IPs (others are dropped); empty: everyone. */
  readonly loadBalancerSourceRanges: readonly string[];
  /** 0 when none. */
  readonly healthCheckNodePort: number;
  /** 0 when sessionAffinity is None. */
  readonly sessionAffinityTimeoutSeconds: number;
  readonly internalTrafficPolicy: TrafficPolicy;
  readonly externalTrafficPolicy: TrafficPolicy;
  /** The listener ClusterIP traffic is steered to; null when it could not be opened (or the proxy is not running). */
  readonly proxyPort: number | null;
  /** A second listener for external traffic when the traffic policies differ; null otherwise. */
  readonly externalProxyPort: number | null;
  /**
   * A third listener over all cluster endpoints when both traffic policies are
   * Local: the node's own traffic to the external addresses (and pod traffic
   * the local-traffic detector short-circuits) goes there. null otherwise.
   */
  readonly clusterProxyPort: number | null;
  /** --expose-on-loopback: "127.x.y.z:port", the Service's own address at its real port (proxyPort is that port); null otherwise. */
  readonly exposedAt: string | null;
  readonly listenerError: string | null;
  readonly strategy: string;
  /** "ip:port" the next ClusterIP connection from `client` would go to; null when there is no endpoint. */
  readonly nextEndpoint: string | null;
  /** The same for external traffic (equal to nextEndpoint when one listener serves both). */
  readonly externalNextEndpoint: string | null;
  /** Both listeners together. */
  readonly stats: TrafficStats;
  readonly endpoints: readonly EndpointStatus[];
}

/** What status reads of one listener (TcpProxy and UdpProxy are such). */
export interface ListenerView {
  readonly port: number;
  readonly stats: ListenerStats;
  readonly balancer: Balancer;
}

export interface ListenersView {
  readonly internal: ListenerView;
  readonly external: ListenerView | null;
  /** The all-cluster-endpoints listener (see needsClusterListener); absent or null when none. */
  readonly cluster?: ListenerView | null;
  /** --expose-on-loopback: the loopback address `internal` listens on. */
  readonly exposedAddress?: string | null;
}

export interface StatusInput {
  readonly node: string;
  readonly bindAddress: string;
  readonly clientIP: string;
  readonly table: ServiceTable;
  /** The running proxy's relay; absent without one. */
  readonly relay?: RelayKind;
  /** Ports left out of the table because kup cannot proxy them; none when absent. */
  readonly unsupported?: readonly UnsupportedPort[];
  /** The listeners of a service port, undefined when it has none. */
  readonly listeners: (sp: ServicePort) => ListenersView | undefined;
  readonly listenerError: (sp: ServicePort) => string | null;
  /** Used when a port has no listener (as with `kup explain --source`). */
  readonly defaultStrategy: string;
  readonly source: SourceState;
  readonly sync: Readonly<SyncState> | null;
  readonly health: HealthReport | null;
  readonly iptablesRules: string | null;
  readonly now: number;
}

const STAT_NAMES = Object.keys(new ListenerStats()) as (keyof ListenerStats)[];

/** Source details whose names suggest credentials are never shown, whatever a source puts there. */
const SECRET_NAME = /token|secret|password|passw|auth|cert|private|bearer|kubeconfig|credential/i;

export function safeDetail(detail: Readonly<Record<string, string | number | boolean>>): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [k, v] of Object.entries(detail)) {
    if (SECRET_NAME.test(k)) continue;
    if (typeof v === 'string' && /bearer\s|-----BEGIN/i.test(v)) continue;
    out[k] = v;
  }
  return out;
}

function iso(ms: number): string | null {
  return ms === 0 ? null : new Date(ms).toISOString();
}

/** The counters of a port's listeners, summed. */
function sumStats(listeners: readonly ListenerStats[]): TrafficStats {
  const out = {} as Record<keyof ListenerStats, number>;
  for (const k of STAT_NAMES) out[k] = listeners.reduce((n, l) => n + l[k], 0);
  return out;
}

function serviceStatus(sp: ServicePort, view: ListenersView | undefined, input: StatusInput): ServiceStatus {
  const internal = new Map<string, EndpointState>();
  const external = new Map<string, EndpointState>();
  for (const e of view?.internal.balancer.endpoints ?? []) internal.set(e.id, e);
  for (const e of view?.external?.balancer.endpoints ?? []) external.set(e.id, e);
  const cluster = new Map<string, EndpointState>();
  for (const e of view?.cluster?.balancer.endpoints ?? []) cluster.set(e.id, e);
  const shared = view !== undefined && view.external === null;
  const endpoints: EndpointStatus[] = sp.endpoints.map((ep) => {
    const id = endpointId(ep);
    const i = internal.get(id);
    const x = external.get(id);
    const c = cluster.get(id);
    return {
      ip: ep.ip,
      port: ep.port,
      ready: ep.ready,
      serving: ep.serving,
      terminating: ep.terminating,
      nodeName: ep.nodeName,
      zone: ep.zone,
      isLocal: ep.isLocal,
      inUse: i !== undefined,
      inUseExternal: shared ? i !== undefined : x !== undefined,
      activeConnections: (i?.active ?? 0) + (x?.active ?? 0) + (c?.active ?? 0),
      picks: (i?.picks ?? 0) + (x?.picks ?? 0) + (c?.picks ?? 0),
      failures: (i?.failures ?? 0) + (x?.failures ?? 0) + (c?.failures ?? 0),
    };
  });
  const stats = sumStats(
    view === undefined ? [] : [view.internal, view.external, view.cluster ?? null].flatMap((l) => (l === null ? [] : [l.stats])),
  );
  // A client reaches the virtual IP of its own family, whose endpoints alone
  // answer it; without a client, the next connection to the primary
  // clusterIP. An exposed (--expose-on-loopback) listener serves no virtual
  // IP and picks among all.
  const family = view?.exposedAddress != null ? 0 : ipFamily(input.clientIP) || ipFamily(sp.clusterIPs[0]);
  const next = view?.internal.balancer.peek(input.clientIP, family)?.id ?? null;
  const nextExternal =
    view === undefined ? null : view.external === null ? next : (view.external.balancer.peek(input.clientIP, family)?.id ?? null);
  return {
    key: sp.key,
    name: sp.serviceName,
    namespace: sp.namespace,
    port: portLabel(sp),
    portNumber: sp.port,
    protocol: sp.protocol,
    type: sp.type,
    clusterIP: sp.clusterIPs[0] ?? '',
    clusterIPs: sp.clusterIPs,
    nodePort: sp.nodePort,
    externalIPs: sp.externalIPs,
    loadBalancerIPs: sp.loadBalancerIPs,
    loadBalancerSourceRanges: sp.loadBalancerSourceRanges,
    healthCheckNodePort: sp.healthCheckNodePort,
    sessionAffinityTimeoutSeconds: sp.affinityTimeoutSeconds,
    internalTrafficPolicy: sp.internalTrafficPolicy,
    externalTrafficPolicy: sp.externalTrafficPolicy,
    proxyPort: view === undefined || view.internal.port === 0 ? null : view.internal.port,
    externalProxyPort: view?.external == null || view.external.port === 0 ? null : view.external.port,
    clusterProxyPort: view?.cluster == null || view.cluster.port === 0 ? null : view.cluster.port,
    exposedAt: view?.exposedAddress == null || view.internal.port === 0 ? null : joinHostPort(view.exposedAddress, view.internal.port),
    listenerError: input.listenerError(sp),
    strategy: view?.internal.balancer.strategyName ?? input.defaultStrategy,
    nextEndpoint: next,
    externalNextEndpoint: nextExternal,
    stats,
    endpoints,
  };
}

/** Builds the /status document. Pure: reads counters, changes nothing (peek, never pick). */
export function buildStatus(input: StatusInput): StatusDocument {
  const services = [...input.table.values()]
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    .map((sp) => serviceStatus(sp, input.listeners(sp), input));
  let endpoints = 0;
  let ready = 0;
  let active = 0;
  for (const s of services) {
    endpoints += s.endpoints.length;
    for (const e of s.endpoints) if (e.ready) ready++;
    active += s.stats.active;
  }
  const src = input.source;
  const sync = input.sync;
  return {
    apiVersion: STATUS_API_VERSION,
    generatedAt: new Date(input.now).toISOString(),
    node: input.node,
    proxyMode: 'userspace',
    ...(input.relay === undefined ? {} : { relay: input.relay }),
    bindAddress: input.bindAddress,
    client: input.clientIP,
    health:
      input.health === null
        ? null
        : {
            healthy: input.health.healthy,
            proxyHealthy: input.health.proxyHealthy,
            nodeEligible: input.health.nodeEligible,
            lastUpdated: input.health.lastUpdated,
            reason: input.health.reason,
          },
    source: {
      kind: src.kind,
      synced: src.synced,
      lastEventTime: iso(Math.round(src.lastEventTime * 1000)),
      lastError: src.lastError,
      detail: safeDetail(src.detail),
    },
    sync:
      sync === null
        ? null
        : {
            lastSyncTime: iso(sync.lastSyncTime),
            lastQueuedTime: iso(sync.lastQueuedTime),
            lastSyncDurationMs: Number(sync.lastSyncDurationMs.toFixed(3)),
            syncs: sync.syncs,
            failures: sync.failures,
            consecutiveFailures: sync.consecutiveFailures,
            lastError: sync.lastError,
          },
    iptables: {
      installed: input.iptablesRules !== null,
      ruleLines: input.iptablesRules === null ? 0 : input.iptablesRules.split('\n').filter((l) => l.startsWith('-A ')).length,
    },
    totals: { servicePorts: services.length, endpoints, readyEndpoints: ready, activeConnections: active },
    services,
    unsupported: (input.unsupported ?? []).map((u) => ({
      key: `${u.serviceName}:${u.port}/${u.protocol}`,
      name: u.serviceName,
      namespace: u.serviceName.slice(0, u.serviceName.indexOf('/')),
      port: u.port,
      portNumber: u.portNumber,
      protocol: u.protocol,
      reason: u.reason,
    })),
  };
}
