/**
 * `kup cleanup --kube-proxy-rules`: removes what kube-proxy's iptables mode
 * leaves on a node, so that after kube-proxy is parked its KUBE- rules (which
 * sit in the same built-in chains as kup's, and win when they come first) stop
 * steering service traffic. Pure: from `iptables-save` output to the
 * iptables-restore script that removes it.
 *
 * The set is the one upstream's `kube-proxy --cleanup` removes for iptables
 * mode (pkg/proxy/iptables cleanupLeftoversForFamily):
 *   nat:    KUBE-SERVICES, KUBE-NODEPORTS, KUBE-POSTROUTING, KUBE-MARK-MASQ,
 *           KUBE-PROXY-CANARY, and every per-service chain (KUBE-SVC-, KUBE-SVL-,
 *           KUBE-SEP-, KUBE-FW-, KUBE-EXT-, and the older KUBE-XLB-);
 *   filter: KUBE-SERVICES, KUBE-EXTERNAL-SERVICES, KUBE-FORWARD, KUBE-NODEPORTS,
 *           KUBE-PROXY-FIREWALL, KUBE-PROXY-CANARY;
 *   mangle: KUBE-PROXY-CANARY.
 * Kubelet's chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-MARK-DROP) are
 * not kube-proxy's and stay, as upstream leaves them.
 *
 * Upstream deletes its jump rules by their exact arguments, which changed
 * between releases; here every rule in a built-in chain that jumps into a
 * removed chain goes, whatever release wrote it. A rule in some other
 * (user or CNI) chain that jumps into one is not ours to delete: that chain
 * and what it reaches are kept, and reported, instead of failing the whole
 * table as upstream's restore would.
 */

const FIXED_CHAINS: Readonly<Record<string, readonly string[]>> = {
  nat: ['KUBE-SERVICES', 'KUBE-NODEPORTS', 'KUBE-POSTROUTING', 'KUBE-MARK-MASQ', 'KUBE-PROXY-CANARY'],
  filter: ['KUBE-SERVICES', 'KUBE-EXTERNAL-SERVICES', 'KUBE-FORWARD', 'KUBE-NODEPORTS', 'KUBE-PROXY-FIREWALL', 'KUBE-PROXY-CANARY'],
  mangle: ['KUBE-PROXY-CANARY'],
};

/** Per-service and per-endpoint chains of the iptables proxier, all in nat. */
const SERVICE_CHAIN_PREFIXES: readonly string[] = ['KUBE-SVC-', 'KUBE-SVL-', 'KUBE-SEP-', 'KUBE-FW-', 'KUBE-EXT-', 'KUBE-XLB-'];

export interface KubeProxyCleanup {
  /** iptables-restore input for `--noflush`; empty when the node holds none of kube-proxy's rules. */
  readonly script: string;
  /** Chains removed, as `table/CHAIN`, for the log. */
  readonly removed: readonly string[];
  /** Chains left in place because a chain that is not kube-proxy's still jumps into them, one sentence each. */
  readonly kept: readonly string[];
}

interface TableState {
  readonly name: string;
  /** Chain name -> true for built-in chains (declared with a policy), false for user chains. */
  readonly chains: Map<string, boolean>;
  /** Rule lines (`-A CHAIN ...`) in save order. */
  readonly rules: string[];
}

function isKubeProxyChain(table: string, chain: string): boolean {
  if (FIXED_CHAINS[table]?.includes(chain) === true) return true;
  return table === 'nat' && SERVICE_CHAIN_PREFIXES.some((p) => chain.startsWith(p));
}

/** The chain a rule line belongs to and the chain it jumps or goes to (null for a non-chain target such as ACCEPT). */
function ruleEnds(line: string): { from: string; to: string | null } {
  const from = line.split(' ')[1] ?? '';
  const target = /\s-[jg] (\S+)/.exec(line)?.[1] ?? null;
  return { from, to: target };
}

function renderTable(state: TableState, removed: string[], kept: string[]): string[] {
  const remove = new Set([...state.chains.keys()].filter((c) => isKubeProxyChain(state.name, c)));
  if (remove.size === 0) return [];
  const edges = state.rules.map(ruleEnds);
  // Keep what a user chain that is not kube-proxy's jumps to; a kept chain is such a chain too, so repeat to a fixed point.
  for (let changed = true; changed;) {
    changed = false;
    for (const { from, to } of edges) {
      if (to !== null && remove.has(to) && !remove.has(from) && state.chains.get(from) === false) {
        kept.push(`${state.name}/${to} kept: chain ${from} (not kube-proxy's) still jumps to it`);
        remove.delete(to);
        changed = true;
      }
    }
  }
  if (remove.size === 0) return [];
  const deletes: string[] = [];
  state.rules.forEach((line, i) => {
    const { from, to } = edges[i]!;
    if (to !== null && remove.has(to) && state.chains.get(from) === true) deletes.push(`-D ${line.slice(3)}`);
  });
  const ordered = [...remove].sort();
  for (const c of ordered) removed.push(`${state.name}/${c}`);
  // Declaring flushes each chain (so none still references another), then all can be deleted.
  return [`*${state.name}`, ...deletes, ...ordered.map((c) => `:${c} - [0:0]`), ...ordered.map((c) => `-X ${c}`), 'COMMIT'];
}

/** From the output of `iptables-save` (all tables), the script that removes kube-proxy's iptables-mode rules. */
export function renderKubeProxyCleanup(saveOutput: string): KubeProxyCleanup {
  const out: string[] = [];
  const removed: string[] = [];
  const kept: string[] = [];
  let state: TableState | null = null;
  for (const raw of saveOutput.split('\n')) {
    const line = raw.trimEnd();
    if (line.startsWith('*')) {
      state = { name: line.slice(1), chains: new Map(), rules: [] };
    } else if (line === 'COMMIT') {
      if (state !== null) out.push(...renderTable(state, removed, kept));
      state = null;
    } else if (state !== null && line.startsWith(':')) {
      const [name, policy] = line.slice(1).split(' ');
      if (name !== undefined) state.chains.set(name, policy !== undefined && policy !== '-');
    } else if (state !== null && line.startsWith('-A ')) {
      state.rules.push(line);
    }
  }
  return { script: out.length === 0 ? '' : out.join('\n') + '\n', removed, kept };
}
