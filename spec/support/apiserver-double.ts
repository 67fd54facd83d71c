import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { stringify as toYaml } from 'yaml';
import {
  fieldsMatch,
  labelsMatch,
  parseFieldSelector,
  parseLabelSelector,
  SelectorSyntaxError,
  type FieldRequirement,
} from './label-selector.js';
import { tlsMaterial, type TlsMaterial } from './tls-material.js';

/**
 * A Kubernetes API server double that speaks the real wire protocol (HTTPS,
 * bearer tokens, list and watch with resourceVersions, selectors, 410 Gone)
 * for the three resources a service proxy reads, so the real
 * @kubernetes/client-node code can be driven against it on loopback.
 */

export type Kind = 'Service' | 'EndpointSlice' | 'Node';
export const KINDS: readonly Kind[] = ['Service', 'EndpointSlice', 'Node'];

export interface KubeMeta {
  name?: string;
  namespace?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  resourceVersion?: string;
  uid?: string;
  creationTimestamp?: string;
  generation?: number;
  [field: string]: unknown;
}

/** A Kubernetes object as plain JSON. */
export interface KubeJson {
  apiVersion?: string;
  kind?: string;
  metadata?: KubeMeta;
  [field: string]: unknown;
}

interface StoredObject extends KubeJson {
  metadata: KubeMeta & { name: string; resourceVersion: string };
}

interface Resource {
  readonly kind: Kind;
  readonly apiVersion: string;
  readonly prefix: string;
  readonly plural: string;
  readonly namespaced: boolean;
  readonly fields: readonly string[];
}

const RESOURCES: Readonly<Record<Kind, Resource>> = {
  Service: {
    kind: 'Service',
    apiVersion: 'v1',
    prefix: '/api/v1',
    plural: 'services',
    namespaced: true,
    fields: ['metadata.name', 'metadata.namespace', 'spec.clusterIP', 'spec.type'],
  },
  EndpointSlice: {
    kind: 'EndpointSlice',
    apiVersion: 'discovery.k8s.io/v1',
    prefix: '/apis/discovery.k8s.io/v1',
    plural: 'endpointslices',
    namespaced: true,
    fields: ['metadata.name', 'metadata.namespace', 'addressType'],
  },
  Node: {
    kind: 'Node',
    apiVersion: 'v1',
    prefix: '/api/v1',
    plural: 'nodes',
    namespaced: false,
    fields: ['metadata.name', 'spec.unschedulable'],
  },
};

type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

interface HistoryEvent {
  readonly rv: number;
  readonly kind: Kind;
  readonly type: EventType;
  readonly object: StoredObject;
  /** The object before a MODIFIED, so a watcher can see it start or stop matching. */
  readonly previous: StoredObject | null;
}

interface Watcher {
  readonly kind: Kind;
  readonly namespace: string | null;
  readonly labels: ReturnType<typeof parseLabelSelector>;
  readonly fields: readonly FieldRequirement[];
  readonly res: ServerResponse;
  readonly timers: NodeJS.Timeout[];
  closed: boolean;
}

export interface ApiServerDoubleOptions {
  /** Port to listen on (127.0.0.1); 0 or absent picks a free one, kept across stop/start. */
  port?: number;
  token?: string;
  /** How a watch from a compacted resourceVersion is refused: an ERROR event in a 200 stream (what the real server's watch cache does) or an HTTP 410. */
  goneAs?: 'event' | 'status';
  /** Period of BOOKMARK events for watches that allow them; 0 disables. */
  bookmarkIntervalMs?: number;
}

/** An Event as created through the API, with where it was posted. */
export interface RecordedEvent {
  /** events.k8s.io/v1 or v1 (core). */
  readonly api: 'events.k8s.io/v1' | 'v1';
  readonly namespace: string;
  readonly body: KubeJson & Record<string, unknown>;
}

/** RFC3339 with exactly six fractional digits: what the real server's MicroTime parser accepts. */
const MICRO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$/;

export interface ApiServerCounters {
  requests: number;
  unauthorized: number;
  lists: Record<Kind, number>;
  watches: Record<Kind, number>;
  gone: number;
}

