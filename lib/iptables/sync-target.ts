/**
 * The iptables rules as one of the syncer's targets. It must run after the
 * data plane target, so the proxy ports it reads are the listeners just opened.
 */
import { KupError } from '../core/errors.js';
import type { ProxyPorts, ServicePortKey } from '../core/types.js';
import type { SyncTarget } from '../sync/syncer.js';
import type { IptablesApplier } from './applier.js';

export function iptablesSyncTarget(applier: IptablesApplier, proxyPorts: () => ReadonlyMap<ServicePortKey, ProxyPorts>): SyncTarget {
  return {
    name: 'iptables',
    async sync(change) {
      // A diff sync whose rules are those installed costs no restore; a full one always restores.
      const ok = await applier.sync(change.table, proxyPorts(), change.full);
      // Thrown so the syncer's health and retry see it; the stderr is in the message.
      if (!ok) throw new KupError('KUP_IPTABLES', applier.status().lastError ?? 'iptables sync failed');
    },
  };
}
