/**
 * Kubernetes Events a proxy reports about objects (kube-proxy's recorder):
 * what is said, independent of how it reaches the API server.
 */

/** The object an event is about (events.k8s.io/v1 `regarding`). */
export interface EventRegarding {
  readonly kind: 'Service' | 'Node';
  /** "" for cluster-scoped objects (a Node). */
  readonly namespace: string;
  readonly name: string;
  /** kube-proxy sets it to "namespace/name" (or the node name); the object's UID is not at hand. */
  readonly uid: string;
}

export interface ProxyEvent {
  readonly regarding: EventRegarding;
  readonly type: 'Normal' | 'Warning';
  /** Machine-readable, CamelCase (e.g. FailedToStartServiceHealthcheck). */
  readonly reason: string;
  /** What was being done (e.g. Listen, StartKubeProxy). */
  readonly action: string;
  /** For people; may be "". */
  readonly note: string;
}

/** Fire and forget: recording never blocks or fails the caller. */
export interface EventRecorder {
  record(event: ProxyEvent): void;
  /** Waits for events already handed over (shutdown, tests). */
  flush(): Promise<void>;
}