function zeroByKind(): Record<Kind, number> {
  return { Service: 0, EndpointSlice: 0, Node: 0 };
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

function keyOf(namespace: string | undefined, name: string): string {
  return `${namespace ?? ''}/${name}`;
}

function status(code: number, reason: string, message: string): KubeJson {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

/** What a real server counts as the object's spec for metadata.generation. */
function specOf(kind: Kind, obj: KubeJson): string {
  if (kind === 'Service') return JSON.stringify(obj.spec ?? null);
  const { metadata: _m, status: _s, ...rest } = obj;
  return JSON.stringify(rest);
}

export class ApiServerDouble {
  readonly token: string;
  private readonly goneAs: 'event' | 'status';
  private readonly bookmarkIntervalMs: number;
  private port: number;
  private server: Server | null = null;
  private tls: TlsMaterial | null = null;
  private readonly sockets = new Set<Socket>();
  private readonly watchers = new Set<Watcher>();
  private readonly store: Record<Kind, Map<string, StoredObject>> = {
    Service: new Map(),
    EndpointSlice: new Map(),
    Node: new Map(),
  };
  private history: HistoryEvent[] = [];
  private resourceVersion = 1000;
  private compactedRV = 0;
  private nextClusterIP = 10;
  private nextNodePort = 30000;
  /** Events created (POST .../namespaces/NS/events), in order. */
  readonly events: RecordedEvent[] = [];
  readonly counters: ApiServerCounters = {
    requests: 0,
    unauthorized: 0,
    lists: zeroByKind(),
    watches: zeroByKind(),
    gone: 0,
  };

  constructor(options: ApiServerDoubleOptions = {}) {
    this.port = options.port ?? 0;
    this.token = options.token ?? randomBytes(16).toString('hex');
    this.goneAs = options.goneAs ?? 'event';
    this.bookmarkIntervalMs = options.bookmarkIntervalMs ?? 60_000;
  }

  get url(): string {
    return `https://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.server !== null;
  }

  get caPem(): string {
    if (!this.tls) throw new Error('start() the double first');
    return this.tls.caPem;
  }

  /** Starts listening; after stop(), starts again on the same port with the same objects, like a restarted API server. */
  async start(): Promise<void> {
    if (this.server) return;
    this.tls ??= await tlsMaterial();
    const server = createServer({ cert: this.tls.certPem, key: this.tls.keyPem }, (req, res) => this.handle(req, res));
    server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    // TLS handshakes aborted by a stop() are expected, not worth an uncaught error.
    server.on('tlsClientError', () => {});
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address();
    if (address && typeof address === 'object') this.port = address.port;
    this.server = server;
  }

  /** Stops listening and cuts every connection (open watches included); objects are kept. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    for (const w of [...this.watchers]) this.closeWatcher(w, 'destroy');
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await closed;
  }

  /** Ends every open watch: 'destroy' cuts the connection mid-stream, 'end' finishes the response cleanly. */
  dropWatches(how: 'destroy' | 'end' = 'destroy'): number {
    const open = [...this.watchers];
    for (const w of open) this.closeWatcher(w, how);
    return open.length;
  }

  /** Forgets history: a watch from any resourceVersion older than now gets 410 Gone. */
  compact(): void {
    this.history = [];
    this.compactedRV = this.resourceVersion;
  }

  get currentResourceVersion(): string {
    return String(this.resourceVersion);
  }

  get openWatches(): number {
    return this.watchers.size;
  }

  openWatchesOf(kind: Kind): number {
    return [...this.watchers].filter((w) => w.kind === kind).length;
  }

  get(kind: Kind, namespace: string | undefined, name: string): KubeJson | undefined {
    const obj = this.store[kind].get(keyOf(RESOURCES[kind].namespaced ? (namespace ?? 'default') : undefined, name));
    return obj ? clone(obj) : undefined;
  }

  list(kind: Kind): KubeJson[] {
    return [...this.store[kind].values()].map(clone);
  }

  /** Creates or replaces an object, setting metadata as a real server does; returns the stored object. */
  upsert(input: KubeJson | object): KubeJson {
    const obj = clone(input) as KubeJson;
    const kind = obj.kind;
    if (kind !== 'Service' && kind !== 'EndpointSlice' && kind !== 'Node') {
      throw new Error(`the API server double does not serve kind ${String(kind)}`);
    }
    const res = RESOURCES[kind];
    const name = obj.metadata?.name;
    if (!name) throw new Error(`${kind} without metadata.name`);
    const namespace = res.namespaced ? (obj.metadata?.namespace ?? 'default') : undefined;
    const key = keyOf(namespace, name);
    const previous = this.store[kind].get(key) ?? null;
    const rv = ++this.resourceVersion;
    const metadata: StoredObject['metadata'] = {
      ...obj.metadata,
      name,
      ...(namespace !== undefined ? { namespace } : {}),
      uid: previous?.metadata.uid ?? crypto.randomUUID(),
      resourceVersion: String(rv),
      creationTimestamp: previous?.metadata.creationTimestamp ?? new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    };
    if (kind !== 'Node') {
      const prevGen = previous?.metadata.generation;
      metadata.generation =
        previous === null || prevGen === undefined ? 1 : specOf(kind, previous) === specOf(kind, obj) ? prevGen : prevGen + 1;
    } else {
      delete metadata.generation;
    }
    const stored: StoredObject = { ...obj, apiVersion: res.apiVersion, kind, metadata };
    if (kind === 'Service') this.defaultService(stored, previous);
    this.store[kind].set(key, stored);
    this.record({ rv, kind, type: previous ? 'MODIFIED' : 'ADDED', object: stored, previous });
    return clone(stored);
  }

  /** Deletes an object; false when there was none. */
  remove(kind: Kind, namespace: string | undefined, name: string): boolean {
    const key = keyOf(RESOURCES[kind].namespaced ? (namespace ?? 'default') : undefined, name);
    const previous = this.store[kind].get(key);
    if (!previous) return false;
    this.store[kind].delete(key);
    const rv = ++this.resourceVersion;
    const object: StoredObject = { ...clone(previous), metadata: { ...clone(previous.metadata), resourceVersion: String(rv) } };
    this.record({ rv, kind, type: 'DELETED', object, previous });
    return true;
  }

  /** Writes a kubeconfig that the real KubeConfig loads: CA data, server URL and bearer token. */
  async writeKubeconfig(path: string): Promise<void> {
    const config = {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [
        {
          name: 'double',
          cluster: { server: this.url, 'certificate-authority-data': Buffer.from(this.caPem).toString('base64') },
        },
      ],
      users: [{ name: 'kup', user: { token: this.token } }],
      contexts: [{ name: 'double', context: { cluster: 'double', user: 'kup' } }],
      'current-context': 'double',
    };
    await writeFile(path, toYaml(config), { mode: 0o600 });
  }

  // The ClusterIP and node port allocators, as the real server fills them in.
  private defaultService(svc: StoredObject, previous: StoredObject | null): void {
    const spec = (svc.spec ?? {}) as Record<string, unknown>;
    svc.spec = spec;
    const type = (spec.type as string | undefined) ?? 'ClusterIP';
    if (type === 'ExternalName') return;
    if (spec.clusterIP === undefined) {
      const prevSpec = (previous?.spec ?? {}) as Record<string, unknown>;
      const ip =
        (prevSpec.clusterIP as string | undefined) ?? `10.96.${Math.floor(this.nextClusterIP / 250)}.${(this.nextClusterIP++ % 250) + 1}`;
      spec.clusterIP = ip;
      spec.clusterIPs = prevSpec.clusterIPs ?? [ip];
      spec.ipFamilies ??= ['IPv4'];
      spec.ipFamilyPolicy ??= 'SingleStack';
    }
    if (type === 'NodePort' || type === 'LoadBalancer') {
      for (const port of (spec.ports ?? []) as Record<string, unknown>[]) {
        port.nodePort ??= this.nextNodePort++;
      }
    }
  }

  private record(event: HistoryEvent): void {
    this.history.push(event);
    for (const w of [...this.watchers]) {
      if (w.kind === event.kind) this.deliver(w, event);
    }
  }

  private matches(w: Watcher, obj: StoredObject | null): boolean {
    if (!obj) return false;
    if (w.namespace !== null && obj.metadata.namespace !== w.namespace) return false;
    return labelsMatch(w.labels, obj.metadata.labels ?? {}) && fieldsMatch(w.fields, obj);
  }

  /** Sends an event as this watcher sees it: an object that starts or stops matching its selectors is ADDED or DELETED. */
  private deliver(w: Watcher, event: HistoryEvent): void {
    const now = this.matches(w, event.object);
    const before = event.type === 'MODIFIED' && this.matches(w, event.previous);
    if (event.type === 'DELETED') {
      if (now) this.send(w, 'DELETED', event.object);
    } else if (now && (event.type === 'ADDED' || !before)) {
      this.send(w, 'ADDED', event.object);
    } else if (now) {
      this.send(w, 'MODIFIED', event.object);
    } else if (before && event.previous) {
      this.send(w, 'DELETED', {
        ...event.previous,
        metadata: { ...event.previous.metadata, resourceVersion: String(event.rv) },
      });
    }
  }

  private send(w: Watcher, type: string, object: KubeJson): void {
    if (w.closed) return;
    w.res.write(`${JSON.stringify({ type, object })}\n`);
  }

  private closeWatcher(w: Watcher, how: 'destroy' | 'end'): void {
    if (w.closed) return;
    w.closed = true;
    for (const t of w.timers) clearTimeout(t);
    this.watchers.delete(w);
    if (how === 'destroy') w.res.socket?.destroy();
    else w.res.end();
  }

  private json(res: ServerResponse, code: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.counters.requests++;
    const url = new URL(req.url ?? '/', 'https://127.0.0.1');
    const path = url.pathname.replace(/\/+$/, '') || '/';
    if (path === '/version' || path === '/healthz' || path === '/livez' || path === '/readyz') {
      if (path === '/version') {
        this.json(res, 200, { major: '1', minor: '34', gitVersion: 'v1.34.0-kup-double', platform: 'linux/amd64' });
      } else {
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        res.end('ok');
      }
      return;
    }
    if (req.headers.authorization !== `Bearer ${this.token}`) {
      this.counters.unauthorized++;
      this.json(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
      return;
    }
    const ev = /^\/(?:apis\/(events\.k8s\.io)\/v1|api\/v1)\/namespaces\/([^/]+)\/events$/.exec(path);
    if (ev && req.method === 'POST') {
      this.createEvent(req, res, ev[1] === undefined ? 'v1' : 'events.k8s.io/v1', decodeURIComponent(ev[2] ?? ''));
      return;
    }
    if (req.method !== 'GET') {
      this.json(res, 405, status(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`));
      return;
    }
    if (path === '/api') {
      this.json(res, 200, {
        kind: 'APIVersions',
        versions: ['v1'],
        serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `127.0.0.1:${this.port}` }],
      });
      return;
    }
    if (path === '/apis') {
      const version = { groupVersion: 'discovery.k8s.io/v1', version: 'v1' };
      this.json(res, 200, {
        kind: 'APIGroupList',
        apiVersion: 'v1',
        groups: [{ name: 'discovery.k8s.io', versions: [version], preferredVersion: version }],
      });
      return;
    }
    const m = /^(\/api\/v1|\/apis\/discovery\.k8s\.io\/v1)(?:\/namespaces\/([^/]+))?\/([a-z]+)(?:\/([^/]+))?$/.exec(path);
    const resource = m ? Object.values(RESOURCES).find((r) => r.prefix === m[1] && r.plural === m[3]) : undefined;
    if (!m || !resource || (m[2] !== undefined && !resource.namespaced)) {
      this.json(res, 404, status(404, 'NotFound', 'the server could not find the requested resource'));
      return;
    }
    const namespace = m[2] ?? null;
    const name = m[4];
    if (name !== undefined) {
      if (resource.namespaced && namespace === null) {
        this.json(res, 404, status(404, 'NotFound', 'the server could not find the requested resource'));
        return;
      }
      const obj = this.store[resource.kind].get(keyOf(namespace ?? undefined, decodeURIComponent(name)));
      if (!obj) {
        this.json(res, 404, status(404, 'NotFound', `${resource.plural} "${name}" not found`));
      } else {
        this.json(res, 200, obj);
      }
      return;
    }
    let labels: ReturnType<typeof parseLabelSelector>;
    let fields: readonly FieldRequirement[];
    try {
      labels = parseLabelSelector(url.searchParams.get('labelSelector') ?? '');
      fields = parseFieldSelector(url.searchParams.get('fieldSelector') ?? '', resource.fields);
    } catch (err) {
      if (!(err instanceof SelectorSyntaxError)) throw err;
      this.json(res, 400, status(400, 'BadRequest', err.message));
      return;
    }
    const watch = url.searchParams.get('watch');
    if (watch === 'true' || watch === '1') {
      this.watch(req, res, url, { kind: resource.kind, namespace, labels, fields });
      return;
    }
    this.counters.lists[resource.kind]++;
    const probe: Omit<Watcher, 'res' | 'timers' | 'closed'> = { kind: resource.kind, namespace, labels, fields };
    const items = [...this.store[resource.kind].entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, obj]) => obj)
      .filter((obj) => this.matches(probe as Watcher, obj))
      // Items of a typed list carry no kind/apiVersion, as on a real server.
      .map(({ kind: _k, apiVersion: _a, ...rest }) => rest);
    this.json(res, 200, {
      kind: `${resource.kind}List`,
      apiVersion: resource.apiVersion,
      metadata: { resourceVersion: String(this.resourceVersion) },
      items,
    });
  }

  /** Validates an Event as the real server does for the fields a proxy sets, stores it, answers 201. */
  private createEvent(req: IncomingMessage, res: ServerResponse, api: RecordedEvent['api'], namespace: string): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let body: RecordedEvent['body'];
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as RecordedEvent['body'];
      } catch {
        this.json(res, 400, status(400, 'BadRequest', 'the body is not JSON'));
        return;
      }
      const problems: string[] = [];
      const meta = body.metadata ?? {};
      if (typeof meta.name !== 'string' || meta.name === '') problems.push('metadata.name: Required value');
      if (meta.namespace !== undefined && meta.namespace !== namespace)
        problems.push('metadata.namespace: does not match the namespace of the request');
      if (!['Normal', 'Warning'].includes(String(body.type))) problems.push(`type: Unsupported value: ${JSON.stringify(body.type)}`);
      if (api === 'events.k8s.io/v1') {
        if (typeof body.eventTime !== 'string' || !MICRO_TIME.test(body.eventTime))
          problems.push(`eventTime: Invalid value: ${JSON.stringify(body.eventTime)}`);
        for (const f of ['reportingController', 'reportingInstance', 'action', 'reason']) {
          if (typeof body[f] !== 'string' || body[f] === '') problems.push(`${f}: Required value`);
        }
        if (typeof body.note === 'string' && body.note.length > 1024) problems.push('note: Too long');
      }
      if (problems.length > 0) {
        this.json(res, 422, status(422, 'Invalid', `Event "${String(meta.name)}" is invalid: ${problems.join(', ')}`));
        return;
      }
      const stored = {
        ...body,
        metadata: { ...meta, namespace, uid: crypto.randomUUID(), resourceVersion: String(++this.resourceVersion) },
      };
      this.events.push({ api, namespace, body: stored });
      this.json(res, 201, stored);
    });
  }

  private watch(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    filter: Pick<Watcher, 'kind' | 'namespace' | 'labels' | 'fields'>,
  ): void {
    this.counters.watches[filter.kind]++;
    const rvParam = url.searchParams.get('resourceVersion') ?? '';
    const fromRV = rvParam === '' ? null : Number(rvParam);
    if (fromRV !== null && !Number.isInteger(fromRV)) {
      this.json(res, 400, status(400, 'BadRequest', `invalid resource version: ${rvParam}`));
      return;
    }
    // RV 0 means "any", so it is never too old.
    const gone = fromRV !== null && fromRV !== 0 && fromRV < this.compactedRV;
    if (gone && this.goneAs === 'status') {
      this.counters.gone++;
      this.json(res, 410, status(410, 'Expired', `too old resource version: ${fromRV} (${this.compactedRV})`));
      return;
    }
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders();
    const w: Watcher = { ...filter, res, timers: [], closed: false };
    if (gone) {
      this.counters.gone++;
      this.send(w, 'ERROR', status(410, 'Expired', `too old resource version: ${fromRV} (${this.compactedRV})`));
      res.end();
      return;
    }
    this.watchers.add(w);
    const forget = (): void => {
      if (w.closed) return;
      w.closed = true;
      for (const t of w.timers) clearTimeout(t);
      this.watchers.delete(w);
    };
    req.on('close', forget);
    res.on('close', forget);
    if (fromRV === null || fromRV === 0) {
      // No resourceVersion: the current state as synthetic ADDED events, then changes.
      for (const obj of this.store[filter.kind].values()) {
        if (this.matches(w, obj)) this.send(w, 'ADDED', obj);
      }
    } else {
      for (const event of this.history) {
        if (event.kind === filter.kind && event.rv > fromRV) this.deliver(w, event);
      }
    }
    const timeoutSeconds = Number(url.searchParams.get('timeoutSeconds') ?? '0');
    if (timeoutSeconds > 0) {
      w.timers.push(setTimeout(() => this.closeWatcher(w, 'end'), timeoutSeconds * 1000));
    }
    const bookmarks = url.searchParams.get('allowWatchBookmarks') === 'true';
    if (bookmarks && this.bookmarkIntervalMs > 0) {
      const tick = (): void => {
        if (w.closed) return;
        const res = RESOURCES[filter.kind];
        this.send(w, 'BOOKMARK', {
          kind: res.kind,
          apiVersion: res.apiVersion,
          metadata: { resourceVersion: String(this.resourceVersion) },
        });
        w.timers.push(setTimeout(tick, this.bookmarkIntervalMs));
      };
      w.timers.push(setTimeout(tick, this.bookmarkIntervalMs));
    }
  }
}
