import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { LineCounter, parseAllDocuments } from 'yaml';
import { errorMessage, KupError } from '../core/errors.js';
import { pruneKubeObject } from '../core/kube-prune.js';
import { asArray, asObject, asString, printable } from '../core/object-fields.js';
import type { ObjectSnapshot } from '../core/object-store.js';

export interface ParsedObjects extends ObjectSnapshot {
  readonly services: V1Service[];
  readonly slices: V1EndpointSlice[];
  /** Nodes in the file; the caller picks its own by name. */
  readonly nodes: V1Node[];
  /** One line per object that was skipped, naming it. */
  readonly warnings: string[];
}

/** What to write to remove every service on purpose (an empty file is taken for a half-written one). */
export const EMPTY_LIST_HINT = 'to remove every service, write an empty List (apiVersion: v1, kind: List, items: [])';

/**
 * Reads Kubernetes objects as `kubectl get svc,endpointslices -o yaml|json`
 * prints them: multi-document YAML (merge keys `<<:` allowed), `kind: List`
 * (or any *List) wrappers, JSON through JSON.parse. Kinds other than Service,
 * EndpointSlice and Node are ignored; objects that are not objects are
 * skipped with a warning. Kept objects carry only the fields kup reads.
 *
 * These fail the whole read (the caller keeps its last good state): text that
 * is not YAML/JSON; a file with no document at all (what a shell redirect
 * leaves while it is still writing); a document with `items` but no `kind`
 * (kubectl prints `kind: List` after the items, so that is a cut-off List).
 */
export function parseKubeObjects(text: string, origin: string): ParsedObjects {
  const out: ParsedObjects = { services: [], slices: [], nodes: [], warnings: [] };
  const values = /^\s*\{/.test(text) ? parseJson(text, origin) : parseYaml(text, origin);
  if (values.every((v) => v === null || v === undefined)) {
    throw new KupError('KUP_BAD_FILE', `${origin}: no objects in the file (empty, or still being written); ${EMPTY_LIST_HINT}`);
  }
  values.forEach((value, i) => {
    const where = values.length > 1 ? `${origin} document ${i + 1}` : origin;
    const obj = asObject(value);
    if (obj !== undefined && obj['items'] !== undefined && obj['kind'] === undefined) {
      throw new KupError('KUP_BAD_FILE', `${where}: has items but no kind (a List cut short while it is being written?)`);
    }
    collect(value, where, out, 0);
  });
  return out;
}

function parseJson(text: string, origin: string): unknown[] {
  try {
    return [JSON.parse(text) as unknown];
  } catch (err) {
    throw new KupError('KUP_BAD_FILE', `${origin}: not valid JSON: ${errorMessage(err)}`);
  }
}

function parseYaml(text: string, origin: string): unknown[] {
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { merge: true, lineCounter: lines, prettyErrors: false });
  const list = Array.isArray(docs) ? docs : [docs];
  return list.map((doc, i) => {
    const what = list.length > 1 ? ` (document ${i + 1})` : '';
    const e = doc.errors[0];
    if (e !== undefined) {
      const { line, col } = lines.linePos(e.pos[0]);
      throw new KupError('KUP_BAD_FILE', `${origin}:${line}:${col}: not valid YAML${what}: ${oneLine(e.message)}`);
    }
    try {
      return doc.toJS({ maxAliasCount: 100 }) as unknown;
    } catch (err) {
      // Unresolved aliases, alias bombs: the user's file, not kup, is at fault.
      throw new KupError('KUP_BAD_FILE', `${origin}: not valid YAML${what}: ${oneLine(errorMessage(err))}`);
    }
  });
}

function oneLine(message: string): string {
  return message.split('\n')[0]!.replace(/[\s:;.]+$/, '');
}

function collect(value: unknown, where: string, out: ParsedObjects, depth: number): void {
  if (value === null || value === undefined) return; // empty document
  const obj = asObject(value);
  if (obj === undefined) {
    out.warnings.push(`${where}: not a Kubernetes object (${printable(value, 40)}); skipped`);
    return;
  }
  const kind = asString(obj['kind']);
  const apiVersion = asString(obj['apiVersion']);
  if (kind !== undefined && kind.endsWith('List') && depth === 0) {
    asArray(obj['items']).forEach((item, j) => collect(item, `${where} item ${j + 1}`, out, depth + 1));
    return;
  }
  switch (kind) {
    case 'Service':
      if (apiVersion !== undefined && apiVersion !== 'v1') {
        out.warnings.push(`${where}: Service of apiVersion ${printable(apiVersion)} is not v1; skipped`);
      } else out.services.push(pruneKubeObject(obj));
      return;
    case 'EndpointSlice':
      if (apiVersion !== undefined && apiVersion !== 'discovery.k8s.io/v1') {
        out.warnings.push(`${where}: EndpointSlice of apiVersion ${printable(apiVersion)} is not discovery.k8s.io/v1; skipped`);
      } else out.slices.push(pruneKubeObject(obj) as unknown as V1EndpointSlice);
      return;
    case 'Node':
      out.nodes.push(pruneKubeObject(obj));
      return;
    case undefined:
      out.warnings.push(`${where}: object has no kind; skipped`);
      return;
    default:
      // Deployments, Pods, ... in the same file are fine: not ours.
      return;
  }
}
