/**
 * Reads and parses a source file off the main thread: a 20 MB kubectl List
 * takes seconds to parse, and the data plane must not stop meanwhile. Only the
 * pruned objects cross back, in chunks, so that receiving them never blocks
 * the main thread long either. The caller ends the worker when idle; its heap
 * (the text, the YAML tree) goes with it.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { parentPort } from 'node:worker_threads';
import { errorMessage, isKupError } from '../core/errors.js';
import { decodeFileText } from './file-text.js';
import { parseKubeObjects } from './kube-yaml.js';
import type { ParseRequest, ParseMessage } from './parse-protocol.js';

const CHUNK = 500;

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
    for (let i = 0; i < parsed.services.length; i += CHUNK) post({ type: 'services', items: parsed.services.slice(i, i + CHUNK) });
    for (let i = 0; i < parsed.slices.length; i += CHUNK) post({ type: 'slices', items: parsed.slices.slice(i, i + CHUNK) });
    post({ type: 'done', hash, nodes: parsed.nodes, warnings: parsed.warnings });
  } catch (err) {
    post({ type: 'error', message: isKupError(err) ? err.message : `${req.path}: cannot parse: ${errorMessage(err)}` });
  }
}

// One request at a time: the file source never overlaps reads.
parentPort!.on('message', (req: ParseRequest) => void run(req));
