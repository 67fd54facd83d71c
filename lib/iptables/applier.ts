/**
 * The shell around render.ts: applies the rendered scripts with
 * `iptables-restore --noflush` (touching only KUP- chains), keeps the jump
 * rules present exactly once, retries failures with backoff, resyncs
 * periodically (which repairs rules someone else removed) and removes every
 * trace on stop or cleanup.
 */
import type { Logger } from 'pino';
import { KupError } from '../core/errors.js';
import type { ProxyPorts, ServicePortKey, ServiceTable } from '../core/types.js';
import { detectBackend, detectCommentSupport, familyUsable, type Backend, type FamilyBinaries } from './backend.js';
import { describeFailure, runCommand } from './command.js';
import { detectHostIPs } from './host-ips.js';
import { jumpRules, renderCleanup, renderRules, type HostIPs, type IpFamily, type JumpRule } from './render.js';

export interface IptablesApplierOptions {
  readonly logger: Logger;
  /** The data plane's bind address (wildcard or one local address). */
  readonly bindAddress: string;
  /** Override the detected node addresses (host-originated traffic is DNATed there). */
  readonly hostIPs?: HostIPs;
  /** Full resync period; 0 disables it. Default 30 s (kube-proxy's syncPeriod). */
  readonly resyncPeriodMs?: number;
  /** Per-binary timeout. Default 10 s. */
  readonly commandTimeoutMs?: number;
  /** Retry backoff after a failed sync: doubles from initialMs up to maxMs. Default 1 s .. 30 s. */
  readonly backoff?: { readonly initialMs: number; readonly maxMs: number };
}

export interface IptablesStatus {
  readonly backend: Backend['mode'] | null;
  readonly version: string | null;
  readonly commentSupported: boolean;
  readonly ipv6: boolean;
  /** Where host-originated traffic is DNATed when listeners are bound to a wildcard. */
  readonly hostIPs: HostIPs;
  /** Epoch milliseconds of the last successful sync; null before any. */
  readonly lastSuccessTime: number | null;
  readonly consecutiveFailures: number;
  /** The last failure (the binary's stderr included); null once a sync succeeds. */
  readonly lastError: string | null;
  readonly ruleCount: { readonly ipv4: number; readonly ipv6: number };
  readonly warnings: readonly string[];
}

interface Desired {
  readonly table: ServiceTable;
  readonly proxyPorts: ReadonlyMap<ServicePortKey, ProxyPorts>;
  /** Restore even when the rules rendered are those installed (full syncs repair rules removed by others). */
  readonly force: boolean;
}

const WAIT_LOCK = ['-w', '5'];

export class IptablesApplier {
  private readonly log: Logger;
  private readonly bindAddress: string;
  private readonly resyncPeriodMs: number;
  private readonly timeoutMs: number;
  private readonly backoff: { initialMs: number; maxMs: number };
  private hostIPs: HostIPs;
  private readonly explicitHostIPs: boolean;
  private backend: Backend | null = null;
  private commentSupported = true;
  private families: IpFamily[] = ['ipv4'];
  private desired: Desired | null = null;
  /** Every apply runs after the previous one: never two restores at once. */
  private tail: Promise<unknown> = Promise.resolve();
  /** A queued run that has not started yet; later syncs join it (it reads the newest desired state). */
  private queued: Promise<boolean> | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private resyncTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  private lastSuccessTime: number | null = null;
  private consecutiveFailures = 0;
  private lastError: string | null = null;
  private ruleCount = { ipv4: 0, ipv6: 0 };
  private warnings: readonly string[] = [];
  /** The scripts of the last successful sync (what `kup rules` would print for this table). */
  private installed: { ipv4: string; ipv6: string } | null = null;

  constructor(options: IptablesApplierOptions) {
    this.log = options.logger.child({ component: 'iptables' });
    this.bindAddress = options.bindAddress;
    this.hostIPs = options.hostIPs ?? {};
    this.resyncPeriodMs = options.resyncPeriodMs ?? 30_000;
    this.timeoutMs = options.commandTimeoutMs ?? 10_000;
    this.backoff = { initialMs: 1_000, maxMs: 30_000, ...options.backoff };
    this.explicitHostIPs = options.hostIPs !== undefined;
  }

