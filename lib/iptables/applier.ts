/**
 * The shell around render.ts: applies the rendered scripts with
 * `iptables-restore --noflush` (touching only KUP- chains), keeps the jump
 * rules present exactly once, and removes every trace on stop or cleanup.
 * It applies a table now or throws; retrying, backoff and periodic resyncs
 * belong to the syncer (one retry loop, as kube-proxy's syncRunner).
 */
import type { Logger } from 'pino';
import type { FamilyName } from '../core/address.js';
import { errorMessage, KupError } from '../core/errors.js';
import type { ProxyPortNumbers, ServicePortKey, ServiceTable } from '../core/types.js';
import { detectBackend, detectCommentSupport, familyUsable, type Backend, type FamilyBinaries } from './backend.js';
import { describeFailure, runCommand } from './command.js';
import { ConntrackCleaner } from './conntrack.js';
import { staleConntrackFilters, type SteeredTable } from '../core/conntrack-plan.js';
import { resolveNodePortIPs, type NodePortIPs } from '../core/nodeport-addresses.js';
import { detectHostIPs, localAddresses } from './host-ips.js';
import { renderKubeProxyCleanup } from './kube-proxy-cleanup.js';
import type { LocalTrafficDetector } from '../core/local-detector.js';
import { jumpRules, renderCleanup, renderRules, type HostIPs, type JumpRule } from './render.js';

export interface IptablesApplierOptions {
  readonly logger: Logger;
  /** The data plane's bind address (wildcard or one local address). */
  readonly bindAddress: string;
  /** Override the detected node addresses (host-originated traffic is DNATed there). */
  readonly hostIPs?: HostIPs;
  /** --nodeport-addresses as parsed (empty: NodePorts on every local address). */
  readonly nodePortAddresses?: readonly string[];
  /** --iptables-localhost-nodeports. Default true. */
  readonly localhostNodePorts?: boolean;
  /** The local-traffic detector in force at each apply (--detect-local-mode); default none. */
  readonly localDetector?: () => LocalTrafficDetector | null;
  /** Per-binary timeout. Default 10 s. */
  readonly commandTimeoutMs?: number;
}

export interface IptablesStatus {
  readonly backend: Backend['mode'] | null;
  readonly version: string | null;
  readonly commentSupported: boolean;
  readonly ipv6: boolean;
  /** Where host-originated traffic is DNATed when listeners are bound to a wildcard. */
  readonly hostIPs: HostIPs;
  /** Epoch milliseconds of the last successful apply; null before any. */
  readonly lastSuccessTime: number | null;
  /** Failed applies since the last successful one. */
  readonly consecutiveFailures: number;
  /** The last failure (the binary's stderr included); null once an apply succeeds. */
  readonly lastError: string | null;
  readonly ruleCount: { readonly ipv4: number; readonly ipv6: number };
  readonly warnings: readonly string[];
}

const WAIT_LOCK = ['-w', '5'];

export interface IptablesMetrics {
  readonly families: readonly ('ipv4' | 'ipv6')[];
  /** The restore script of each family now installed ('' for IPv6 when unused); null before the first successful apply. */
  readonly installed: { readonly ipv4: string; readonly ipv6: string } | null;
  readonly restoreFailures: { readonly ipv4: number; readonly ipv6: number };
}

