import { watch, type FSWatcher } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import type { Logger } from 'pino';
import { assignClusterIPs, DEFAULT_SERVICE_CIDR, parseServiceCIDR, type ServiceCIDR } from '../core/cluster-ip-range.js';
import { asString, field } from '../core/object-fields.js';
import { errorMessage, isKupError, KupError } from '../core/errors.js';
import { OffThreadParser } from './parse-off-thread.js';
import type { ObjectStore } from '../core/object-store.js';
import type { Source, SourceState } from './source.js';

export interface FileSourceOptions {
  readonly path: string;
  /** This proxy's node name: a Node object of that name in the file gives the zone. */
  readonly nodeName: string;
  readonly logger: Logger;
  /** A change is read once the file's size, mtime and inode stayed the same this long (writers write in several steps). */
  readonly debounceMs?: number;
  /** Also re-check the file this often, for filesystems whose events are unreliable. */
  readonly pollMs?: number;
  /** Where Services without a clusterIP get one (--service-cluster-ip-range). */
  readonly serviceCIDR?: ServiceCIDR;
}

/** Kubelet's ConfigMap/Secret volumes: files are symlinks through `..data`, swapped by a rename. */
const KUBELET_DATA_LINK = '..data';

/**
 * Kubernetes objects from a YAML or JSON file, watched for changes. Each read
 * replaces the whole object set; the change tracker works out which service
 * ports really changed. A change is applied only once the file has stopped
 * changing and parses whole: a file that cannot be read, is empty, is cut
 * short or does not parse keeps the last good state serving, logs one error
 * and sets lastError. Parsing runs in a child process, so a large file never
 * stalls the data plane.
 */
export class FileSource implements Source {
  readonly kind = 'file';
  private readonly opts: FileSourceOptions;
  private readonly path: string;
  private readonly cidr: ServiceCIDR;
  private store: ObjectStore | null = null;
  private watcher: FSWatcher | null = null;
  private poller: NodeJS.Timeout | null = null;
  private debounce: NodeJS.Timeout | null = null;
  /** inode/size/mtime of the file as last read, and as seen by the last settle check. */
  private readId: string | null = null;
  private settleId: string | null = null;
  private scheduled = 0;
  private lastHash: string | null = null;
  private assignedIPs: ReadonlyMap<string, string> = new Map();
  private synced = false;
  private stopped = false;
  private lastEventTime = 0;
  private lastError: string | null = null;
  private reads = 0;
  private reading: Promise<void> = Promise.resolve();
  private readonly parser = new OffThreadParser();

  constructor(opts: FileSourceOptions) {
    this.opts = opts;
    this.path = resolve(opts.path);
    this.cidr = opts.serviceCIDR ?? parseServiceCIDR('--service-cluster-ip-range', DEFAULT_SERVICE_CIDR);
  }

  /** Reads the file once; a missing, empty or malformed file at start is the user's mistake and is thrown. */
  async start(store: ObjectStore): Promise<void> {
    this.store = store;
    await this.read(true);
    // Watch the directory, not the file: editors and `kubectl ... > file` replace it, and kubelet swaps `..data`.
    try {
      this.watcher = watch(dirname(this.path), { persistent: false }, (_event, name) => {
        if (name === null || name === basename(this.path) || name === KUBELET_DATA_LINK) this.schedule();
      });
      this.watcher.on('error', (err) => this.opts.logger.warn({ file: this.path, err: errorMessage(err) }, 'file watch error'));
    } catch (err) {
      this.opts.logger.warn({ file: this.path, err: errorMessage(err) }, 'cannot watch the file; polling only');
    }
    this.poller = setInterval(() => void this.checkFile(), this.opts.pollMs ?? 2000);
    this.poller.unref();
  }

