import { ListWatch, Watch, type KubeConfig, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { describeApiError } from './api-error.js';

/**
 * One client-node informer (ListWatch) kept alive. The informer relists by
 * itself on 410 Gone but stops for good on any other error; this restarts it
 * with backoff, so a proxy rides out API server restarts and network cuts
 * while its caches (and so its service table) keep the last known state.
 */

export interface Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
}

export interface InformerHandlers<T> {
  add(obj: T): void;
  update(obj: T): void;
  delete(obj: T): void;
  /** After each successful (re)list has been delivered, with the number of objects listed. */
  listed?(count: number): void;
  /** Called on each delivered change or relist, to track liveness. */
  activity?(): void;
}

export interface SupervisedInformerOptions<T extends KubernetesObject> {
  /** For logs: "services", "endpointslices", "node". */
  readonly resource: string;
  readonly path: string;
  readonly kc: KubeConfig;
  /** Must apply the same selectors as the watch and return plain JSON objects. */
  readonly list: () => Promise<KubernetesListObject<T>>;
  /**
   * Cuts a listed or watched object down to what kup reads, before the
   * informer caches it: the cache and kup's tracker then share one small copy
   * instead of holding the API server's whole object (managedFields, status,
   * targetRefs...). Must keep metadata name, namespace and resourceVersion.
   */
  readonly prune?: (obj: T) => T;
  readonly labelSelector?: string | undefined;
  readonly fieldSelector?: string | undefined;
  readonly logger: Logger;
  readonly handlers: InformerHandlers<T>;
  readonly restartBackoff: Backoff;
  /** A list that has not answered by then counts as failed (client-node sets no timeout on lists). */
  readonly listTimeoutMs: number;
  /**
   * Upper bound of the informer's own pause before re-watching after a clean
   * close. Its backoff grows to 30 s and is reset only by events, so on an idle
   * cluster a few server-side closes would leave the proxy unwatched for 30 s.
   */
  readonly maxWatchReconnectDelayMs: number;
}

/**
 * client-node's Watch, asking for bookmarks (they keep the resourceVersion
 * fresh on a quiet resource, so a reconnect after compaction needs no relist)
 * and reporting when a watch stream was established.
 */
class ReportingWatch<T> extends Watch {
  constructor(
    kc: KubeConfig,
    private readonly connected: () => void,
    private readonly isStopped: () => boolean,
    private readonly prune: ((obj: T) => T) | undefined,
  ) {
    super(kc);
  }

  override async watch(...args: Parameters<Watch['watch']>): ReturnType<Watch['watch']> {
    const [path, params, given, done] = args;
    const prune = this.prune;
    // ADDED/MODIFIED/DELETED carry the object; BOOKMARK and ERROR carry no object to keep.
    const callback: typeof given =
      prune === undefined
        ? given
        : (phase, obj, watchObj) =>
            given(phase, phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED' ? prune(obj as T) : obj, watchObj);
    if (this.isStopped()) {
      // The informer opens a watch after its list even when stopped meanwhile; refuse it.
      const controller = new AbortController();
      controller.abort();
      done(null);
      return controller;
    }
    let ended = false;
    const onDone: typeof done = (err) => {
      ended = true;
      done(err);
    };
    try {
      const controller = await super.watch(path, { ...params, allowWatchBookmarks: true }, callback, onDone);
      if (!ended) this.connected();
      return controller;
    } catch (err) {
      // Authentication plugins can throw before the request; an unhandled rejection here would kill the process.
      const controller = new AbortController();
      controller.abort();
      onDone(err);
      return controller;
    }
  }
}

export class SupervisedInformer<T extends KubernetesObject> {
  private readonly informer: ListWatch<T>;
  private readonly options: SupervisedInformerOptions<T>;
  private stopped = true;
  private restartTimer: NodeJS.Timeout | null = null;
  private nextRestartMs: number;
  private readonly stopWaiters = new Set<() => void>();
  private listedOnce = false;
  private listWaiters: (() => void)[] = [];
  private error: string | null = null;
  private restartCount = 0;
  private connectedWatches = 0;