export class IptablesApplier {
  private readonly log: Logger;
  private readonly bindAddress: string;
  private readonly timeoutMs: number;
  private hostIPs: HostIPs;
  private readonly explicitHostIPs: boolean;
  private readonly nodePortAddresses: readonly string[];
  private readonly localhostNodePorts: boolean;
  /** The addresses NodePorts were last rendered for, as logged (a change is logged once). */
  private nodePortIPsText = '';
  private readonly localDetector: () => LocalTrafficDetector | null;
  private backend: Backend | null = null;
  private commentSupported = true;
  private families: FamilyName[] = ['ipv4'];
  /** Every apply runs after the previous one: never two restores at once, and stop() waits for the last. */
  private tail: Promise<unknown> = Promise.resolve();
  private stopped = false;
  private lastSuccessTime: number | null = null;
  private consecutiveFailures = 0;
  private lastError: string | null = null;
  private ruleCount = { ipv4: 0, ipv6: 0 };
  private warnings: readonly string[] = [];
  /** The scripts of the last successful apply (what `kup rules` would print for this table). */
  private installed: { ipv4: string; ipv6: string } | null = null;
  /** Failed iptables-restore runs per family (not other iptables commands: kube-proxy counts restores only). */
  private readonly restoreFailures = { ipv4: 0, ipv6: 0 };
  /** What the last successful apply steered where; null until one (a restart leaves the last run's entries). */
  private steered: SteeredTable | null = null;
  private readonly conntrack: ConntrackCleaner;
  /**
   * Conntrack cleanups run one after another beside the syncs, not inside
   * them: after a restart with thousands of UDP service ports (one conntrack
   * run each) the next rule sync must not wait for them. stop() waits.
   */
  private cleaning: Promise<unknown> = Promise.resolve();

  constructor(options: IptablesApplierOptions) {
    this.log = options.logger.child({ component: 'iptables' });
    this.bindAddress = options.bindAddress;
    this.hostIPs = options.hostIPs ?? {};
    this.timeoutMs = options.commandTimeoutMs ?? 10_000;
    this.explicitHostIPs = options.hostIPs !== undefined;
    this.nodePortAddresses = options.nodePortAddresses ?? [];
    this.localhostNodePorts = options.localhostNodePorts ?? true;
    this.localDetector = options.localDetector ?? (() => null);
    this.conntrack = new ConntrackCleaner(this.log, this.timeoutMs);
  }

