import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { KupError } from '../core/errors.js';
import { asArray, asObject, asString, printable } from '../core/object-fields.js';
import type { ObjectSnapshot } from './source.js';

export interface ParsedObjects extends ObjectSnapshot {
  readonly services: V1Service[];
  readonly slices: V1EndpointSlice[];
  /** Nodes in the file; the caller picks its own by name. */
  readonly nodes: V1Node[];
  /** One line per object that was skipped, naming it. */
  readonly warnings: string[];
}

/**
 * Reads Kubernetes objects as `kubectl get svc,endpointslices -o yaml` prints
 * them: multi-document YAML, `kind: List` (or any *List) wrappers, JSON too.
 * Kinds other than Service, EndpointSlice and Node are ignored; objects that
 * are not objects are skipped with a warning. A document that is not YAML at
 * all fails the whole read (the caller keeps its last good state).
 */
export function parseKubeObjects(text: string, origin: string): ParsedObjects {
  const out: ParsedObjects = { services: [], slices: [], nodes: [], warnings: [] };
  let docs;
  try {
    docs = parseAllDocuments(text, { prettyErrors: true });
  } catch (err) {
    throw new KupError('KUP_BAD_FILE', `${origin}: not YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  const list = Array.isArray(docs) ? docs : [docs];
  list.forEach((doc, i) => {
    if (doc.errors.length > 0) {
      const e = doc.errors[0]!;
      const line = e.linePos?.[0]?.line;
      throw new KupError(
        'KUP_BAD_FILE',
        `${origin}${line !== undefined ? `:${line}` : ''}: not valid YAML (document ${i + 1}): ${e.message.split('\n')[0]}`,
      );
    }
    collect(doc.toJS({ maxAliasCount: 100 }) as unknown, `${origin} document ${i + 1}`, out, 0);
  });
  return out;
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
      } else out.services.push(obj);
      return;
    case 'EndpointSlice':
      if (apiVersion !== undefined && apiVersion !== 'discovery.k8s.io/v1') {
        out.warnings.push(`${where}: EndpointSlice of apiVersion ${printable(apiVersion)} is not discovery.k8s.io/v1; skipped`);
      } else out.slices.push(obj as unknown as V1EndpointSlice);
      return;
    case 'Node':
      out.nodes.push(obj);
      return;
    case undefined:
      out.warnings.push(`${where}: object has no kind; skipped`);
      return;
    default:
      // Deployments, Pods, ... in the same file are fine: not ours.
      return;
  }
}