  async reread(): Promise<string> {
    this.reading = this.reading.then(() => this.read(false));
    await this.reading;
    return this.lastError === null ? `re-read ${this.path}` : `re-read ${this.path} failed (${this.lastError}); kept the last good state`;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    this.watcher = null;
    if (this.poller !== null) clearInterval(this.poller);
    if (this.debounce !== null) clearTimeout(this.debounce);
    this.poller = this.debounce = null;
    await this.reading;
    await this.parser.close();
  }

  state(): SourceState {
    return {
      kind: 'file',
      synced: this.synced,
      lastEventTime: this.lastEventTime,
      lastError: this.lastError,
      detail: { path: this.path, reads: this.reads },
    };
  }

  /**
   * (Re)starts the quiet period; any event during it starts it again. The
   * file's identity is noted now and compared when the period ends, so a
   * writer that is still writing (without events, on some filesystems) is
   * waited for too.
   */
  private schedule(): void {
    if (this.stopped) return;
    if (this.debounce !== null) clearTimeout(this.debounce);
    const seq = ++this.scheduled;
    void this.fileId().then((id) => {
      if (seq === this.scheduled) this.settleId = id;
    });
    this.debounce = setTimeout(() => void this.settle(), this.opts.debounceMs ?? 200);
  }

  /** Reads only once the file looks the same as a quiet period ago. */
  private async settle(): Promise<void> {
    this.debounce = null;
    const expected = this.settleId;
    const id = await this.fileId();
    if (id !== expected) {
      this.schedule();
      return;
    }
    this.reading = this.reading.then(() => this.read(false));
  }

  private async checkFile(): Promise<void> {
    const id = await this.fileId();
    if (id !== this.readId && (id !== null || this.lastError === null)) this.schedule();
  }

  /** What changes when the file is rewritten or replaced (null: cannot stat). */
  private async fileId(): Promise<string | null> {
    try {
      const s = await stat(this.path);
      return `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch {
      return null;
    }
  }

  private fail(initial: boolean, err: unknown): void {
    const msg = isKupError(err) ? err.message : `${this.path}: ${errorMessage(err)}`;
    if (initial) throw isKupError(err) ? err : new KupError('KUP_BAD_FILE', msg);
    if (this.lastError !== msg) this.opts.logger.error({ file: this.path }, `${msg}; keeping the last good state`);
    this.lastError = msg;
  }

  private async read(initial: boolean): Promise<void> {
    if (this.stopped) return;
    const before = await this.fileId();
    let result;
    try {
      result = await this.parser.read({ path: this.path, previousHash: this.lastHash });
    } catch (err) {
      this.readId = before;
      this.fail(initial, err);
      return;
    }
    const after = await this.fileId();
    if (after !== before && !initial) {
      // Written to while we read it: what we have may be half of it. Wait for quiet again.
      this.schedule();
      return;
    }
    this.readId = after;
    if (result.kind === 'unchanged') {
      this.lastError = null;
      return;
    }
    const { parsed } = result;
    const ips = assignClusterIPs(parsed.services, this.cidr, this.assignedIPs);
    for (const [svc, ip] of ips.assigned) {
      if (this.assignedIPs.get(svc) !== ip) {
        this.opts.logger.info({ service: svc, clusterIP: ip, range: this.cidr.text }, `Service ${svc} has no clusterIP; assigned ${ip}`);
      }
    }
    this.assignedIPs = ips.assigned;
    this.lastHash = result.hash;
    this.lastError = null;
    this.reads++;
    for (const w of [...parsed.warnings, ...ips.warnings]) this.opts.logger.warn(w);
    const node = parsed.nodes.find((n) => asString(field(n, 'metadata', 'name')) === this.opts.nodeName) ?? null;
    this.store?.replaceAll({ services: ips.services, slices: parsed.slices, node });
    this.lastEventTime = Date.now() / 1000;
    this.synced = true;
    if (!initial) {
      this.opts.logger.info(
        { file: this.path, services: parsed.services.length, endpointSlices: parsed.slices.length },
        'file changed; objects reloaded',
      );
    }
  }
}