  /**
   * Detects the backend and its features, then removes whatever an earlier
   * run left (its proxy ports are meaningless now); the first apply rebuilds.
   * Throws KupError KUP_IPTABLES_UNAVAILABLE when no iptables works, KUP_IPTABLES when old rules cannot be removed.
   */
  async start(opts: { keepExisting?: boolean } = {}): Promise<void> {
    const backend = await detectBackend();
    if (backend === null) throw new KupError('KUP_IPTABLES_UNAVAILABLE', 'no iptables binary found');
    if (!(await familyUsable(backend.ipv4))) {
      throw new KupError('KUP_IPTABLES_UNAVAILABLE', `${backend.ipv4.iptables} cannot read the nat table (not root, or no kernel support)`);
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
    // Taking over from a live predecessor (or restarting on the ports the rules already
    // name): its rules stay until the first restore replaces them, never missing meanwhile.
    if (opts.keepExisting === true) return;
    await this.removeAll().catch((err: unknown) => {
      throw new KupError('KUP_IPTABLES', `cannot remove an earlier run's rules: ${errorMessage(err)}`, { cause: err });
    });
  }

  /**
   * Makes the rules match `table` now. `full` restores even when the rules
   * rendered are those installed (repairing rules someone else removed); a
   * diff apply whose rules are unchanged costs no restore. Throws KupError
   * KUP_IPTABLES (the binary's stderr in the message) when a command fails;
   * the caller decides when to try again.
   */
  apply(table: ServiceTable, proxyPorts: ReadonlyMap<ServicePortKey, ProxyPortNumbers>, full: boolean): Promise<void> {
    if (this.stopped || this.backend === null) {
      return Promise.reject(new KupError('KUP_IPTABLES', 'the iptables applier is not running'));
    }
    const run = this.tail.then(() => this.applyNow(table, proxyPorts, full));
    this.tail = run.catch(() => undefined);
    return run;
  }

  /**
   * Waits for a running apply, then removes the project's chains and jumps
   * (not when `keepRules`: a successor kup took them over). Safe to call twice.
   */
  async stop(opts: { keepRules?: boolean } = {}): Promise<void> {
    const first = !this.stopped;
    this.stopped = true;
    await this.tail;
    await this.cleaning;
    if (!first || this.backend === null) return;
    if (opts.keepRules === true) {
      this.log.info('iptables rules left in place for the successor');
      return;
    }
    try {
      await this.removeAll();
      this.log.info('iptables rules removed');
    } catch (err) {
      this.log.error({ err: errorMessage(err) }, 'iptables rules could not all be removed');
    }
  }

  /** What the metrics read at scrape time (kube-proxy's sync_proxy_rules_iptables_* series, per family). */
  metrics(): IptablesMetrics {
    return {
      families: this.families,
      installed: this.installed === null ? null : { ...this.installed },
      restoreFailures: { ...this.restoreFailures },
    };
  }

  /** The restore scripts now installed (IPv4, then IPv6 when used); null before the first successful apply. */
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

  private async applyNow(table: ServiceTable, proxyPorts: ReadonlyMap<ServicePortKey, ProxyPortNumbers>, full: boolean): Promise<void> {
    const backend = this.backend;
    if (this.stopped || backend === null) throw new KupError('KUP_IPTABLES', 'the iptables applier is not running');
    // Re-read each apply: an address acquired (or changed) after start must not leave host traffic pointed at a stale one.
    if (!this.explicitHostIPs) this.hostIPs = await detectHostIPs();
    const nodePortIPs = this.currentNodePortIPs();
    const rendered = renderRules({
      table,
      proxyPorts,
      bindAddress: this.bindAddress,
      hostIPs: this.hostIPs,
      nodePortIPs,
      localhostNodePorts: this.localhostNodePorts,
      commentSupported: this.commentSupported,
      localDetector: this.localDetector(),
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
    const installedNow = { ipv4: rendered.ipv4, ipv6: this.families.includes('ipv6') ? rendered.ipv6 : '' };
    if (
      !full &&
      this.consecutiveFailures === 0 &&
      this.installed !== null &&
      this.installed.ipv4 === installedNow.ipv4 &&
      this.installed.ipv6 === installedNow.ipv6
    ) {
      // Endpoint churn changes no rule (balancing is the proxy's job): no restore needed.
      this.lastSuccessTime = Date.now();
      return;
    }
    const started = Date.now();
    try {
      for (const family of this.families) {
        await this.restore(backend[family], rendered[family]).catch((err: unknown) => {
          this.restoreFailures[family]++;
          throw err;
        });
        await this.ensureJumps(backend[family]);
      }
    } catch (err) {
      this.consecutiveFailures++;
      this.lastError = errorMessage(err);
      throw err;
    }
    this.lastSuccessTime = Date.now();
    this.consecutiveFailures = 0;
    this.lastError = null;
    this.ruleCount = { ...rendered.ruleCount };
    this.installed = installedNow;
    this.log.debug({ ms: Date.now() - started, rules: rendered.ruleCount }, 'iptables synced');
    // Only now do new datagrams meet the new rules; an entry cleared earlier could be re-created with the old port.
    const next: SteeredTable = { table, proxyPorts };
    const stale = staleConntrackFilters(this.steered, next, this.families);
    this.steered = next;
    if (stale.length > 0) {
      this.cleaning = this.cleaning
        .then(() => this.conntrack.clear(stale))
        .catch((err: unknown) => this.log.warn({ err: errorMessage(err) }, 'conntrack cleanup failed'));
    }
  }

  /**
   * The node's addresses --nodeport-addresses selects, re-read each apply (the
   * node may gain or lose one; a periodic resync picks it up), logged when
   * they change.
   */
  private currentNodePortIPs(): NodePortIPs {
    const ips = resolveNodePortIPs(this.nodePortAddresses, localAddresses(), this.hostIPs);
    if (ips !== null) {
      const text = [...ips.ipv4, ...ips.ipv6].join(', ');
      if (text !== this.nodePortIPsText) {
        this.nodePortIPsText = text;
        if (text === '')
          this.log.warn(
            { nodePortAddresses: this.nodePortAddresses },
            'no node address matches --nodeport-addresses: NodePorts are not accepted anywhere',
          );
        else this.log.info({ nodePortAddresses: this.nodePortAddresses }, `NodePorts accepted on ${text}`);
      }
    }
    return ips;
  }

  private async restore(bins: FamilyBinaries, script: string): Promise<void> {
    await runChecked(bins.restore, [...WAIT_LOCK, '--noflush'], { input: script, timeoutMs: this.timeoutMs });
  }

  private async ensureJumps(bins: FamilyBinaries): Promise<void> {
    for (const j of jumpRules(this.commentSupported)) await this.ensureJump(bins, j);
  }

  private async ensureJump(bins: FamilyBinaries, j: JumpRule): Promise<void> {
    const check = [...WAIT_LOCK, '-t', j.table, '-C', j.chain, ...j.args];
    const c = await runCommand(bins.iptables, check, { timeoutMs: this.timeoutMs });
    if (c.code === 0) return;
    // Exit 1 is "no such rule": add it. Anything else is a failure of its own.
    if (c.code !== 1) throw new KupError('KUP_IPTABLES', describeFailure(bins.iptables, check, c));
    await runChecked(bins.iptables, [...WAIT_LOCK, '-t', j.table, j.position === 'prepend' ? '-I' : '-A', j.chain, ...j.args], {
      timeoutMs: this.timeoutMs,
    });
  }

  /** Removes jumps and chains in every usable family; throws what failed. */
  private async removeAll(): Promise<void> {
    if (this.backend === null) return;
    const errors: string[] = [];
    for (const family of this.families) {
      await removeFamily(this.backend[family], this.timeoutMs).catch((err: unknown) => errors.push(errorMessage(err)));
    }
    if (errors.length > 0) throw new KupError('KUP_IPTABLES', errors.join('; '));
  }
}

/** Runs a binary; throws KupError KUP_IPTABLES (command and stderr in the message) unless it exits 0. */
async function runChecked(file: string, args: readonly string[], options: { input?: string; timeoutMs: number }): Promise<string> {
  const r = await runCommand(file, args, options);
  if (r.code !== 0) throw new KupError('KUP_IPTABLES', describeFailure(file, args, r));
  return r.stdout;
}

async function removeFamily(bins: FamilyBinaries, timeoutMs: number): Promise<void> {
  const script = renderCleanup(await runChecked(bins.save, [], { timeoutMs }));
  if (script === '') return;
  await runChecked(bins.restore, [...WAIT_LOCK, '--noflush'], { input: script, timeoutMs });
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
    await removeFamily(backend[family], timeoutMs).catch((err: unknown) => errors.push(errorMessage(err)));
  }
  if (errors.length > 0) throw new KupError('KUP_IPTABLES', `iptables cleanup failed: ${errors.join('; ')}`);
  logger.info({ backend: backend.mode }, 'no kup iptables rules remain');
}

/**
 * `kup cleanup --kube-proxy-rules`: removes the rules kube-proxy's iptables
 * mode left (see kube-proxy-cleanup.ts for exactly which), in both families,
 * leaving kup's own KUP- chains and everything else alone. Run it once
 * kube-proxy is parked on the node. Idempotent. Throws KupError KUP_IPTABLES
 * when a family's rules could not be removed.
 */
export async function cleanupKubeProxyIptables(logger: Logger, timeoutMs = 10_000): Promise<void> {
  const backend = await detectBackend();
  if (backend === null) {
    logger.info('no iptables binary: nothing to clean up');
    return;
  }
  const errors: string[] = [];
  for (const family of ['ipv4', 'ipv6'] as const) {
    const bins = backend[family];
    if (!(await familyUsable(bins))) continue;
    try {
      const { script, removed, kept } = renderKubeProxyCleanup(await runChecked(bins.save, [], { timeoutMs }));
      for (const k of kept) logger.warn({ family }, k);
      if (script === '') continue;
      await runChecked(bins.restore, [...WAIT_LOCK, '--noflush'], { input: script, timeoutMs });
      logger.info({ family, chains: removed.length }, `removed kube-proxy's chains: ${removed.join(' ')}`);
    } catch (err) {
      errors.push(errorMessage(err));
    }
  }
  if (errors.length > 0) throw new KupError('KUP_IPTABLES', `kube-proxy rule cleanup failed: ${errors.join('; ')}`);
  logger.info({ backend: backend.mode }, 'no kube-proxy iptables rules remain');
}
