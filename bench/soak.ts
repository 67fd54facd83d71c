/**
 * `npm run soak`: a bounded soak of `kup run` (see spec/support/soak.ts),
 * printed and saved to bench/results/soak-latest.json. Exits 1 when a request
 * failed or memory or descriptors kept growing.
 *
 *   npm run soak                 # 5 minutes
 *   npm run soak -- --seconds 60
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { formatSoak, runSoak } from '../spec/support/soak.js';

const i = process.argv.indexOf('--seconds');
const seconds = i > 0 ? Number(process.argv[i + 1]) : 300;
if (!Number.isFinite(seconds) || seconds < 5 || seconds > 3600) {
  process.stderr.write('soak: --seconds takes 5 to 3600\n');
  process.exit(2);
}
const report = await runSoak({ seconds, log: (l) => process.stdout.write(`${l}\n`) });
process.stdout.write(`${formatSoak(report)}\n`);
const out = fileURLToPath(new URL('../../bench/results/', import.meta.url));
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'soak-latest.json'), `${JSON.stringify({ date: new Date().toISOString(), ...report }, null, 2)}\n`);
const failed = report.failures.connect + report.failures.keepAlive + report.failures.udp;
process.exit(failed === 0 && report.levelsOff ? 0 : 1);
