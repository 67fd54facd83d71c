import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import { TRIGGER_TIME_ANNOTATION } from './kube-prune.js';
import type { ObjectSnapshot, ObjectStore } from './object-store.js';
import { asString, field, quote } from './object-fields.js';
import { diffTables, type TableDiff } from './table-diff.js';
import { objectRef, sliceServiceName, translateService, ZONE_LABEL, type TranslateContext } from './translate.js';
import { serviceName, type ServiceName, type ServicePort, type ServicePortKey, type ServiceTable, type UnsupportedPort } from './types.js';

export interface ChangeTrackerOptions {
  readonly nodeName: string;
  /** Called (synchronously, cheaply) whenever something became pending; the syncer schedules a flush. */
  readonly onChange?: () => void;
  /**
   * How an unchanged object is recognised: by its whole content (a file, where
   * people edit objects without touching resourceVersion), or by
   * metadata.resourceVersion (an API server bumps it on every change; keeping
   * a serialised copy of 10,000 objects would cost tens of MB).
   */
  readonly sameObjectBy?: 'content' | 'resourceVersion';
}

export interface FlushResult {
  readonly diff: TableDiff;
  /** Translation warnings of the services retranslated in this flush, one line each. */
  readonly warnings: readonly string[];
  readonly servicesChanged: number;
  /**
   * The last-change-trigger-time of each slice added or updated since the
   * previous flush (ms since epoch), for network programming latency as
   * kube-proxy measures it: from when the endpoints controller saw the change.
   */
  readonly triggerTimes: readonly number[];
}

interface SliceEntry {
  readonly slice: V1EndpointSlice;
  readonly service: ServiceName | null;
  readonly fingerprint: string;
}

/**
 * Holds the objects a source delivered, remembers which Services they touch,
 * and on flush() retranslates only those, patching the service table and
 * returning the diff. kube-proxy's ServiceChangeTracker and
 * EndpointsChangeTracker play the same role (servicechangetracker.go).
 */
export class ChangeTracker implements ObjectStore {
  private readonly services = new Map<ServiceName, { svc: V1Service; fingerprint: string }>();
  private readonly slices = new Map<string, SliceEntry>();
  private readonly slicesByService = new Map<ServiceName, Set<string>>();
  private readonly portsByService = new Map<ServiceName, readonly ServicePortKey[]>();
  private readonly dirty = new Set<ServiceName>();
  /** Services whose slices arrived without them, already warned about. */
  private readonly orphansWarned = new Set<ServiceName>();
  private readonly table = new Map<ServicePortKey, ServicePort>();
  /** Ports kup cannot proxy, per Service, as of the last flush. */
  private readonly unsupportedByService = new Map<ServiceName, readonly UnsupportedPort[]>();
  private readonly ctx: { nodeName: string; nodeZone: string | null };
  private readonly onChange: () => void;
  private readonly byVersion: boolean;
  /** Trigger times of the slice changes pending (one number each: cheap even in a burst). */
  private triggerTimes: number[] = [];
  /** Trigger times older than this tracker are ignored, as kube-proxy does: a restart would report the age of every slice. */
  private readonly startTime = Date.now();
  /** kube-proxy's sync_proxy_rules_{service,endpoint}_changes_{pending,total}. */
  readonly counters = { serviceChangesPending: 0, endpointChangesPending: 0, serviceChangesTotal: 0, endpointChangesTotal: 0 };
  /** Objects refused at delivery (no usable name), one line each; drained by the caller. */
  private readonly refused: string[] = [];

  constructor(opts: ChangeTrackerOptions) {
    this.ctx = { nodeName: opts.nodeName, nodeZone: null };
    this.onChange = opts.onChange ?? (() => {});
    this.byVersion = opts.sameObjectBy === 'resourceVersion';
  }

  private fingerprint(obj: unknown): string {
    if (this.byVersion) {
      const rv = asString(field(obj, 'metadata', 'resourceVersion'));
      if (rv !== undefined && rv !== '') return `rv:${rv}`;
    }
    return JSON.stringify(obj);
  }

  get nodeZone(): string | null {
    return this.ctx.nodeZone;
  }

  /** The current table (as of the last flush). */
  current(): ServiceTable {
    return this.table;
  }

  /** The service ports left out of the table because kup cannot proxy them (SCTP), as of the last flush; sorted. */
  unsupported(): UnsupportedPort[] {
    return [...this.unsupportedByService.values()]
      .flat()
      .sort((a, b) =>
        a.serviceName < b.serviceName ? -1 : a.serviceName > b.serviceName ? 1 : a.port < b.port ? -1 : a.port > b.port ? 1 : 0,
      );
  }

  hasPending(): boolean {
    return this.dirty.size > 0 || this.refused.length > 0;
  }

  applyService(svc: V1Service): void {
    const ref = objectRef(svc);
    if (typeof ref === 'string') {
      this.refuse(`Service ${quote(field(svc, 'metadata', 'name'))}: ${ref}; skipped`);
      return;
    }
    const name = serviceName(ref.namespace, ref.name);
    const fingerprint = this.fingerprint(svc);
    if (this.services.get(name)?.fingerprint === fingerprint) return;
    this.services.set(name, { svc, fingerprint });
    this.markService(name);
  }

  deleteService(namespace: string, name: string): void {
    this.removeService(serviceName(namespace, name));
  }

  private removeService(key: ServiceName): void {
    if (!this.services.delete(key)) return;
    this.markService(key);
  }

