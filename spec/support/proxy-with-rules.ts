/**
 * `kup run --source file:PATH` with iptables rules, assembled from the real
 * parts the way lib/runtime/proxy-runtime.ts does, plus the iptables target
 * (which `kup run` does not wire yet). Run inside the node namespace:
 * `proxy-with-rules.js FILE`. Prints "synced" once rules are in place;
 * SIGTERM stops the proxy and removes the rules, exit 0.
 */
import { parseRunFlags, RUN_DEFAULTS } from '../../lib/cli/options.js';
import { ChangeTracker } from '../../lib/core/change-tracker.js';
import { Proxier } from '../../lib/dataplane/proxier.js';
import { IptablesApplier } from '../../lib/iptables/applier.js';
import { iptablesSyncTarget } from '../../lib/iptables/sync-target.js';
import { createLogger } from '../../lib/log.js';
import { createSource } from '../../lib/sources/create-source.js';
import { Syncer } from '../../lib/sync/syncer.js';

const [file = ''] = process.argv.slice(2);
const config = parseRunFlags({ ...RUN_DEFAULTS, source: `file:${file}`, hostnameOverride: 'node-a', iptables: true, minSyncPeriod: '0' });
const logger = createLogger('info');

const applier = new IptablesApplier({ logger, bindAddress: config.bindAddress, resyncPeriodMs: 0 });
await applier.start();
let syncer: Syncer | null = null;
const tracker = new ChangeTracker({ nodeName: config.hostname, onChange: () => syncer?.request() });
const proxier = new Proxier({
  bindAddress: config.bindAddress,
  portRange: config.portRange,
  lbStrategy: config.lbStrategy,
  udpTimeoutMs: config.udpTimeoutMs,
  udpMaxSessions: config.udpMaxSessions,
  tcpIdleTimeoutMs: config.tcpIdleTimeoutMs,
  logger,
});
syncer = new Syncer({
  tracker,
  targets: [
    { name: 'dataplane', sync: (c) => (c.full ? proxier.resync(c.table) : proxier.apply(c.diff)) },
    iptablesSyncTarget(applier, () => proxier.proxyPorts()),
  ],
  minSyncPeriodMs: config.minSyncPeriodMs,
  syncPeriodMs: config.syncPeriodMs,
  logger,
});
const source = await createSource({ source: config.source, kubeconfig: null, nodeName: config.hostname, logger });
await source.start(tracker);
const s = syncer;
await s.start();

process.once('SIGTERM', () => {
  void (async () => {
    await source.stop();
    await s.stop();
    await proxier.close(0);
    await applier.stop();
    process.exit(0);
  })();
});
process.stdout.write(`synced ${JSON.stringify(applier.status())}\n`);
