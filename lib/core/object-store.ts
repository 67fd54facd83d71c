/**
 * What the change tracker accepts from a source: Kubernetes objects one at a
 * time (watch events) or all at once (a file reload, a relist). It belongs to
 * the core, which sources feed; the core knows nothing of where objects come from.
 */
import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';

/**
 * What a source feeds. Objects arrive in their plain JSON shape (as an API
 * server sends them on a watch, or as YAML parses): a source that gets
 * deserialised models (client-node's list calls) converts them first, so the
 * translation reads one shape only.
 */
/**
 * What a source feeds. Objects arrive in their plain JSON shape (as an API
 * server sends them on a watch, or as YAML parses): a source that gets
 * deserialised models (client-node's list calls) converts them first, so the
 * translation reads one shape only.
 */
export interface ObjectStore {
  applyService(svc: V1Service): void;
  deleteService(namespace: string, name: string): void;
  applySlice(slice: V1EndpointSlice): void;
  deleteSlice(namespace: string, name: string): void;
  /** This proxy's own Node (for its zone label); null when it is missing. */
  applyNode(node: V1Node | null): void;
  /**
   * Replace everything at once (a file reload, a relist): objects absent from
   * `snapshot` are deleted, unchanged ones are left untouched so only what
   * really changed is synced.
   */
  replaceAll(snapshot: ObjectSnapshot): void;
}

export interface ObjectSnapshot {
  readonly services: readonly V1Service[];
  readonly slices: readonly V1EndpointSlice[];
  /** undefined leaves the node as it is. */
  readonly node?: V1Node | null;
}
