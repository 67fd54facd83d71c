import type { V1EndpointSlice, V1Service } from '@kubernetes/client-node';
import { cidrFamily, ipFamily, isValidIP, isValidPort } from './address.js';
import { asArray, asBool, asInt, asObject, asString, asStringArray, field, quote, type Obj } from './object-fields.js';
import { parseProxyProtocol, PROXY_PROTOCOL_ANNOTATION, type ProxyProtocolVersion } from './proxy-protocol.js';
import {
  serviceName,
  servicePortKey,
  type ServiceName,
  type Endpoint,
  type ServicePort,
  type ServiceType,
  type TopologyMode,
  type TrafficPolicy,
  type UnsupportedPort,
} from './types.js';

/**
 * One translation from v1 Service + discovery.k8s.io/v1 EndpointSlice objects
 * to service ports, shared by every source. It follows current kube-proxy:
 * kubernetes/kubernetes pkg/proxy/serviceport.go, pkg/proxy/endpointslicecache.go
 * and pkg/proxy/topology.go.
 */

export interface TranslateContext {
  /** This proxy's node name (--hostname-override); decides which endpoints are local. */
  readonly nodeName: string;
  /** topology.kubernetes.io/zone of this node, when known. */
  readonly nodeZone: string | null;
}

export interface TranslateResult {
  readonly ports: ServicePort[];
  /** One line each, naming the object; the caller logs them. */
  readonly warnings: string[];
  /** Why the whole Service is not proxied (headless, ExternalName, ...), when it is not. */
  readonly skipped: string | null;
  /** Its valid ports kup cannot proxy, with the reason. */
  readonly unsupported: readonly UnsupportedPort[];
}

export const SCTP_UNSUPPORTED = 'SCTP is not supported by a userspace proxy (Node has no SCTP sockets)';

export const SERVICE_PROXY_NAME_LABEL = 'service.kubernetes.io/service-proxy-name';
export const HEADLESS_LABEL = 'service.kubernetes.io/headless';
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
export const ZONE_LABEL = 'topology.kubernetes.io/zone';

export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10800;
export const MAX_AFFINITY_TIMEOUT_SECONDS = 86400;

// DNS-1123 names (subdomains allowed) and IANA_SVC_NAME-like port names. Names
// reach log lines, rule comments and the dashboard, so anything else is refused here.
const OBJECT_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const PORT_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

export interface ObjectRef {
  readonly namespace: string;
  readonly name: string;
}

/** namespace/name of any object, or an explanation of why it has none usable. */
export function objectRef(obj: unknown): ObjectRef | string {
  const meta = asObject(field(obj, 'metadata'));
  const name = asString(meta?.['name']);
  const namespace = asString(meta?.['namespace']) ?? 'default';
  if (name === undefined || name === '') return 'metadata.name is missing';
  if (!OBJECT_NAME.test(name)) return `metadata.name ${quote(name)} is not a valid name`;
  if (!OBJECT_NAME.test(namespace) || namespace.length > 63) {
    return `metadata.namespace ${quote(namespace)} is not a valid namespace`;
  }
  return { namespace, name };
}

export function labels(obj: unknown): Obj {
  return asObject(field(obj, 'metadata', 'labels')) ?? {};
}

/** The Service a slice belongs to ("namespace/name"), from its kubernetes.io/service-name label. */
export function sliceServiceName(slice: unknown): ServiceName | null {
  const ref = objectRef(slice);
  const svc = asString(labels(slice)[SERVICE_NAME_LABEL]);
  if (typeof ref === 'string' || svc === undefined || !OBJECT_NAME.test(svc)) return null;
  return serviceName(ref.namespace, svc);
}

interface SlicePortEndpoints {
  endpoints: Map<string, Endpoint>;
}

