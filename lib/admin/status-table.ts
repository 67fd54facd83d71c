import { joinHostPort, splitHostPort } from '../core/address.js';
import { hostsBlock } from '../core/loopback-address.js';
import type { ServiceStatus, StatusDocument } from './status.js';

/** Every address a service port answers on: ClusterIPs, externalIPs, LB IPs (ip:port), NodePort (:port). */
export function vipList(s: ServiceStatus): string {
  const out = [...s.clusterIPs, ...s.externalIPs, ...s.loadBalancerIPs].map((ip) => joinHostPort(ip, s.portNumber));
  if (s.nodePort !== 0) out.push(`*:${s.nodePort}`);
  return out.length === 0 ? '-' : out.join(',');
}

function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join('  ')).join('\n');
}

/** What `kup status` prints: one summary line, then one row per service port. */
export function formatStatusTable(doc: StatusDocument): string {
  const health = doc.health === null ? '' : doc.health.healthy ? ', healthy' : `, UNHEALTHY (${doc.health.reason ?? ''})`;
  const src = `${doc.source.kind}${doc.source.synced ? ' synced' : ' not synced'}${doc.source.lastError === null ? '' : ` (error: ${doc.source.lastError})`}`;
  const head = `node ${doc.node}, ${doc.proxyMode} mode, source ${src}${health}; ${doc.totals.servicePorts} service ports, ${doc.totals.readyEndpoints}/${doc.totals.endpoints} endpoints ready, ${doc.totals.activeConnections} active connections`;
  const rows: string[][] = [['SERVICE', 'TYPE', 'VIPS', 'PROXY PORT', 'ENDPOINTS', 'ACTIVE']];
  for (const s of doc.services) {
    const ready = s.endpoints.filter((e) => e.ready).length;
    const port =
      s.exposedAt !== null
        ? s.exposedAt
        : s.proxyPort === null
          ? s.listenerError === null
            ? '-'
            : 'FAILED'
          : String(s.proxyPort) +
            (s.externalProxyPort === null ? '' : `,${s.externalProxyPort}`) +
            (s.clusterProxyPort === null ? '' : `,${s.clusterProxyPort}`);
    rows.push([`${s.name}:${s.port}/${s.protocol}`, s.type, vipList(s), port, `${ready}/${s.endpoints.length}`, String(s.stats.active)]);
  }
  // One line per Service (its ports share the address), as `kup run` prints it.
  const exposed = new Map<string, { namespace: string; name: string; address: string }>();
  for (const s of doc.services) {
    if (s.exposedAt === null) continue;
    const address = splitHostPort(s.exposedAt)?.host ?? s.exposedAt;
    exposed.set(s.name, { namespace: s.namespace, name: s.name.slice(s.namespace.length + 1), address });
  }
  const hosts = exposed.size === 0 ? '' : `\n${hostsBlock(exposed.values())}`;
  const failed = doc.services.filter((s) => s.listenerError !== null).map((s) => `  ${s.key}: ${s.listenerError ?? ''}`);
  const unsupported = doc.unsupported.map((u) => `  ${u.key}: ${u.reason}`);
  return (
    `${head}\n\n${table(rows)}\n${hosts}` +
    (failed.length > 0 ? `\nlisteners that could not be opened:\n${failed.join('\n')}\n` : '') +
    (unsupported.length > 0 ? `\nservice ports not proxied:\n${unsupported.join('\n')}\n` : '')
  );
}
