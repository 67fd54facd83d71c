/**
 * The shape the code keeps (issue "house in order"): data flows source ->
 * tracker -> syncer -> data plane / rules -> admin, so no module imports one
 * that imports it back, nothing in lib/ reaches up into lib/cli/, and the pure
 * core does no I/O.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

function sources(dir: string): string[] {
  return readdirSync(join(ROOT, dir), { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => relative(ROOT, join(e.parentPath, e.name)));
}

/** Relative imports of a file (type-only ones too: a cycle of types is still a tangle), resolved to .ts paths. */
function importsOf(file: string): { spec: string; target: string | null }[] {
  const text = readFileSync(join(ROOT, file), 'utf8');
  const out: { spec: string; target: string | null }[] = [];
  for (const m of text.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+'([^']+)'/gm)) {
    const spec = m[1]!;
    out.push({ spec, target: spec.startsWith('.') ? relative(ROOT, resolve(ROOT, dirname(file), spec)).replace(/\.js$/, '.ts') : null });
  }
  return out;
}

const LIB = [...sources('lib'), ...sources('bin')];
const graph = new Map(LIB.map((f) => [f, importsOf(f)]));

t.test('nothing in lib/ outside lib/cli/ imports lib/cli/', async (t) => {
  const offenders = LIB.filter((f) => f.startsWith('lib/') && !f.startsWith('lib/cli/')).flatMap((f) =>
    graph
      .get(f)!
      .filter((i) => i.target?.startsWith('lib/cli/'))
      .map((i) => `${f} -> ${i.spec}`),
  );
  t.same(offenders, []);
});

t.test('no import cycles in lib/ and bin/', async (t) => {
  const cycles: string[] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (f: string): void => {
    state.set(f, 'open');
    stack.push(f);
    for (const { target } of graph.get(f) ?? []) {
      if (target === null || !graph.has(target)) continue;
      if (state.get(target) === 'open') cycles.push([...stack.slice(stack.indexOf(target)), target].join(' -> '));
      else if (state.get(target) === undefined) visit(target);
    }
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of LIB) if (!state.has(f)) visit(f);
  t.same(cycles, []);
  t.ok(graph.size > 50, `${graph.size} modules read`);
});

t.test('the pure core (lib/core) imports no sockets, files, processes or other layers', async (t) => {
  const IO = /^node:(net|dgram|fs|fs\/promises|child_process|http|https|worker_threads)$/;
  // node:net's isIP family is a pure parser, not a socket.
  const pureNet = (f: string): boolean =>
    /import \{ isIP(v4|v6)?( as \w+)?(, isIP(v4|v6)?)* \} from 'node:net'/.test(readFileSync(join(ROOT, f), 'utf8'));
  const offenders = LIB.filter((f) => f.startsWith('lib/core/')).flatMap((f) =>
    graph
      .get(f)!
      .filter(
        (i) => (IO.test(i.spec) && !(i.spec === 'node:net' && pureNet(f))) || (i.target !== null && !i.target.startsWith('lib/core/')),
      )
      .map((i) => `${f} -> ${i.spec}`),
  );
  t.same(offenders, []);
});