export function translateService(svc: V1Service, slices: readonly V1EndpointSlice[], ctx: TranslateContext): TranslateResult {
  const warnings: string[] = [];
  const unsupported: UnsupportedPort[] = [];
  const skip = (why: string): TranslateResult => ({ ports: [], warnings, skipped: why, unsupported });

  const ref = objectRef(svc);
  if (typeof ref === 'string') {
    warnings.push(`Service ${quote(field(svc, 'metadata', 'name'))}: ${ref}; skipped`);
    return skip(ref);
  }
  const who = `Service ${ref.namespace}/${ref.name}`;
  const lbl = labels(svc);
  if (lbl[SERVICE_PROXY_NAME_LABEL] !== undefined) return skip(`labelled ${SERVICE_PROXY_NAME_LABEL}`);
  if (lbl[HEADLESS_LABEL] !== undefined) return skip(`labelled ${HEADLESS_LABEL}`);

  const spec = asObject(field(svc, 'spec'));
  if (spec === undefined) {
    warnings.push(`${who}: spec is missing; skipped`);
    return skip('no spec');
  }
  const rawType = asString(spec['type']) ?? 'ClusterIP';
  if (rawType === 'ExternalName') return skip('type ExternalName');
  if (rawType !== 'ClusterIP' && rawType !== 'NodePort' && rawType !== 'LoadBalancer') {
    warnings.push(`${who}: unknown type ${quote(rawType)}; skipped`);
    return skip('unknown type');
  }
  const type: ServiceType = rawType;

  // spec.clusterIPs is authoritative when set; spec.clusterIP is its first element.
  const rawIPs = asStringArray(spec['clusterIPs']);
  const ipList = rawIPs.length > 0 ? rawIPs : asStringArray([spec['clusterIP']]);
  if (ipList.length === 0 || ipList[0] === '' || ipList[0] === 'None') return skip('headless (clusterIP None)');
  const clusterIPs: string[] = [];
  for (const ip of ipList) {
    if (!isValidIP(ip)) warnings.push(`${who}: clusterIP ${quote(ip)} is not a valid IP; ignored`);
    else if (clusterIPs.some((c) => ipFamily(c) === ipFamily(ip))) {
      warnings.push(`${who}: a second IPv${ipFamily(ip)} clusterIP ${quote(ip)}; ignored`);
    } else clusterIPs.push(ip);
  }
  if (clusterIPs.length === 0) {
    warnings.push(`${who}: no valid clusterIP; skipped`);
    return skip('no valid clusterIP');
  }

  const externalIPs = validIPs(spec['externalIPs'], `${who}: externalIP`, warnings);
  const loadBalancerIPs =
    type === 'LoadBalancer'
      ? validIPs(
          asArray(field(svc, 'status', 'loadBalancer', 'ingress'))
            .filter((ing) => {
              const mode = asString(field(ing, 'ipMode'));
              return mode === undefined || mode === 'VIP';
            })
            .map((ing) => field(ing, 'ip'))
            .filter((ip) => ip !== undefined),
          `${who}: loadBalancer ingress IP`,
          warnings,
        )
      : [];
  const loadBalancerSourceRanges: string[] = [];
  for (const cidr of asArray(spec['loadBalancerSourceRanges'])) {
    const trimmed = typeof cidr === 'string' ? cidr.trim() : cidr;
    if (cidrFamily(trimmed) !== 0) loadBalancerSourceRanges.push(trimmed as string);
    else warnings.push(`${who}: loadBalancerSourceRange ${quote(cidr)} is not a CIDR; ignored`);
  }

  const affinityTimeoutSeconds = affinityTimeout(spec, who, warnings);
  const internalTrafficPolicy = policy(spec['internalTrafficPolicy'], 'internalTrafficPolicy', who, warnings);
  // externalTrafficPolicy means something only for an externally accessible
  // Service: NodePort, LoadBalancer, or ClusterIP with externalIPs (upstream's
  // ExternallyAccessible / ExternalPolicyLocal, pkg/api/v1/service/util.go).
  const externallyAccessible = type !== 'ClusterIP' || asArray(spec['externalIPs']).length > 0;
  const externalTrafficPolicy = externallyAccessible
    ? policy(spec['externalTrafficPolicy'], 'externalTrafficPolicy', who, warnings)
    : 'Cluster';
  const healthCheckNodePort = type === 'LoadBalancer' && externalTrafficPolicy === 'Local' ? (asInt(spec['healthCheckNodePort']) ?? 0) : 0;

  const endpointsByPort = collectEndpoints(slices, ctx, warnings);
  const proxyProtocol = proxyProtocolOf(svc, who, warnings);

  const ports: ServicePort[] = [];
  const seenNames = new Set<string>();
  const seenPorts = new Set<string>();
  for (const rawPort of asArray(spec['ports'])) {
    const p = asObject(rawPort);
    if (p === undefined) {
      warnings.push(`${who}: a port entry is not an object; ignored`);
      continue;
    }
    const portName = asString(p['name']) ?? '';
    const label = portName === '' ? String(p['port']) : portName;
    const pwho = `${who} port ${quote(label)}`;
    if (portName !== '' && !PORT_NAME.test(portName)) {
      warnings.push(`${pwho}: not a valid port name; port skipped`);
      continue;
    }
    const protocol = asString(p['protocol']) ?? 'TCP';
    if (protocol === 'SCTP') {
      warnings.push(`${pwho}: ${SCTP_UNSUPPORTED}; port skipped`);
      const number = isValidPort(p['port']) ? p['port'] : 0;
      unsupported.push({
        serviceName: serviceName(ref.namespace, ref.name),
        port: label,
        portNumber: number,
        protocol,
        reason: SCTP_UNSUPPORTED,
      });
      continue;
    }
    if (protocol !== 'TCP' && protocol !== 'UDP') {
      warnings.push(`${pwho}: unknown protocol ${quote(protocol)}; port skipped`);
      continue;
    }
    const port = p['port'];
    if (!isValidPort(port)) {
      warnings.push(`${pwho}: port ${quote(port)} is not a number from 1 to 65535; port skipped`);
      continue;
    }
    if (seenNames.has(`${portName}/${protocol}`)) {
      warnings.push(`${pwho}: duplicate port name; port skipped`);
      continue;
    }
    if (seenPorts.has(`${port}/${protocol}`)) {
      warnings.push(`${pwho}: duplicate port ${port}/${protocol}; port skipped`);
      continue;
    }
    seenNames.add(`${portName}/${protocol}`);
    seenPorts.add(`${port}/${protocol}`);

    let nodePort = 0;
    if (type !== 'ClusterIP' && p['nodePort'] !== undefined) {
      if (isValidPort(p['nodePort'])) nodePort = p['nodePort'];
      else warnings.push(`${pwho}: nodePort ${quote(p['nodePort'])} is not valid; ignored`);
    }

    const matched = endpointsByPort.get(`${portName}/${protocol}`);
    if (matched === undefined && endpointsByPort.size > 0) {
      // Slices name their ports after the Service's ports; a mismatch (often a
      // targetPort naming no container port) leaves this port without endpoints.
      warnings.push(
        `${pwho}: no ${protocol} port named ${quote(portName)} in the Service's EndpointSlices (has the targetPort a matching container port?); no endpoints`,
      );
    }
    const all = [...(matched?.endpoints.values() ?? [])].sort(compareEndpoints);
    const { cluster, mode } = clusterUsable(all, ctx.nodeName, ctx.nodeZone);
    ports.push({
      key: servicePortKey(ref.namespace, ref.name, label, protocol),
      serviceName: serviceName(ref.namespace, ref.name),
      namespace: ref.namespace,
      name: ref.name,
      portName,
      protocol,
      port,
      type,
      clusterIPs,
      nodePort,
      externalIPs,
      loadBalancerIPs,
      loadBalancerSourceRanges,
      healthCheckNodePort,
      affinityTimeoutSeconds,
      internalTrafficPolicy,
      externalTrafficPolicy,
      endpoints: all,
      clusterEndpoints: cluster,
      localEndpoints: usable(all.filter((e) => e.isLocal)),
      usesTopologyHints: mode !== null,
      topologyMode: mode,
      // A header in front of the stream: TCP only (UDP has no stream to put it in front of).
      proxyProtocol: protocol === 'TCP' ? proxyProtocol : null,
    });
  }
  return { ports, warnings, skipped: null, unsupported };
}