  applySlice(slice: V1EndpointSlice): void {
    const ref = objectRef(slice);
    if (typeof ref === 'string') {
      this.refuse(`EndpointSlice ${quote(field(slice, 'metadata', 'name'))}: ${ref}; skipped`);
      return;
    }
    const key = `${ref.namespace}/${ref.name}`;
    const fingerprint = this.fingerprint(slice);
    const prev = this.slices.get(key);
    if (prev?.fingerprint === fingerprint) return;
    const service = sliceServiceName(slice);
    if (service === null && prev === undefined) {
      this.refuse(`EndpointSlice ${key}: no valid kubernetes.io/service-name label; skipped`);
    }
    if (prev !== undefined && prev.service !== service) this.unlinkSlice(key, prev.service);
    this.slices.set(key, { slice, service, fingerprint });
    if (service !== null) {
      let set = this.slicesByService.get(service);
      if (set === undefined) this.slicesByService.set(service, (set = new Set()));
      set.add(key);
      this.markEndpoints(service);
      // A deleted slice has no trigger time to report (kube-proxy's rule); an added or updated one does.
      const trigger = Date.parse(asString(field(slice, 'metadata', 'annotations', TRIGGER_TIME_ANNOTATION)) ?? '');
      if (trigger > this.startTime) this.triggerTimes.push(trigger);
    }
  }

  deleteSlice(namespace: string, name: string): void {
    this.removeSlice(`${namespace}/${name}`);
  }

  private removeSlice(key: string): void {
    const prev = this.slices.get(key);
    if (prev === undefined) return;
    this.slices.delete(key);
    this.unlinkSlice(key, prev.service);
  }

  applyNode(node: V1Node | null): void {
    const zone = asString(field(node, 'metadata', 'labels', ZONE_LABEL)) ?? null;
    if (zone === this.ctx.nodeZone) return;
    this.ctx.nodeZone = zone;
    // Topology hints depend on the zone: every service may pick differently now.
    for (const name of this.services.keys()) this.markEndpoints(name);
  }

  replaceAll(snapshot: ObjectSnapshot): void {
    const svcNames = new Set<ServiceName>();
    for (const svc of snapshot.services) {
      const ref = objectRef(svc);
      if (typeof ref !== 'string') svcNames.add(serviceName(ref.namespace, ref.name));
      this.applyService(svc);
    }
    for (const name of [...this.services.keys()]) {
      if (!svcNames.has(name)) this.removeService(name);
    }
    const sliceNames = new Set<string>();
    for (const slice of snapshot.slices) {
      const ref = objectRef(slice);
      if (typeof ref !== 'string') sliceNames.add(`${ref.namespace}/${ref.name}`);
      this.applySlice(slice);
    }
    for (const name of [...this.slices.keys()]) {
      if (!sliceNames.has(name)) this.removeSlice(name);
    }
    if (snapshot.node !== undefined) this.applyNode(snapshot.node);
  }

  /** Retranslates the services that changed since the last flush and patches the table. */
  flush(): FlushResult {
    const warnings = this.refused.splice(0);
    const prevEntries = new Map<ServicePortKey, ServicePort>();
    const touched: ServicePortKey[] = [];
    const ctx: TranslateContext = this.ctx;
    for (const name of this.dirty) {
      for (const key of this.portsByService.get(name) ?? []) {
        const sp = this.table.get(key);
        if (sp !== undefined) prevEntries.set(key, sp);
        this.table.delete(key);
        touched.push(key);
      }
      this.portsByService.delete(name);
      this.unsupportedByService.delete(name);
      const entry = this.services.get(name);
      if (entry === undefined) {
        const orphans = this.slicesByService.get(name);
        if (orphans !== undefined && !this.orphansWarned.has(name)) {
          this.orphansWarned.add(name);
          warnings.push(`EndpointSlice ${[...orphans].join(', ')}: Service ${name} does not exist; ignored until it does`);
        } else if (orphans === undefined) this.orphansWarned.delete(name);
        continue;
      }
      this.orphansWarned.delete(name);
      const slices = [...(this.slicesByService.get(name) ?? [])]
        .map((k) => this.slices.get(k)?.slice)
        .filter((s): s is V1EndpointSlice => s !== undefined);
      const result = translateService(entry.svc, slices, ctx);
      warnings.push(...result.warnings);
      if (result.unsupported.length > 0) this.unsupportedByService.set(name, result.unsupported);
      const keys: ServicePortKey[] = [];
      for (const sp of result.ports) {
        this.table.set(sp.key, sp);
        keys.push(sp.key);
        touched.push(sp.key);
      }
      if (keys.length > 0) this.portsByService.set(name, keys);
    }
    const servicesChanged = this.dirty.size;
    this.dirty.clear();
    this.counters.serviceChangesPending = 0;
    this.counters.endpointChangesPending = 0;
    const triggerTimes = this.triggerTimes;
    this.triggerTimes = [];
    return { diff: diffTables(prevEntries, this.table, new Set(touched)), warnings, servicesChanged, triggerTimes };
  }

  private unlinkSlice(key: string, service: ServiceName | null): void {
    if (service === null) return;
    const set = this.slicesByService.get(service);
    set?.delete(key);
    if (set?.size === 0) this.slicesByService.delete(service);
    this.markEndpoints(service);
  }

  private refuse(line: string): void {
    this.refused.push(line);
    this.pending();
  }

  private markService(name: ServiceName): void {
    this.counters.serviceChangesPending++;
    this.counters.serviceChangesTotal++;
    this.dirty.add(name);
    this.pending();
  }

  private markEndpoints(name: ServiceName): void {
    this.counters.endpointChangesPending++;
    this.counters.endpointChangesTotal++;
    this.dirty.add(name);
    this.pending();
  }

  private pending(): void {
    this.onChange();
  }
}
