import type { NodePortIPs } from '../core/nodeport-addresses.js';
import type { LocalTrafficDetector } from '../core/local-detector.js';
import {
  needsClusterListener,
  needsExternalListener,
  type ProxyPortNumbers,
  type ServicePortKey,
  type ServiceTable,
} from '../core/types.js';
import type { PortRange } from '../core/port-range.js';
import { formatJumpRule, jumpRules, renderRules, type HostIPs } from '../iptables/render.js';
import { sortedPorts } from '../runtime/load-table.js';

/** Where `kup rules` numbers listeners when no --proxy-port-range says: illustrative only. */
export const ILLUSTRATIVE_PORT_BASE = 40000;

export interface RulesScriptOptions {
  readonly table: ServiceTable;
  readonly bindAddress: string;
  readonly portRange: PortRange | null;
  readonly hostIPs: HostIPs;
  /** --nodeport-addresses resolved against this machine's addresses; null or absent: every local address. */
  readonly nodePortIPs?: NodePortIPs;
  readonly localhostNodePorts?: boolean;
  readonly localDetector?: LocalTrafficDetector | null;
}

/**
 * What `kup run` would install for a table. Listener ports are only known
 * once listeners open (kernel-chosen by default), so they are numbered here
 * in key order from --proxy-port-range, or from an illustrative base.
 */
export function rulesScript(opts: RulesScriptOptions): string {
  const base = opts.portRange?.base ?? ILLUSTRATIVE_PORT_BASE;
  const proxyPorts = new Map<ServicePortKey, ProxyPortNumbers>();
  let next = base;
  for (const sp of sortedPorts(opts.table)) {
    const internal = next++;
    const external = needsExternalListener(sp) ? next++ : undefined;
    const cluster = needsClusterListener(sp) ? next++ : undefined;
    proxyPorts.set(sp.key, {
      internal,
      ...(external === undefined ? {} : { external }),
      ...(cluster === undefined ? {} : { cluster }),
    });
  }
  const rendered = renderRules({
    table: opts.table,
    proxyPorts,
    bindAddress: opts.bindAddress,
    hostIPs: opts.hostIPs,
    nodePortIPs: opts.nodePortIPs ?? null,
    localhostNodePorts: opts.localhostNodePorts ?? true,
    localDetector: opts.localDetector ?? null,
    commentSupported: true,
  });
  const out: string[] = [];
  out.push('# kube-userspace-proxy: the iptables rules `kup run` installs for this source.');
  out.push(
    opts.portRange === null
      ? `# Proxy ports are illustrative (numbered from ${base}); at run time the kernel chooses them,`
      : `# Proxy ports numbered from --proxy-port-range ${base} in service-port order; at run time a port in use is skipped,`,
  );
  out.push('# and `kup status` / the dashboard show the installed script.');
  for (const w of rendered.warnings) out.push(`# warning: ${w}`);
  out.push('#');
  out.push('# Jump rules (iptables -w 5 ..., kept present exactly once, both families):');
  for (const j of jumpRules(true)) out.push(`#   iptables ${formatJumpRule(j)}`);
  out.push('');
  out.push('# --- IPv4: iptables-restore --noflush ---');
  out.push(rendered.ipv4.trimEnd());
  if (rendered.ruleCount.ipv6 > 0) {
    out.push('');
    out.push('# --- IPv6: ip6tables-restore --noflush ---');
    out.push(rendered.ipv6.trimEnd());
  }
  return `${out.join('\n')}\n`;
}