/** The Service's kup.dev/proxy-protocol annotation; anything but v1/v2 is one warning and off. */
function proxyProtocolOf(svc: V1Service, who: string, warnings: string[]): ProxyProtocolVersion | null {
  const raw = field(svc, 'metadata', 'annotations', PROXY_PROTOCOL_ANNOTATION);
  if (raw === undefined) return null;
  const parsed =
    typeof raw === 'string' ? parseProxyProtocol(raw) : { error: `${PROXY_PROTOCOL_ANNOTATION} ${quote(raw)} is not v1 or v2` };
  if (parsed === null || typeof parsed === 'string') return parsed;
  warnings.push(`${who}: ${parsed.error}; PROXY protocol off`);
  return null;
}

function validIPs(values: unknown, what: string, warnings: string[]): string[] {
  const out: string[] = [];
  for (const ip of asArray(values)) {
    if (isValidIP(ip)) {
      if (!out.includes(ip)) out.push(ip);
    } else warnings.push(`${what} ${quote(ip)} is not a valid IP; ignored`);
  }
  return out;
}

function affinityTimeout(spec: Obj, who: string, warnings: string[]): number {
  const kind = asString(spec['sessionAffinity']) ?? 'None';
  if (kind === 'None') return 0;
  if (kind !== 'ClientIP') {
    warnings.push(`${who}: unknown sessionAffinity ${quote(kind)}; using None`);
    return 0;
  }
  const raw = field(spec, 'sessionAffinityConfig', 'clientIP', 'timeoutSeconds');
  if (raw === undefined) return DEFAULT_AFFINITY_TIMEOUT_SECONDS;
  const n = asInt(raw);
  if (n === undefined || n <= 0 || n > MAX_AFFINITY_TIMEOUT_SECONDS) {
    warnings.push(
      `${who}: sessionAffinityConfig.clientIP.timeoutSeconds ${quote(raw)} is not from 1 to ${MAX_AFFINITY_TIMEOUT_SECONDS}; using ${DEFAULT_AFFINITY_TIMEOUT_SECONDS}`,
    );
    return DEFAULT_AFFINITY_TIMEOUT_SECONDS;
  }
  return n;
}

