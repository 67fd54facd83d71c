/**
 * Runs the real IptablesApplier behind the real Syncer inside a namespace (so
 * every iptables command it issues is confined there):
 * `iptables-driver.js FIXTURE.json SYNC_PERIOD_MS [BIND]`. Starts, syncs the
 * fixture, prints `{ok, status}` as a JSON line; each stdin line naming
 * another fixture file syncs that one and prints again. The syncer's periodic
 * full sync (SYNC_PERIOD_MS; 0 = hourly, i.e. never in a test) repairs rules
 * removed by hand. SIGTERM stops (removing the rules) and exits 0. Logs go to stderr.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { pino } from 'pino';
import { diffTables } from '../../lib/core/table-diff.js';
import type { ProxyPortNumbers, ServicePortKey, ServiceTable } from '../../lib/core/types.js';
import { IptablesApplier } from '../../lib/iptables/applier.js';
import { iptablesSyncTarget } from '../../lib/iptables/sync-target.js';
import { Syncer } from '../../lib/sync/syncer.js';
import { fixtureFromJson } from './service-fixtures.js';

const [fixturePath = '', periodText = '0', bind = '0.0.0.0'] = process.argv.slice(2);
const logger = pino({ level: 'debug' }, pino.destination(2));
const applier = new IptablesApplier({ logger, bindAddress: bind });

/** The tracker's part the syncer reads, fed with whole fixture tables. */
let applied: ServiceTable = new Map();
let desired: { table: ServiceTable; proxyPorts: ReadonlyMap<ServicePortKey, ProxyPortNumbers> } = fixtureFromJson(
  readFileSync(fixturePath, 'utf8'),
);
/** Bumped per fixture; a sync that flushed generation >= `awaited` answers the stdin line. */
let generation = 0;
let flushed = 0;
let awaited = 0;
const tracker = {
  flush() {
    const diff = diffTables(applied, desired.table);
    applied = desired.table;
    flushed = generation;
    return { diff, warnings: [], servicesChanged: diff.added.length + diff.updated.length + diff.removed.length, triggerTimes: [] };
  },
  current: () => applied,
};
const period = Number(periodText);
const syncer = new Syncer({
  tracker,
  targets: [iptablesSyncTarget(applier, () => desired.proxyPorts)],
  minSyncPeriodMs: 0,
  syncPeriodMs: period > 0 ? period : 3_600_000,
  retryBackoff: { initialMs: 100, maxMs: 1000 },
  logger,
});
syncer.onSync((r) => {
  if (awaited === 0 || flushed < awaited) return;
  awaited = 0;
  process.stdout.write(JSON.stringify({ ok: r.ok, status: applier.status() }) + '\n');
});

let stopping = false;
process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  void syncer
    .stop()
    .then(() => applier.stop())
    .then(() => process.exit(0));
});

await applier.start();
awaited = ++generation;
await syncer.start();
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() === '') return;
  desired = fixtureFromJson(readFileSync(line.trim(), 'utf8'));
  awaited = ++generation;
  syncer.request();
});
