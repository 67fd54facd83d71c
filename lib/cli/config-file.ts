/**
 * `kup run --config FILE`: kube-proxy's KubeProxyConfiguration read from disk
 * and merged under the flags (a flag given on the command line wins, as with
 * kube-proxy); `--write-config-to FILE` writes the effective one back.
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { errorMessage, KupError } from '../core/errors.js';
import type { RunConfig } from '../runtime/config.js';
import {
  decodeKubeProxyConfiguration,
  encodeKubeProxyConfiguration,
  type KubeProxyFileFlag,
  type KubeProxyFileSettings,
} from '../runtime/kube-proxy-config.js';
import type { FlagLabels, RunFlags } from './options.js';

export interface MergedFlags {
  readonly flags: RunFlags;
  readonly labels: FlagLabels;
  /** What to log once the logger exists (the log level may come from the flags just merged). */
  readonly report: (log: Logger, config: RunConfig) => void;
}

export async function readConfigFile(path: string): Promise<KubeProxyFileSettings> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new KupError('KUP_BAD_FILE', `--config ${path}: cannot read: ${errorMessage(err)}`);
  }
  return decodeKubeProxyConfiguration(text, `--config ${path}`);
}

/**
 * Flags over file over defaults. `fromCli(name)` tells whether a flag was given
 * on the command line (commander's getOptionValueSource). kube-proxy's
 * --iptables-sync-period / --iptables-min-sync-period are aliases of
 * --sync-period / --min-sync-period; the latter win when both are given.
 */
export function mergeFlags(
  flags: RunFlags,
  file: KubeProxyFileSettings | null,
  fromCli: (name: keyof RunFlags) => boolean,
  origin: string,
): MergedFlags {
  const merged: RunFlags = { ...flags };
  const labels: FlagLabels = {};
  if (file !== null) {
    for (const [key, value] of Object.entries(file.flags) as [KubeProxyFileFlag, string][]) {
      if (fromCli(key)) continue;
      merged[key] = value;
      labels[key] = `${origin}: ${file.fieldOf[key] ?? key}`;
    }
  }
  if (flags.iptablesSyncPeriod !== undefined && !fromCli('syncPeriod')) {
    merged.syncPeriod = flags.iptablesSyncPeriod;
    labels.syncPeriod = '--iptables-sync-period';
  }
  if (flags.iptablesMinSyncPeriod !== undefined && !fromCli('minSyncPeriod')) {
    merged.minSyncPeriod = flags.iptablesMinSyncPeriod;
    labels.minSyncPeriod = '--iptables-min-sync-period';
  }
  const report = (log: Logger, config: RunConfig): void => {
    if (file !== null) {
      for (const w of file.warnings) log.warn(w);
      if (file.ignored.length > 0) {
        log.info({ fields: file.ignored }, `${origin}: accepted, not used by a userspace proxy: ${file.ignored.join(', ')}`);
      }
    }
    if (fromCli('kubeApiQps') || fromCli('kubeApiBurst') || labels.kubeApiQps !== undefined || labels.kubeApiBurst !== undefined) {
      log.info(
        { qps: config.kubeApiQps, burst: config.kubeApiBurst },
        'kube-api qps/burst accepted: the live source lists once and then watches, with no client-side rate limiter to apply them to',
      );
    }
  };
  return { flags: merged, labels, report };
}

export async function writeEffectiveConfig(path: string, config: RunConfig): Promise<void> {
  try {
    await writeFile(path, encodeKubeProxyConfiguration(config));
  } catch (err) {
    throw new KupError('KUP_BAD_FILE', `--write-config-to ${path}: cannot write: ${errorMessage(err)}`);
  }
}