  constructor(options: SupervisedInformerOptions<T>) {
    this.options = options;
    this.nextRestartMs = options.restartBackoff.initialMs;
    const watch = new ReportingWatch<T>(
      options.kc,
      () => this.onWatchConnected(),
      () => this.stopped,
      options.prune,
    );
    this.informer = new ListWatch<T>(options.path, watch, () => this.list(), false, options.labelSelector, options.fieldSelector, {
      delayFn: (ms) => this.delay(Math.min(ms, options.maxWatchReconnectDelayMs)),
    });
    const guard =
      (what: string, fn: (obj: T) => void) =>
      (obj: T): void => {
        if (this.stopped) return;
        try {
          fn(obj);
          options.handlers.activity?.();
        } catch (err) {
          // An exception thrown here would be swallowed by client-node's line parser; say it at least.
          options.logger.error({ resource: options.resource, err: describeApiError(err) }, `delivering a ${what} failed`);
        }
      };
    this.informer.on(
      'add',
      guard('add', (o) => options.handlers.add(o)),
    );
    this.informer.on(
      'update',
      guard('update', (o) => options.handlers.update(o)),
    );
    this.informer.on(
      'delete',
      guard('delete', (o) => options.handlers.delete(o)),
    );
    this.informer.on('error', (err) => this.onError(err));
  }

  get synced(): boolean {
    return this.listedOnce;
  }

  get lastError(): string | null {
    return this.error;
  }

  get restarts(): number {
    return this.restartCount;
  }

  get watchesConnected(): number {
    return this.connectedWatches;
  }

  get resourceVersion(): string {
    return this.informer.latestResourceVersion();
  }

  get size(): number {
    return this.informer.list().length;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.run();
  }

  /** Resolves after the first successful list has been delivered. */
  whenListed(): Promise<void> {
    if (this.listedOnce) return Promise.resolve();
    return new Promise((resolve) => this.listWaiters.push(resolve));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    for (const wake of this.stopWaiters) wake();
    this.stopWaiters.clear();
    await this.informer.stop();
  }

  private run(): void {
    this.informer.start().catch((err: unknown) => this.onError(err));
  }

  private async list(): Promise<KubernetesListObject<T>> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no answer to the list of ${this.options.resource} within ${this.options.listTimeoutMs} ms`)),
        this.options.listTimeoutMs,
      );
    });
    try {
      const listed = await Promise.race([this.options.list(), timeout]);
      const prune = this.options.prune;
      const result = prune === undefined ? listed : { ...listed, items: listed.items.map(prune) };
      // The informer delivers the listed objects right after this returns; report the list once they are out.
      setImmediate(() => this.onListed(result.items.length));
      return result;
    } finally {
      clearTimeout(timer);
    }
  }

  private onListed(count: number): void {
    if (this.stopped) return;
    this.error = null;
    this.nextRestartMs = this.options.restartBackoff.initialMs;
    this.options.handlers.listed?.(count);
    this.options.handlers.activity?.();
    if (!this.listedOnce) {
      this.listedOnce = true;
      for (const resolve of this.listWaiters) resolve();
      this.listWaiters = [];
    }
  }

  private onWatchConnected(): void {
    this.connectedWatches++;
    this.error = null;
    this.nextRestartMs = this.options.restartBackoff.initialMs;
  }

  private onError(err: unknown): void {
    this.error = describeApiError(err);
    if (this.stopped || this.restartTimer) return;
    const delayMs = this.nextRestartMs;
    this.nextRestartMs = Math.min(delayMs * 2, this.options.restartBackoff.maxMs);
    this.restartCount++;
    this.options.logger.warn(
      { resource: this.options.resource, err: this.error, retryInMs: delayMs, keptObjects: this.size },
      `watching ${this.options.resource} failed (${this.error}); keeping the last known state and restarting in ${delayMs / 1000}s`,
    );
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (!this.stopped) this.run();
    }, delayMs);
  }

  /** A pause that stop() cuts short (client-node awaits it and must not see a rejection). */
  private delay(ms: number): Promise<void> {
    if (this.stopped || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = (): void => {
        clearTimeout(timer);
        this.stopWaiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.stopWaiters.add(wake);
    });
  }
}
