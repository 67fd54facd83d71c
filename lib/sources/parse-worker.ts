/**
 * Reads and parses a source file in a child process: a 20 MB kubectl List
 * takes seconds to parse, and the data plane must not stop meanwhile. Only the
 * pruned objects cross back, in chunks, so that receiving them never blocks
 * kup's event loop long either. A process rather than a worker thread: when
 * the caller ends it (idle), all its memory goes back to the system, which a
 * worker thread's does not (the allocator keeps it for the process).
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { setPriority } from 'node:os';
import { errorMessage, isKupError } from '../core/errors.js';
import { decodeFileText } from './file-text.js';
import { parseKubeObjects } from './kube-yaml.js';
import type { ParseRequest, ParseMessage } from './parse-protocol.js';

const CHUNK = 250;

/**
 * Replaces an object's resourceVersion by a hash of its (pruned) content.
 * People edit files without bumping resourceVersion, so the content is what
 * tells a changed object; hashing it here spares the main thread from
 * serialising 10,000 objects to compare them at each reload.
 */
function stampContent(obj: { metadata?: { resourceVersion?: string } }): void {
  const meta = obj.metadata;
  if (meta === undefined || typeof meta !== 'object') return;
  delete meta.resourceVersion;
  meta.resourceVersion = `content:${createHash('sha1').update(JSON.stringify(obj)).digest('base64')}`;
}

async function run(req: ParseRequest): Promise<void> {
  const post = (m: ParseMessage): void => void process.send!(m);
  let bytes: Buffer;
  try {
    bytes = await readFile(req.path);
  } catch (err) {
    post({ type: 'error', message: `cannot read ${req.path}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}` });
    return;
  }
  const hash = createHash('sha256').update(bytes).digest('hex');
  if (hash === req.previousHash) {
    post({ type: 'unchanged' });
    return;
  }
  try {
    const parsed = parseKubeObjects(decodeFileText(bytes, req.path), req.path);
    for (const obj of [...parsed.services, ...parsed.slices]) stampContent(obj);
    for (let i = 0; i < parsed.services.length; i += CHUNK) post({ type: 'services', items: parsed.services.slice(i, i + CHUNK) });
    for (let i = 0; i < parsed.slices.length; i += CHUNK) post({ type: 'slices', items: parsed.slices.slice(i, i + CHUNK) });
    post({ type: 'done', hash, nodes: parsed.nodes, warnings: parsed.warnings });
  } catch (err) {
    post({ type: 'error', message: isKupError(err) ? err.message : `${req.path}: cannot parse: ${errorMessage(err)}` });
  }
}

// Parse at a lower CPU priority than the data plane: on a busy node a long
// parse must not take the cores kup's event loop needs.
try {
  setPriority(10);
} catch {
  // Not allowed: parse at normal priority.
}
// One request at a time: the file source never overlaps reads.
process.on('message', (req: ParseRequest) => void run(req));
// kup gone (or done with us): nothing left to do.
process.on('disconnect', () => process.exit(0));
