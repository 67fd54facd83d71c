import { watch, type FSWatcher } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import type { Logger } from 'pino';
import { asString, field } from '../core/object-fields.js';
import { errorMessage, KupError } from '../core/errors.js';
import { parseKubeObjects } from './kube-yaml.js';
import type { ObjectStore, Source, SourceState } from './source.js';

export interface FileSourceOptions {
  readonly path: string;
  /** This proxy's node name: a Node object of that name in the file gives the zone. */
  readonly nodeName: string;
  readonly logger: Logger;
  /** Re-read after a change settles for this long (editors write in several steps). */
  readonly debounceMs?: number;
  /** Also re-check the file's mtime this often, for filesystems whose events are unreliable. */
  readonly pollMs?: number;
}

/**
 * Kubernetes objects from a YAML file, watched for changes. Each read replaces
 * the whole object set; the change tracker works out which service ports
 * really changed. A file that cannot be read or parsed keeps the last good
 * state serving and logs one error.
 */
export class FileSource implements Source {
  readonly kind = 'file';
  private readonly opts: FileSourceOptions;
  private readonly path: string;
  private store: ObjectStore | null = null;
  private watcher: FSWatcher | null = null;
  private poller: NodeJS.Timeout | null = null;
  private debounce: NodeJS.Timeout | null = null;
  private lastMtime = 0;
  private lastText: string | null = null;
  private synced = false;
  private lastEventTime = 0;
  private lastError: string | null = null;
  private reads = 0;
  private reading: Promise<void> = Promise.resolve();

  constructor(opts: FileSourceOptions) {
    this.opts = opts;
    this.path = resolve(opts.path);
  }

  /** Reads the file once; a missing or malformed file at start is the user's mistake and is thrown. */
  async start(store: ObjectStore): Promise<void> {
    this.store = store;
    await this.read(true);
    // Watch the directory, not the file: editors and `kubectl ... > file` replace it.
    try {
      this.watcher = watch(dirname(this.path), { persistent: false }, (_event, name) => {
        if (name === null || name === basename(this.path)) this.schedule();
      });
      this.watcher.on('error', (err) => this.opts.logger.warn({ file: this.path, err: errorMessage(err) }, 'file watch error'));
    } catch (err) {
      this.opts.logger.warn({ file: this.path, err: errorMessage(err) }, 'cannot watch the file; polling only');
    }
    this.poller = setInterval(() => void this.checkMtime(), this.opts.pollMs ?? 2000);
    this.poller.unref();
  }

  async reread(): Promise<string> {
    this.reading = this.reading.then(() => this.read(false));
    await this.reading;
    return this.lastError === null ? `re-read ${this.path}` : `re-read ${this.path} failed (${this.lastError}); kept the last good state`;
  }

  async stop(): Promise<void> {
    this.watcher?.close();
    this.watcher = null;
    if (this.poller !== null) clearInterval(this.poller);
    if (this.debounce !== null) clearTimeout(this.debounce);
    this.poller = this.debounce = null;
    await this.reading;
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

  private schedule(): void {
    if (this.debounce !== null) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = null;
      this.reading = this.reading.then(() => this.read(false));
    }, this.opts.debounceMs ?? 50);
  }

  private async checkMtime(): Promise<void> {
    try {
      const s = await stat(this.path);
      if (s.mtimeMs !== this.lastMtime) this.schedule();
    } catch {
      if (this.lastError === null) this.schedule(); // gone: let read() report it once
    }
  }

  private async read(initial: boolean): Promise<void> {
    let text: string;
    try {
      const s = await stat(this.path);
      this.lastMtime = s.mtimeMs;
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      const msg = `cannot read ${this.path}: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`;
      if (initial) throw new KupError('KUP_BAD_FILE', msg);
      if (this.lastError !== msg) this.opts.logger.error({ file: this.path }, `${msg}; keeping the last good state`);
      this.lastError = msg;
      return;
    }
    if (text === this.lastText) {
      this.lastError = null;
      return;
    }
    let parsed;
    try {
      parsed = parseKubeObjects(text, this.path);
    } catch (err) {
      if (initial) throw err;
      const msg = errorMessage(err);
      if (this.lastError !== msg) this.opts.logger.error({ file: this.path }, `${msg}; keeping the last good state`);
      this.lastError = msg;
      return;
    }
    this.lastText = text;
    this.lastError = null;
    this.reads++;
    for (const w of parsed.warnings) this.opts.logger.warn(w);
    const node = parsed.nodes.find((n) => asString(field(n, 'metadata', 'name')) === this.opts.nodeName) ?? null;
    this.store?.replaceAll({ services: parsed.services, slices: parsed.slices, node });
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
