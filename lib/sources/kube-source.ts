import type { KubeConfig, KubernetesObject, V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { KupError } from '../core/errors.js';
import { pruneKubeObject } from '../core/kube-prune.js';
import type { Obj } from '../core/object-fields.js';
import type { EventRecorder } from './events.js';
import { KubeEventRecorder } from './kube-event-recorder.js';
import { loadKubeConfig } from './kubeconfig.js';
import { listPlain } from './plain-list.js';
import type { ObjectStore } from '../core/object-store.js';
import type { Source, SourceState } from './source.js';
import { SupervisedInformer, type Backoff } from './supervised-informer.js';

/**
 * The live source: follows a cluster's Services, EndpointSlices and this
 * node's Node through client-node informers, with kube-proxy's selectors.
 * Informer events go straight to the store; batching syncs is the syncer's
 * business downstream.
 */

/** kube-proxy's selectors: other proxies' services and headless ones are not ours. */
export const PROXY_LABEL_SELECTOR = '!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless';
export const SERVICE_FIELD_SELECTOR = 'spec.clusterIP!=None';

export interface KubeSourceOptions {
  /** --kubeconfig; absent: $KUBECONFIG, ~/.kube/config, then in-cluster. */
  readonly kubeconfig?: string | undefined;
  /** Overrides the kubeconfig lookup (tests, embedding). */
  readonly kubeConfig?: KubeConfig;
  /** This node's name (--hostname-override, lowercased as kube-proxy does). */
  readonly nodeName: string;
  readonly logger: Logger;
  readonly restartBackoff?: Backoff;
  readonly listTimeoutMs?: number;
  readonly maxWatchReconnectDelayMs?: number;
}

const DEFAULT_BACKOFF: Backoff = { initialMs: 1000, maxMs: 30_000 };

/**
 * The informer's object cut to what kup reads (watch events may omit kind;
 * the informer knows it). At 10,000 services this is most of kup's heap.
 */
function pruneAs<T extends KubernetesObject>(apiVersion: string, kind: string): (obj: T) => T {
  return (obj) => pruneKubeObject({ ...(obj as unknown as Obj), apiVersion, kind }) as unknown as T;
}

function nameOf(obj: KubernetesObject): { namespace: string; name: string } {
  return { namespace: obj.metadata?.namespace ?? '', name: obj.metadata?.name ?? '' };
}

export class KubeSource implements Source {
  readonly kind = 'kubernetes' as const;
  private readonly options: KubeSourceOptions;
  private readonly kc: KubeConfig;
  private readonly origin: string;
  private readonly server: string;
  private readonly nodeName: string;
  private informers: {
    services: SupervisedInformer<V1Service>;
    slices: SupervisedInformer<V1EndpointSlice>;
    node: SupervisedInformer<V1Node>;
  } | null = null;
  private lastEvent = 0;
  private stopped = false;
  private events: KubeEventRecorder | null = null;
  private abortStart: ((err: Error) => void) | null = null;

  /** Throws KupError (KUP_NO_SOURCE, KUP_BAD_FILE) when no usable kubeconfig is found. */
  constructor(options: KubeSourceOptions) {
    this.options = options;
    if (options.kubeConfig) {
      this.kc = options.kubeConfig;
      this.origin = 'given KubeConfig';
      this.server = options.kubeConfig.getCurrentCluster()?.server ?? '';
    } else {
      const loaded = loadKubeConfig({ kubeconfig: options.kubeconfig });
      this.kc = loaded.kc;
      this.origin = loaded.origin;
      this.server = loaded.server;
    }
    this.nodeName = options.nodeName.toLowerCase();
    if (this.nodeName === '') throw new KupError('KUP_BAD_FLAG', "the live source needs this node's name (--hostname-override)");
  }

  async start(store: ObjectStore): Promise<void> {
    if (this.informers || this.stopped) throw new Error('a KubeSource starts once');
    const { logger } = this.options;
    const kc = this.kc;
    const common = {
      kc: this.kc,
      logger,
      restartBackoff: this.options.restartBackoff ?? DEFAULT_BACKOFF,
      listTimeoutMs: this.options.listTimeoutMs ?? 60_000,
      maxWatchReconnectDelayMs: this.options.maxWatchReconnectDelayMs ?? 2000,
    };
    const touched = (): void => {
      this.lastEvent = Date.now() / 1000;
    };
    const nodeFieldSelector = `metadata.name=${this.nodeName}`;
    let nodeKnown: boolean | null = null;
    const deliverNode = (node: V1Node | null): void => {
      nodeKnown = node !== null;
      store.applyNode(node);
    };

    const services = new SupervisedInformer<V1Service>({
      ...common,
      resource: 'services',
      path: '/api/v1/services',
      labelSelector: PROXY_LABEL_SELECTOR,
      fieldSelector: SERVICE_FIELD_SELECTOR,
      prune: pruneAs<V1Service>('v1', 'Service'),
      // Plain JSON, not client-node's typed models (see listPlain).
      list: () =>
        listPlain<V1Service>(kc, {
          path: '/api/v1/services',
          labelSelector: PROXY_LABEL_SELECTOR,
          fieldSelector: SERVICE_FIELD_SELECTOR,
          apiVersion: 'v1',
          kind: 'Service',
        }),
      handlers: {
        add: (svc) => store.applyService(svc),
        update: (svc) => store.applyService(svc),
        delete: (svc) => {
          const { namespace, name } = nameOf(svc);
          store.deleteService(namespace, name);
        },
        activity: touched,
      },
    });
    const slices = new SupervisedInformer<V1EndpointSlice>({
      ...common,
      resource: 'endpointslices',
      path: '/apis/discovery.k8s.io/v1/endpointslices',
      labelSelector: PROXY_LABEL_SELECTOR,
      prune: pruneAs<V1EndpointSlice>('discovery.k8s.io/v1', 'EndpointSlice'),
      list: () =>
        listPlain<V1EndpointSlice>(kc, {
          path: '/apis/discovery.k8s.io/v1/endpointslices',
          labelSelector: PROXY_LABEL_SELECTOR,
          apiVersion: 'discovery.k8s.io/v1',
          kind: 'EndpointSlice',
        }),
      handlers: {
        add: (slice) => store.applySlice(slice),
        update: (slice) => store.applySlice(slice),
        delete: (slice) => {
          const { namespace, name } = nameOf(slice);
          store.deleteSlice(namespace, name);
        },
        activity: touched,
      },
    });
    const node = new SupervisedInformer<V1Node>({
      ...common,
      resource: 'node',
      path: '/api/v1/nodes',
      fieldSelector: nodeFieldSelector,
      prune: pruneAs<V1Node>('v1', 'Node'),
      list: () => listPlain<V1Node>(kc, { path: '/api/v1/nodes', fieldSelector: nodeFieldSelector, apiVersion: 'v1', kind: 'Node' }),
      handlers: {
        add: (n) => deliverNode(n),
        update: (n) => deliverNode(n),
        delete: () => deliverNode(null),
        listed: (count) => {
          // A node that does not exist yet is worth saying (health reports it), once.
          if (count === 0 && nodeKnown !== false) {
            logger.warn({ node: this.nodeName }, `node ${this.nodeName} not found in the cluster; topology hints are off`);
            deliverNode(null);
          }
        },
        activity: touched,
      },
    });
    this.informers = { services, slices, node };
    logger.info({ server: this.server, kubeconfig: this.origin, node: this.nodeName }, 'following the Kubernetes API server');

    const stopped = new Promise<never>((_, reject) => {
      this.abortStart = reject;
    });
    services.start();
    slices.start();
    node.start();
    await Promise.race([Promise.all([services.whenListed(), slices.whenListed()]), stopped]);
    this.abortStart = null;
    logger.info({ services: services.size, endpointSlices: slices.size }, 'initial list of services and endpointslices delivered');
  }

  /**
   * Nothing to re-read: the watches keep the caches current, and a relist of
   * every Service and EndpointSlice on a signal would load the API server for
   * no gain. The full resync that follows re-asserts listeners and rules.
   */
  reread(): Promise<string> {
    return Promise.resolve(`${this.server}: watches are current`);
  }

  /** Events go through the same kubeconfig and credentials as the watches (RBAC: create/patch events). */
  recorder(): EventRecorder {
    this.events ??= new KubeEventRecorder({ kc: this.kc, nodeName: this.nodeName, logger: this.options.logger });
    return this.events;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.events?.stop();
    this.abortStart?.(new KupError('KUP_NO_SOURCE', 'stopped before the Kubernetes API server answered the initial list'));
    this.abortStart = null;
    if (!this.informers) return;
    const { services, slices, node } = this.informers;
    await Promise.all([services.stop(), slices.stop(), node.stop()]);
  }

  state(): SourceState {
    const detail: Record<string, string | number | boolean> = {
      server: this.server,
      kubeconfig: this.origin,
      node: this.nodeName,
    };
    const i = this.informers;
    if (!i) return { kind: this.kind, synced: false, lastEventTime: 0, lastError: null, detail };
    const entries = [
      ['services', i.services],
      ['endpointSlices', i.slices],
      ['node', i.node],
    ] as const;
    const errors: string[] = [];
    for (const [name, inf] of entries) {
      detail[`${name}ResourceVersion`] = inf.resourceVersion;
      detail[`${name}Restarts`] = inf.restarts;
      detail[`${name}Watches`] = inf.watchesConnected;
      if (inf.lastError !== null) errors.push(`${name}: ${inf.lastError}`);
    }
    detail.services = i.services.size;
    detail.endpointSlices = i.slices.size;
    return {
      kind: this.kind,
      synced: i.services.synced && i.slices.synced,
      lastEventTime: this.lastEvent,
      lastError: errors.length > 0 ? errors.join('; ') : null,
      detail,
    };
  }
}