  /**
   * Detects the backend and its features, then removes whatever an earlier
   * run left (its proxy ports are meaningless now); the first sync rebuilds.
   * Throws KupError KUP_IPTABLES when no iptables works.
   */
  async start(): Promise<void> {
    const backend = await detectBackend();
    if (backend === null) throw new KupError('KUP_IPTABLES', 'no iptables binary found');
    if (!(await familyUsable(backend.ipv4))) {
      throw new KupError('KUP_IPTABLES', `${backend.ipv4.iptables} cannot read the nat table (not root, or no kernel support)`);
    }
    this.backend = backend;
    this.families = (await familyUsable(backend.ipv6)) ? ['ipv4', 'ipv6'] : ['ipv4'];
    this.commentSupported = await detectCommentSupport(backend.ipv4);
    this.log.info(
      {
        backend: backend.mode,
        version: backend.version,
        comments: this.commentSupported,
        families: this.families,
      },
      `iptables backend ${backend.mode} (${backend.version}): ${backend.reason}`,
    );
    if (!this.commentSupported) this.log.warn('iptables comment match missing: rules are written without comments');
    if (!this.families.includes('ipv6')) this.log.info('ip6tables unusable: IPv6 service addresses get no rules');
    const cleaned = await this.removeAll();
    if (cleaned !== null) throw new KupError('KUP_IPTABLES', `cannot remove an earlier run's rules: ${cleaned}`);
    if (this.resyncPeriodMs > 0) {
      this.resyncTimer = setInterval(() => {
        if (this.desired === null) return;
        this.desired = { ...this.desired, force: true };
        void this.request();
      }, this.resyncPeriodMs);
      this.resyncTimer.unref();
    }
  }

  /**
   * Makes the rules match `table`. Resolves true once a sync containing this
   * state succeeded, false when it failed (then it is retried with backoff;
   * status() tells health). Never rejects.
   */
  sync(table: ServiceTable, proxyPorts: ReadonlyMap<ServicePortKey, ProxyPorts>, force = true): Promise<boolean> {
    if (this.stopped || this.backend === null) return Promise.resolve(false);
    this.desired = { table, proxyPorts, force: force || (this.desired?.force ?? false) };
    return this.request();
  }

  /** Stops timers, waits for a running sync, then removes the project's chains and jumps. Safe to call twice. */
  async stop(): Promise<void> {
    const first = !this.stopped;
    this.stopped = true;
    this.clearTimers();
    await this.tail;
    if (!first || this.backend === null) return;
    const err = await this.removeAll();
    if (err === null) this.log.info('iptables rules removed');
    else this.log.error({ err }, 'iptables rules could not all be removed');
  }

  /** The restore scripts now installed (IPv4, then IPv6 when used); null before the first successful sync. */
  installedRules(): string | null {
    if (this.installed === null) return null;
    const { ipv4, ipv6 } = this.installed;
    return ipv6 === '' ? ipv4 : `# IPv4 (iptables-restore --noflush)\n${ipv4}\n# IPv6 (ip6tables-restore --noflush)\n${ipv6}`;
  }

  status(): IptablesStatus {
    return {
      backend: this.backend?.mode ?? null,
      version: this.backend?.version ?? null,
      commentSupported: this.commentSupported,
      ipv6: this.families.includes('ipv6'),
      hostIPs: { ...this.hostIPs },
      lastSuccessTime: this.lastSuccessTime,
      consecutiveFailures: this.consecutiveFailures,
      lastError: this.lastError,
      ruleCount: { ...this.ruleCount },
      warnings: this.warnings,
    };
  }

  private request(): Promise<boolean> {
    if (this.queued !== null) return this.queued;
    const run = this.tail.then(() => {
      this.queued = null;
      return this.applyDesired();
    });
    this.queued = run;
    this.tail = run;
    return run;
  }

