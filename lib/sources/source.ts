import type { ObjectStore } from '../core/object-store.js';
import type { EventRecorder } from './events.js';

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
