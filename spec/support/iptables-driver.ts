/**
 * Runs the real IptablesApplier inside a namespace (so every iptables command
 * it issues is confined there): `iptables-driver.js FIXTURE.json RESYNC_MS`.
 * Starts, syncs the fixture, prints the status as a JSON line; each stdin
 * line naming another fixture file syncs that one; SIGTERM stops (removing
 * the rules) and exits 0. Logs go to stderr.
 */
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { pino } from 'pino';
import { IptablesApplier } from '../../lib/iptables/applier.js';
import { fixtureFromJson } from './service-fixtures.js';

const [fixturePath = '', resyncText = '0', bind = '0.0.0.0'] = process.argv.slice(2);
const logger = pino({ level: 'debug' }, pino.destination(2));
const applier = new IptablesApplier({ logger, bindAddress: bind, resyncPeriodMs: Number(resyncText), backoff: { initialMs: 100, maxMs: 1000 } });

const syncFile = async (path: string): Promise<void> => {
  const { table, proxyPorts } = fixtureFromJson(readFileSync(path, 'utf8'));
  const ok = await applier.sync(table, proxyPorts);
  process.stdout.write(JSON.stringify({ ok, status: applier.status() }) + '\n');
};

let stopping = false;
process.on('SIGTERM', () => {
  if (stopping) return;
  stopping = true;
  void applier.stop().then(() => process.exit(0));
});

await applier.start();
await syncFile(fixturePath);
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() !== '') void syncFile(line.trim());
});