function policy(value: unknown, what: string, who: string, warnings: string[]): TrafficPolicy {
  if (value === undefined || value === 'Cluster') return 'Cluster';
  if (value === 'Local') return 'Local';
  warnings.push(`${who}: unknown ${what} ${quote(value)}; using Cluster`);
  return 'Cluster';
}

/**
 * Merges the endpoints of all slices of one Service, per slice port
 * (name/protocol). Only addresses[0] counts, as in kube-proxy; an ip:port listed
 * twice keeps its non-terminating entry.
 */
function collectEndpoints(slices: readonly V1EndpointSlice[], ctx: TranslateContext, warnings: string[]): Map<string, SlicePortEndpoints> {
  const byPort = new Map<string, SlicePortEndpoints>();
  for (const slice of slices) {
    const ref = objectRef(slice);
    const who = typeof ref === 'string' ? 'EndpointSlice ?' : `EndpointSlice ${ref.namespace}/${ref.name}`;
    const addressType = asString(field(slice, 'addressType'));
    if (addressType === 'FQDN') continue;
    if (addressType !== 'IPv4' && addressType !== 'IPv6') {
      warnings.push(`${who}: unknown addressType ${quote(addressType)}; slice ignored`);
      continue;
    }
    const family = addressType === 'IPv4' ? 4 : 6;
    const ports: { key: string; port: number }[] = [];
    for (const rawPort of asArray(field(slice, 'ports'))) {
      const port = field(rawPort, 'port');
      // A port of 0 or none means "all ports"; kube-proxy cannot use such a slice port.
      if (port === undefined || port === 0) continue;
      if (!isValidPort(port)) {
        warnings.push(`${who}: port ${quote(port)} is not a number from 1 to 65535; ignored`);
        continue;
      }
      const name = asString(field(rawPort, 'name')) ?? '';
      const protocol = asString(field(rawPort, 'protocol')) ?? 'TCP';
      if (protocol !== 'TCP' && protocol !== 'UDP') continue;
      ports.push({ key: `${name}/${protocol}`, port });
    }
    if (ports.length === 0) continue;

    const rawEndpoints = asArray(field(slice, 'endpoints'));
    let badAddresses = 0;
    for (const rawEp of rawEndpoints) {
      const ip = asStringArray(field(rawEp, 'addresses'))[0];
      if (ip === undefined || ipFamily(ip) !== family) {
        badAddresses++;
        continue;
      }
      // Each nil condition has its own default, as endpointslicecache.go reads
      // them: ready and serving true, terminating false. A nil serving is not
      // taken from ready (an unready terminating pod with nil serving still serves).
      const cond = asObject(field(rawEp, 'conditions')) ?? {};
      const ready = asBool(cond['ready']) ?? true;
      const serving = asBool(cond['serving']) ?? true;
      const terminating = asBool(cond['terminating']) ?? false;
      const nodeName = asString(field(rawEp, 'nodeName')) ?? null;
      const zone = asString(field(rawEp, 'zone')) ?? null;
      const hints = hintNames(field(rawEp, 'hints', 'forZones'));
      const nodeHints = hintNames(field(rawEp, 'hints', 'forNodes'));
      for (const { key, port } of ports) {
        const ep: Endpoint = {
          ip,
          port,
          ready,
          serving,
          terminating,
          nodeName,
          zone,
          isLocal: nodeName !== null && nodeName === ctx.nodeName,
          zoneHints: hints,
          nodeHints,
        };
        let entry = byPort.get(key);
        if (entry === undefined) {
          entry = { endpoints: new Map() };
          byPort.set(key, entry);
        }
        const id = `${ip}|${port}`;
        const prev = entry.endpoints.get(id);
        if (prev === undefined || (prev.terminating && !terminating)) entry.endpoints.set(id, ep);
      }
    }
    if (badAddresses > 0) {
      warnings.push(`${who}: ${badAddresses} endpoint(s) without a valid ${addressType} address; ignored`);
    }
  }
  return byPort;
}

