/**
 * The iptables rules as one of the syncer's targets. It must run after the
 * data plane target, so the proxy ports it reads are the listeners just opened.
 * A failed apply throws (KupError KUP_IPTABLES, stderr in the message): the
 * syncer logs it, reports it in health and retries with backoff as a full sync.
 */
import type { ProxyPortNumbers, ServicePortKey } from '../core/types.js';
import type { SyncTarget } from '../sync/syncer.js';
import type { IptablesApplier } from './applier.js';

export function iptablesSyncTarget(applier: IptablesApplier, proxyPorts: () => ReadonlyMap<ServicePortKey, ProxyPortNumbers>): SyncTarget {
  return {
    name: 'iptables',
    // A diff sync whose rules are those installed costs no restore; a full one always restores.
    sync: (change) => applier.apply(change.table, proxyPorts(), change.full),
  };
}
