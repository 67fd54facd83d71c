/**
 * The error catalogue, the code and README in step: every code in
 * lib/core/errors.ts is thrown somewhere in lib/, and README's "Error codes"
 * table lists exactly those codes, each with a meaning and what to do.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { KUP_ERRORS } from '../lib/core/errors.js';

const ROOT = new URL('../..', import.meta.url).pathname;

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => join(e.parentPath, e.name));
}

const catalogue = Object.keys(KUP_ERRORS).sort();

t.test('every catalogued code is thrown in lib/, and only those', async (t) => {
  const thrown = new Set<string>();
  for (const file of sources('lib')) {
    for (const m of readFileSync(file, 'utf8').matchAll(/new KupError\(\s*'(KUP_\w+)'/g)) thrown.add(m[1]!);
  }
  t.same([...thrown].sort(), catalogue, 'the codes thrown are the catalogue');
  for (const [code, meaning] of Object.entries(KUP_ERRORS))
    t.ok(meaning.length > 20 && !meaning.includes('\n'), `${code} has a one-line meaning`);
});

t.test('README documents each code: what it means, what to do', async (t) => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = /^## Error codes\n([\s\S]*?)(?=^## |(?![\s\S]))/m.exec(readme)?.[1];
  if (section === undefined) return t.fail('README has an "## Error codes" section');
  const rows = section
    .split('\n')
    .filter((l) => /^\| `KUP_/.test(l))
    .map((l) =>
      l
        .split('|')
        .slice(1, -1)
        .map((c) => c.trim()),
    );
  t.same(rows.map((r) => r[0]!.replace(/`/g, '')).sort(), catalogue, 'one row per code, no others');
  for (const r of rows) t.ok(r.length === 3 && r[1]!.length > 10 && r[2]!.length > 10, `${r[0]}: code, meaning, what to do`);
});