function compareEndpoints(a: Endpoint, b: Endpoint): number {
  return a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : a.port - b.port;
}

/**
 * Ready endpoints; when none, the serving-and-terminating ones (graceful
 * termination fallback). When every one is ready (the usual case) the input
 * array itself: at 10,000 service ports a copy per port and scope adds up.
 */
function usable(eps: readonly Endpoint[]): readonly Endpoint[] {
  let ready = 0;
  for (const e of eps) if (e.ready) ready++;
  if (ready === eps.length) return eps;
  return ready > 0 ? eps.filter((e) => e.ready) : eps.filter((e) => e.serving && e.terminating);
}

/** One shared empty list: most endpoints carry no hints, and 50,000 empty arrays are megabytes. */
const NO_HINTS: readonly string[] = Object.freeze([]);

function hintNames(list: unknown): readonly string[] {
  const names = asArray(list)
    .map((h) => asString(field(h, 'name')))
    .filter((n): n is string => n !== undefined);
  return names.length === 0 ? NO_HINTS : names;
}

/**
 * Topology-aware routing, as kube-proxy's topologyModeFromHints and
 * availableForTopology (pkg/proxy/topology.go): node hints (forNodes, from
 * trafficDistribution PreferSameNode) are used when every ready endpoint has
 * one and one names this node; failing that, zone hints when every ready
 * endpoint has one and one names this node's zone; failing that, all
 * endpoints. There is no fallback after the mode is chosen, and none of it
 * applies when no endpoint is ready (the serving-terminating fallback).
 */
function clusterUsable(
  all: readonly Endpoint[],
  nodeName: string,
  zone: string | null,
): { cluster: readonly Endpoint[]; mode: TopologyMode | null } {
  const cluster = usable(all);
  if (cluster.length === 0 || !cluster.every((e) => e.ready)) return { cluster, mode: null };
  if (cluster.every((e) => e.nodeHints.length > 0)) {
    const forNode = cluster.filter((e) => e.nodeHints.includes(nodeName));
    if (forNode.length > 0) return { cluster: forNode, mode: 'PreferSameNode' };
  }
  if (zone !== null && cluster.every((e) => e.zoneHints.length > 0)) {
    const inZone = cluster.filter((e) => e.zoneHints.includes(zone));
    if (inZone.length > 0) return { cluster: inZone, mode: 'PreferSameZone' };
  }
  return { cluster, mode: null };
}
