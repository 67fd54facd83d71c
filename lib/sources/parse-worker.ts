/**
 * Reads and parses a source file off the main thread: a 20 MB kubectl List
 * takes seconds to parse, and the data plane must not stop meanwhile. Only the
 * pruned objects cross back, in chunks, so that receiving them never blocks
 * the main thread long either. The caller ends the worker when idle; its heap
 * (the text, the YAML tree) goes with it.
 */
import { createHash } from 'node:crypto';
import { readlinkSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { setPriority } from 'node:os';
import { parentPort } from 'node:worker_threads';
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
  const post = (m: ParseMessage): void => parentPort!.postMessage(m);
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

/**
 * Parse at a lower CPU priority than the data plane: on a busy node a long
 * parse must not take the cores the main thread needs. On Linux a thread has
 * its own nice value, addressed by its thread id (/proc/thread-self).
 */
function lowerPriority(): void {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (Number.isInteger(tid) && tid > 0) setPriority(tid, 10);
  } catch {
    // Not Linux, or not allowed: parse at normal priority.
  }
}

lowerPriority();
// One request at a time: the file source never overlaps reads.
parentPort!.on('message', (req: ParseRequest) => void run(req));
