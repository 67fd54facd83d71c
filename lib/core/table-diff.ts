import type { ServicePort, ServicePortKey, ServiceTable } from './types.js';

/** What changed between two service tables; the data plane and the rules apply only this. */
export interface TableDiff {
  readonly added: readonly ServicePort[];
  readonly updated: readonly { readonly prev: ServicePort; readonly next: ServicePort }[];
  readonly removed: readonly ServicePort[];
}

export function isEmptyDiff(d: TableDiff): boolean {
  return d.added.length === 0 && d.updated.length === 0 && d.removed.length === 0;
}

/**
 * Service ports are plain data built in a fixed field and element order by
 * translate(), so their serialisations compare equal exactly when they are.
 */
export function servicePortEqual(a: ServicePort, b: ServicePort): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

/** Diff of the entries of `prev` and `next` whose keys are in `keys` (all keys of both when omitted). */
export function diffTables(prev: ServiceTable, next: ServiceTable, keys?: Iterable<ServicePortKey>): TableDiff {
  const added: ServicePort[] = [];
  const updated: { prev: ServicePort; next: ServicePort }[] = [];
  const removed: ServicePort[] = [];
  const scope = keys ?? new Set<ServicePortKey>([...prev.keys(), ...next.keys()]);
  for (const key of scope) {
    const a = prev.get(key);
    const b = next.get(key);
    if (a === undefined && b !== undefined) added.push(b);
    else if (a !== undefined && b === undefined) removed.push(a);
    else if (a !== undefined && b !== undefined && !servicePortEqual(a, b)) updated.push({ prev: a, next: b });
  }
  return { added, updated, removed };
}
