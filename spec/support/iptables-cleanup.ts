/** Runs `cleanupIptables` (what `kup cleanup` does) inside a namespace; exit 0 on success, 1 with the message otherwise. */
import { pino } from 'pino';
import { cleanupIptables } from '../../lib/iptables/applier.js';

try {
  await cleanupIptables(pino({ level: 'info' }, pino.destination(2)));
} catch (err) {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
