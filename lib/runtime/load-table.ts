import { ChangeTracker } from '../core/change-tracker.js';
import type { ServiceTable, UnsupportedPort } from '../core/types.js';
import { createSource, type SourceOptions } from '../sources/create-source.js';

/**
 * The service table a source describes right now, without opening any
 * listener: for commands that explain or print what `kup run` would do.
 */
export async function loadTable(
  opts: SourceOptions,
): Promise<{ table: ServiceTable; warnings: readonly string[]; unsupported: readonly UnsupportedPort[] }> {
  const tracker = new ChangeTracker({ nodeName: opts.nodeName });
  const source = await createSource(opts);
  try {
    await source.start(tracker);
  } finally {
    await source.stop();
  }
  const { warnings } = tracker.flush();
  return { table: tracker.current(), warnings, unsupported: tracker.unsupported() };
}

/** Sorted by key, so what is printed is stable. */
export function sortedPorts(table: ServiceTable) {
  return [...table.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}
