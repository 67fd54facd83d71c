import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import type { EventRecorder } from './events.js';

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

export type SourceKind = 'file' | 'kubernetes';

export interface SourceState {
  readonly kind: SourceKind;
  /** True once the initial list (or first read) was delivered. */
  readonly synced: boolean;
  /** Seconds since the epoch of the last change or resync delivered; 0 before any. */
  readonly lastEventTime: number;
  /** The last error the source met, null while healthy. */
  readonly lastError: string | null;
  /** Free-form facts worth showing (file path, API server URL, resourceVersions). */
  readonly detail: Record<string, string | number | boolean>;
}

export interface Source {
  readonly kind: SourceKind;
  /** Starts delivering into `store`; resolves once the initial state has been delivered. */
  start(store: ObjectStore): Promise<void>;
  /**
   * Re-reads now (SIGHUP): the file source reads its file at once; the live
   * source has nothing to re-read (its watches keep it current), the full
   * resync that follows repairs the data plane and rules. Resolves with what
   * was done, for the one log line.
   */
  reread(): Promise<string>;
  /** Stops watching; safe to call twice. */
  stop(): Promise<void>;
  state(): SourceState;
  /** Where Kubernetes Events about objects go; only the live source has one. */
  recorder?(): EventRecorder | null;
}
