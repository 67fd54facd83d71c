import { EventsV1Api, V1MicroTime, type EventsV1Event, type KubeConfig } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { errorMessage } from '../core/errors.js';
import type { EventRecorder, ProxyEvent } from './events.js';

export interface KubeEventRecorderOptions {
  readonly kc: KubeConfig;
  readonly nodeName: string;
  readonly logger: Logger;
  /** One event per object and reason per this period; the rest are dropped. */
  readonly perObjectPeriodMs?: number;
  /** Events being sent at once; beyond it new ones are dropped, so a slow API server never piles them up. */
  readonly maxInFlight?: number;
}

/** kube-proxy's recorder names itself so; kup names itself. */
export const REPORTING_CONTROLLER = 'kup';

/**
 * Sends events to the API server as kube-proxy's recorder does
 * (events.k8s.io/v1, into the object's namespace, "default" for a Node),
 * best effort: nothing waits on it, a failure is logged once per reason, and
 * it is rate-limited per object and reason.
 */
export class KubeEventRecorder implements EventRecorder {
  private readonly api: EventsV1Api;
  private readonly opts: KubeEventRecorderOptions;
  private readonly lastSent = new Map<string, number>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly failing = new Set<string>();
  private stopped = false;

  constructor(opts: KubeEventRecorderOptions) {
    this.opts = opts;
    this.api = opts.kc.makeApiClient(EventsV1Api);
  }

  record(e: ProxyEvent): void {
    if (this.stopped) return;
    const now = Date.now();
    const key = `${e.regarding.kind}/${e.regarding.namespace}/${e.regarding.name}/${e.reason}`;
    const last = this.lastSent.get(key);
    if (last !== undefined && now - last < (this.opts.perObjectPeriodMs ?? 60_000)) return;
    if (this.inFlight.size >= (this.opts.maxInFlight ?? 16)) return;
    this.lastSent.set(key, now);
    // Old keys go once the map grows, so a churn of objects cannot grow it without bound.
    if (this.lastSent.size > 4096) for (const [k, t] of this.lastSent) if (now - t > 60_000) this.lastSent.delete(k);
    const p = this.send(e, now).finally(() => this.inFlight.delete(p));
    this.inFlight.add(p);
  }

  async flush(): Promise<void> {
    await Promise.all([...this.inFlight]);
  }

  /** No new events. Those under way are not waited for: an API server that does not answer must not hold up shutdown. */
  stop(): void {
    this.stopped = true;
  }

  private async send(e: ProxyEvent, now: number): Promise<void> {
    const namespace = e.regarding.namespace === '' ? 'default' : e.regarding.namespace;
    const body: EventsV1Event = {
      apiVersion: 'events.k8s.io/v1',
      kind: 'Event',
      // client-go's naming: the object's name and the time in hex nanoseconds.
      metadata: { name: `${e.regarding.name}.${(BigInt(now) * 1_000_000n).toString(16)}`, namespace },
      // MicroTime: six fractional digits, which the API server requires.
      eventTime: new V1MicroTime(now),
      reportingController: REPORTING_CONTROLLER,
      reportingInstance: `${REPORTING_CONTROLLER}-${this.opts.nodeName}`,
      action: e.action,
      reason: e.reason,
      regarding: {
        kind: e.regarding.kind,
        name: e.regarding.name,
        uid: e.regarding.uid,
        ...(e.regarding.namespace !== '' ? { namespace: e.regarding.namespace } : {}),
      },
      type: e.type,
      ...(e.note !== '' ? { note: e.note.slice(0, 1024) } : {}),
    };
    try {
      await this.api.createNamespacedEvent({ namespace, body });
      this.failing.delete(e.reason);
    } catch (err) {
      if (!this.failing.has(e.reason)) {
        this.failing.add(e.reason);
        this.opts.logger.warn({ reason: e.reason, err: errorMessage(err) }, 'could not record an event with the API server');
      }
    }
  }
}
