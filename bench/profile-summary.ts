/**
 * node dist/bench/profile-summary.js FILE.cpuprofile [N]
 *
 * Self time by function (and by category: GC, native, idle) from a V8 CPU
 * profile written by `node --cpu-prof`: the flat view of a flame graph.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const file = process.argv[2];
if (file === undefined) throw new Error('usage: profile-summary FILE.cpuprofile [N]');
const top = Number(process.argv[3] ?? 30);
const prof = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const byId = new Map<number, ProfileNode>();
for (const n of prof.nodes) byId.set(n.id, n);
const self = new Map<string, number>();
let total = 0;
for (let i = 0; i < prof.samples.length; i++) {
  const n = byId.get(prof.samples[i]!);
  const dt = prof.timeDeltas[i] ?? 0;
  if (n === undefined) continue;
  const f = n.callFrame;
  const where = f.url === '' ? '' : ` ${f.url.replace(/^.*\/(node_modules|dist)\//, '$1/').replace(/^node:/, '')}:${f.lineNumber + 1}`;
  const key = `${f.functionName === '' ? '(anonymous)' : f.functionName}${where}`;
  self.set(key, (self.get(key) ?? 0) + dt);
  total += dt;
}
const idle = self.get('(idle)') ?? 0;
process.stdout.write(`${file}: ${(total / 1e6).toFixed(1)} s sampled, ${(100 * (1 - idle / total)).toFixed(1)}% busy\n`);
for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  process.stdout.write(`${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}\n`);
}