  private async applyDesired(): Promise<boolean> {
    const desired = this.desired;
    const backend = this.backend;
    if (this.stopped || desired === null || backend === null) return false;
    // Re-read each sync: an address acquired (or changed) after start must not leave host traffic pointed at a stale one.
    if (!this.explicitHostIPs) this.hostIPs = await detectHostIPs();
    const rendered = renderRules({
      table: desired.table,
      proxyPorts: desired.proxyPorts,
      bindAddress: this.bindAddress,
      hostIPs: this.hostIPs,
      commentSupported: this.commentSupported,
    });
    const warnings = [...rendered.warnings];
    if (!this.families.includes('ipv6') && rendered.ruleCount.ipv6 > 0) {
      warnings.push('IPv6 service addresses present but ip6tables is unusable: they get no rules');
    }
    // Logged when they change, not on every periodic resync.
    if (warnings.join('\n') !== this.warnings.join('\n')) {
      for (const w of warnings) this.log.warn(w);
    }
    this.warnings = warnings;
    if (this.desired === desired) this.desired = { ...desired, force: false };
    const installedNow = { ipv4: rendered.ipv4, ipv6: this.families.includes('ipv6') ? rendered.ipv6 : '' };
    if (!desired.force && this.consecutiveFailures === 0 && this.installed !== null &&
        this.installed.ipv4 === installedNow.ipv4 && this.installed.ipv6 === installedNow.ipv6) {
      // Endpoint churn changes no rule (balancing is the proxy's job): no restore needed.
      this.lastSuccessTime = Date.now();
      return true;
    }
    const started = Date.now();
    let error: string | null = null;
    for (const family of this.families) {
      error = (await this.restore(backend[family], rendered[family])) ?? (await this.ensureJumps(backend[family]));
      if (error !== null) break;
    }
    if (error === null) {
      this.lastSuccessTime = Date.now();
      this.consecutiveFailures = 0;
      this.lastError = null;
      this.ruleCount = { ...rendered.ruleCount };
      this.installed = installedNow;
      if (this.retryTimer !== null) clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.log.debug({ ms: Date.now() - started, rules: rendered.ruleCount }, 'iptables synced');
      return true;
    }
    this.consecutiveFailures++;
    this.lastError = error;
    const delay = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** (this.consecutiveFailures - 1));
    this.log.error({ err: error, failures: this.consecutiveFailures, retryMs: delay }, 'iptables sync failed');
    if (!this.stopped) {
      if (this.retryTimer !== null) clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        void this.request();
      }, delay);
      this.retryTimer.unref();
    }
    return false;
  }

  /** Null on success, else the failure with stderr. */
  private async restore(bins: FamilyBinaries, script: string): Promise<string | null> {
    const args = [...WAIT_LOCK, '--noflush'];
    const r = await runCommand(bins.restore, args, { input: script, timeoutMs: this.timeoutMs });
    return r.code === 0 ? null : describeFailure(bins.restore, args, r);
  }

  private async ensureJumps(bins: FamilyBinaries): Promise<string | null> {
    for (const j of jumpRules(this.commentSupported)) {
      const err = await this.ensureJump(bins, j);
      if (err !== null) return err;
    }
    return null;
  }

  private async ensureJump(bins: FamilyBinaries, j: JumpRule): Promise<string | null> {
    const check = [...WAIT_LOCK, '-t', j.table, '-C', j.chain, ...j.args];
    const c = await runCommand(bins.iptables, check, { timeoutMs: this.timeoutMs });
    if (c.code === 0) return null;
    if (c.code !== 1) return describeFailure(bins.iptables, check, c);
    const add = [...WAIT_LOCK, '-t', j.table, j.position === 'prepend' ? '-I' : '-A', j.chain, ...j.args];
    const a = await runCommand(bins.iptables, add, { timeoutMs: this.timeoutMs });
    return a.code === 0 ? null : describeFailure(bins.iptables, add, a);
  }

  /** Removes jumps and chains in every usable family; null on success, else what failed. */
  private async removeAll(): Promise<string | null> {
    if (this.backend === null) return null;
    const errors: string[] = [];
    for (const family of this.families) {
      const err = await removeFamily(this.backend[family], this.timeoutMs);
      if (err !== null) errors.push(err);
    }
    return errors.length === 0 ? null : errors.join('; ');
  }

  private clearTimers(): void {
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    if (this.resyncTimer !== null) clearInterval(this.resyncTimer);
    this.retryTimer = null;
    this.resyncTimer = null;
  }
}

async function removeFamily(bins: FamilyBinaries, timeoutMs: number): Promise<string | null> {
  const saved = await runCommand(bins.save, [], { timeoutMs });
  if (saved.code !== 0) return describeFailure(bins.save, [], saved);
  const script = renderCleanup(saved.stdout);
  if (script === '') return null;
  const args = [...WAIT_LOCK, '--noflush'];
  const r = await runCommand(bins.restore, args, { input: script, timeoutMs });
  return r.code === 0 ? null : describeFailure(bins.restore, args, r);
}

/**
 * `kup cleanup`: removes every KUP- chain and every jump into one, in both
 * families, with the detected backend. Idempotent: a clean node is left
 * untouched. Throws KupError KUP_IPTABLES when something could not be removed.
 */
export async function cleanupIptables(logger: Logger, timeoutMs = 10_000): Promise<void> {
  const backend = await detectBackend();
  if (backend === null) {
    logger.info('no iptables binary: nothing to clean up');
    return;
  }
  const errors: string[] = [];
  for (const family of ['ipv4', 'ipv6'] as const) {
    if (!(await familyUsable(backend[family]))) continue;
    const err = await removeFamily(backend[family], timeoutMs);
    if (err !== null) errors.push(err);
  }
  if (errors.length > 0) throw new KupError('KUP_IPTABLES', `iptables cleanup failed: ${errors.join('; ')}`);
  logger.info({ backend: backend.mode }, 'no kup iptables rules remain');
}
