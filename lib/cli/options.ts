import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { isValidIP } from '../core/address.js';
import { LB_STRATEGIES, type LbStrategyName } from '../core/balancer/strategy.js';
import { parseDuration } from '../core/duration.js';
import { DEFAULT_SERVICE_CIDR, parseServiceCIDR } from '../core/cluster-ip-range.js';
import { KupError } from '../core/errors.js';
import { parsePortRange } from '../core/port-range.js';
import { LOG_LEVELS, type LogLevel } from '../log.js';
import type { HostPort } from '../core/address.js';
import type { RunConfig, SourceSpec } from '../runtime/config.js';

/** The raw strings commander hands over (all flags of `kup run`). */
export interface RunFlags {
  source?: string;
  kubeconfig?: string;
  hostnameOverride?: string;
  bindAddress: string;
  proxyPortRange: string;
  udpTimeout: string;
  udpMaxSessions: string;
  tcpIdleTimeout: string;
  udpBufferSize: string;
  lbStrategy: string;
  iptables: boolean;
  syncPeriod: string;
  minSyncPeriod: string;
  healthzBindAddress: string;
  metricsBindAddress: string;
  shutdownGracePeriod: string;
  stateDir: string;
  logLevel: string;
  serviceClusterIpRange: string;
}

export const RUN_DEFAULTS = {
  bindAddress: '0.0.0.0',
  proxyPortRange: '',
  // The legacy 250ms broke DNS clients that retry after 2s (kubernetes#14939);
  // 30s is the kernel's own conntrack timeout for unreplied UDP flows.
  udpTimeout: '30s',
  udpMaxSessions: '4096',
  tcpIdleTimeout: '0',
  // The kernel defaults (~208 KiB) overflow under a burst of small datagrams
  // (DNS) while Node's event loop is busy elsewhere; capped at net.core.rmem_max.
  udpBufferSize: '4Mi',
  lbStrategy: 'round-robin',
  syncPeriod: '30s',
  minSyncPeriod: '1s',
  healthzBindAddress: '0.0.0.0:10256',
  metricsBindAddress: '127.0.0.1:10249',
  shutdownGracePeriod: '5s',
  stateDir: '/var/lib/kup',
  logLevel: 'info',
  serviceClusterIpRange: DEFAULT_SERVICE_CIDR,
} as const;

function bad(message: string): KupError {
  return new KupError('KUP_BAD_FLAG', message);
}

export function parseSource(value: string | undefined): SourceSpec {
  if (value === undefined || value === 'kubernetes') return { kind: 'kubernetes' };
  if (value.startsWith('file:')) {
    const path = value.slice(5);
    if (path === '') throw bad('--source file: needs a path, as in --source file:examples/demo.yaml');
    return { kind: 'file', path };
  }
  throw bad(`--source: "${value}" is neither "kubernetes" nor "file:PATH"`);
}

export function parseHostPort(flag: string, value: string): HostPort | null {
  if (value === '') return null;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:]+)):(\d+)$/.exec(value);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  // Port 0 lets the kernel choose (the log says which); useful for several kups on one machine.
  if (m === null || host === undefined || !isValidIP(host) || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw bad(`${flag}: "${value}" is not IP:PORT (for example 127.0.0.1:10249 or [::]:10256)`);
  }
  return { host, port };
}

function parseStateDir(value: string): string {
  if (value.trim() === '') throw bad('--state-dir: empty; give a directory, as in --state-dir /var/lib/kup');
  return resolve(value);
}

function parseCount(flag: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || n < min || n > max) throw bad(`${flag}: "${value}" is not a whole number from ${min} to ${max}`);
  return n;
}

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1000, ki: 1024, m: 1000 ** 2, mi: 1024 ** 2 };

/** A byte count: 4194304, 4Mi, 512Ki, 4M. */
export function parseSize(flag: string, value: string): number {
  const m = /^(\d+)\s*([kKmM]i?)?$/.exec(value.trim());
  const n = m === null ? NaN : Number(m[1]) * (SIZE_UNITS[(m[2] ?? '').toLowerCase()] ?? NaN);
  if (!Number.isSafeInteger(n) || n > 1024 ** 3)
    throw bad(`${flag}: "${value}" is not a size in bytes up to 1Gi (for example 4Mi, 512Ki or 0 for the kernel's default)`);
  return n;
}

export function parseRunFlags(f: RunFlags): RunConfig {
  if (!isValidIP(f.bindAddress)) throw bad(`--bind-address: "${f.bindAddress}" is not an IP address`);
  if (!(LB_STRATEGIES as readonly string[]).includes(f.lbStrategy)) {
    throw bad(`--lb-strategy: "${f.lbStrategy}" is not one of ${LB_STRATEGIES.join(', ')}`);
  }
  if (!(LOG_LEVELS as readonly string[]).includes(f.logLevel)) {
    throw bad(`--log-level: "${f.logLevel}" is not one of ${LOG_LEVELS.join(', ')}`);
  }
  const host = (f.hostnameOverride ?? hostname()).trim().toLowerCase();
  if (host === '') throw bad('--hostname-override: the node name is empty');
  const udpTimeoutMs = parseDuration('--udp-timeout', f.udpTimeout);
  if (udpTimeoutMs <= 0) throw bad('--udp-timeout must be more than 0');
  const syncPeriodMs = parseDuration('--sync-period', f.syncPeriod);
  if (syncPeriodMs <= 0) throw bad('--sync-period must be more than 0');
  const minSyncPeriodMs = parseDuration('--min-sync-period', f.minSyncPeriod);
  return {
    source: parseSource(f.source),
    kubeconfig: f.kubeconfig ?? null,
    nodeName: host,
    bindAddress: f.bindAddress,
    portRange: parsePortRange(f.proxyPortRange),
    udpTimeoutMs,
    udpMaxSessions: parseCount('--udp-max-sessions', f.udpMaxSessions, 1, 1_000_000),
    tcpIdleTimeoutMs: parseDuration('--tcp-idle-timeout', f.tcpIdleTimeout),
    udpBufferSize: parseSize('--udp-buffer-size', f.udpBufferSize),
    lbStrategy: f.lbStrategy as LbStrategyName,
    iptables: f.iptables,
    syncPeriodMs,
    minSyncPeriodMs,
    healthzBindAddress: parseHostPort('--healthz-bind-address', f.healthzBindAddress),
    metricsBindAddress: parseHostPort('--metrics-bind-address', f.metricsBindAddress),
    shutdownGracePeriodMs: parseDuration('--shutdown-grace-period', f.shutdownGracePeriod),
    stateDir: parseStateDir(f.stateDir),
    logLevel: f.logLevel as LogLevel,
    serviceClusterIPRange: parseServiceCIDR('--service-cluster-ip-range', f.serviceClusterIpRange ?? RUN_DEFAULTS.serviceClusterIpRange),
  };
}
