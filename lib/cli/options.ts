import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { isValidIP, parseCidr } from '../core/address.js';
import { LB_STRATEGIES, type LbStrategyName } from '../core/balancer/strategy.js';
import { parseDuration } from '../core/duration.js';
import { DEFAULT_SERVICE_CIDR, parseServiceCIDR } from '../core/cluster-ip-range.js';
import { KupError } from '../core/errors.js';
import { NODEPORT_KEYWORDS } from '../core/nodeport-addresses.js';
import { parsePortRange } from '../core/port-range.js';
import { RELAY_CHOICES, type RelayChoice } from '../dataplane/native-relay.js';
import { LOG_LEVELS, type LogLevel } from '../log.js';
import type { HostPort } from '../core/address.js';
import { DEFAULT_STATE_DIR, DETECT_LOCAL_MODES, type DetectLocalMode, type RunConfig, type SourceSpec } from '../runtime/config.js';

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
  /** Only from the command line (auto when absent). */
  relay?: string;
  udpBufferSize: string;
  lbStrategy: string;
  iptables: boolean;
  /** Only `kup run` has it. */
  exposeOnLoopback?: boolean;
  syncPeriod: string;
  minSyncPeriod: string;
  healthzBindAddress: string;
  metricsBindAddress: string;
  shutdownGracePeriod: string;
  stateDir: string;
  /** false with --no-handover. */
  handover?: boolean;
  logLevel: string;
  serviceClusterIpRange: string;
  kubeApiQps: string;
  kubeApiBurst: string;
  clusterCidr: string;
  nodeportAddresses: string;
  /** kube-proxy's --iptables-localhost-nodeports: "true" or "false" (a bare flag is true). */
  iptablesLocalhostNodeports?: string | boolean;
  detectLocalMode: string;
  podBridgeInterface: string;
  podInterfaceNamePrefix: string;
  /** kube-proxy's names for --sync-period / --min-sync-period. */
  iptablesSyncPeriod?: string;
  iptablesMinSyncPeriod?: string;
  config?: string;
  writeConfigTo?: string;
  cleanup?: boolean;
}

/** Where a value came from when not from its flag (a --config field), for error messages. */
export type FlagLabels = Partial<Record<keyof RunFlags, string>>;

export const RUN_DEFAULTS = {
  bindAddress: '0.0.0.0',
  proxyPortRange: '',
  // The legacy 250ms broke DNS clients that retry after 2s (kubernetes#14939);
  // 30s is the kernel's own conntrack timeout for unreplied UDP flows.
  udpTimeout: '30s',
  udpMaxSessions: '4096',
  tcpIdleTimeout: '0',
  relay: 'auto',
  // The kernel defaults (~208 KiB) overflow under a burst of small datagrams
  // (DNS) while Node's event loop is busy elsewhere; capped at net.core.rmem_max.
  udpBufferSize: '4Mi',
  lbStrategy: 'round-robin',
  syncPeriod: '30s',
  minSyncPeriod: '1s',
  healthzBindAddress: '0.0.0.0:10256',
  metricsBindAddress: '127.0.0.1:10249',
  shutdownGracePeriod: '5s',
  stateDir: DEFAULT_STATE_DIR,
  logLevel: 'info',
  serviceClusterIpRange: DEFAULT_SERVICE_CIDR,
  // kube-proxy's defaults (client-go's are 5 and 10 too).
  kubeApiQps: '5',
  kubeApiBurst: '10',
  clusterCidr: '',
  nodeportAddresses: '',
  detectLocalMode: '',
  podBridgeInterface: '',
  podInterfaceNamePrefix: '',
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

/** A rate such as kube-proxy's qps (a float). */
function parseRate(flag: string, value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) throw bad(`${flag}: "${value}" is not a number of requests per second`);
  return n;
}

/** The range parser names --proxy-port-range; a --config portRange says so instead. */
function parsePortRangeAt(label: string, value: string): ReturnType<typeof parsePortRange> {
  try {
    return parsePortRange(value);
  } catch (err) {
    if (err instanceof KupError && label !== '--proxy-port-range') throw bad(err.message.replace('--proxy-port-range', label));
    throw err;
  }
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

function parseList(value: string): string[] {
  return value
    .split(',')
    .map((v) => v.trim())
    .filter((v) => v !== '');
}

function parseClusterCIDRs(flag: string, value: string): string[] {
  const cidrs = parseList(value);
  for (const c of cidrs) if (parseCidr(c) === null) throw bad(`${flag}: "${c}" is not a CIDR (for example 10.244.0.0/16)`);
  return cidrs;
}

function parseNodePortAddresses(flag: string, value: string): string[] {
  const items = parseList(value);
  for (const c of items) {
    if (!NODEPORT_KEYWORDS.has(c) && parseCidr(c) === null) throw bad(`${flag}: "${c}" is neither a CIDR nor primary, localhost or all`);
  }
  return items;
}

/** Go's strconv.ParseBool spellings, as kube-proxy's boolean flags take them. */
function parseBool(flag: string, value: string | boolean | undefined, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value === 'boolean') return value;
  if (/^(1|t|true)$/i.test(value.trim())) return true;
  if (/^(0|f|false)$/i.test(value.trim())) return false;
  throw bad(`${flag}: "${value}" is neither true nor false`);
}

function parseDetectLocal(f: RunFlags, name: (k: keyof RunFlags, flag: string) => string): RunConfig['detectLocal'] {
  const mode = f.detectLocalMode;
  if (mode !== '' && !(DETECT_LOCAL_MODES as readonly string[]).includes(mode)) {
    throw bad(`${name('detectLocalMode', '--detect-local-mode')}: "${mode}" is not one of ${DETECT_LOCAL_MODES.join(', ')}`);
  }
  // As upstream's validation: the two interface modes need their interface.
  if (mode === 'BridgeInterface' && f.podBridgeInterface === '') {
    throw bad(
      `${name('detectLocalMode', '--detect-local-mode')} BridgeInterface needs --pod-bridge-interface (detectLocal.bridgeInterface)`,
    );
  }
  if (mode === 'InterfaceNamePrefix' && f.podInterfaceNamePrefix === '') {
    throw bad(
      `${name('detectLocalMode', '--detect-local-mode')} InterfaceNamePrefix needs --pod-interface-name-prefix (detectLocal.interfaceNamePrefix)`,
    );
  }
  return { mode: mode as DetectLocalMode, bridgeInterface: f.podBridgeInterface, interfaceNamePrefix: f.podInterfaceNamePrefix };
}

function parseRelay(v: string): RelayChoice {
  if (!(RELAY_CHOICES as readonly string[]).includes(v)) throw bad(`--relay: "${v}" is not one of ${RELAY_CHOICES.join(', ')}`);
  return v as RelayChoice;
}

/** `labels` names the --config field a value came from, so that an error points at the file, not at a flag never given. */
export function parseRunFlags(f: RunFlags, labels: FlagLabels = {}): RunConfig {
  const name = (k: keyof RunFlags, flag: string): string => labels[k] ?? flag;
  if (!isValidIP(f.bindAddress)) throw bad(`${name('bindAddress', '--bind-address')}: "${f.bindAddress}" is not an IP address`);
  if (!(LB_STRATEGIES as readonly string[]).includes(f.lbStrategy)) {
    throw bad(`--lb-strategy: "${f.lbStrategy}" is not one of ${LB_STRATEGIES.join(', ')}`);
  }
  if (!(LOG_LEVELS as readonly string[]).includes(f.logLevel)) {
    throw bad(`--log-level: "${f.logLevel}" is not one of ${LOG_LEVELS.join(', ')}`);
  }
  const host = (f.hostnameOverride ?? hostname()).trim().toLowerCase();
  if (host === '') throw bad('--hostname-override: the node name is empty');
  const udpTimeoutMs = parseDuration(name('udpTimeout', '--udp-timeout'), f.udpTimeout);
  if (udpTimeoutMs <= 0) throw bad(`${name('udpTimeout', '--udp-timeout')} must be more than 0`);
  const syncPeriodMs = parseDuration(name('syncPeriod', '--sync-period'), f.syncPeriod);
  if (syncPeriodMs <= 0) throw bad(`${name('syncPeriod', '--sync-period')} must be more than 0`);
  const minSyncPeriodMs = parseDuration(name('minSyncPeriod', '--min-sync-period'), f.minSyncPeriod);
  return {
    source: parseSource(f.source),
    kubeconfig: f.kubeconfig ?? null,
    kubeApiQps: parseRate(name('kubeApiQps', '--kube-api-qps'), f.kubeApiQps),
    kubeApiBurst: parseCount(name('kubeApiBurst', '--kube-api-burst'), f.kubeApiBurst, 0, 1_000_000),
    nodeName: host,
    bindAddress: f.bindAddress,
    portRange: parsePortRangeAt(name('proxyPortRange', '--proxy-port-range'), f.proxyPortRange),
    udpTimeoutMs,
    udpMaxSessions: parseCount('--udp-max-sessions', f.udpMaxSessions, 1, 1_000_000),
    tcpIdleTimeoutMs: parseDuration('--tcp-idle-timeout', f.tcpIdleTimeout),
    relay: parseRelay(f.relay ?? RUN_DEFAULTS.relay),
    udpBufferSize: parseSize('--udp-buffer-size', f.udpBufferSize),
    lbStrategy: f.lbStrategy as LbStrategyName,
    // The listener is the exposure: nothing to steer, so no rules.
    iptables: f.iptables && f.exposeOnLoopback !== true,
    exposeOnLoopback: f.exposeOnLoopback === true,
    syncPeriodMs,
    minSyncPeriodMs,
    healthzBindAddress: parseHostPort(name('healthzBindAddress', '--healthz-bind-address'), f.healthzBindAddress),
    metricsBindAddress: parseHostPort(name('metricsBindAddress', '--metrics-bind-address'), f.metricsBindAddress),
    shutdownGracePeriodMs: parseDuration('--shutdown-grace-period', f.shutdownGracePeriod),
    stateDir: parseStateDir(f.stateDir),
    handover: f.handover !== false,
    logLevel: f.logLevel as LogLevel,
    serviceClusterIPRange: parseServiceCIDR('--service-cluster-ip-range', f.serviceClusterIpRange ?? RUN_DEFAULTS.serviceClusterIpRange),
    clusterCIDRs: parseClusterCIDRs(name('clusterCidr', '--cluster-cidr'), f.clusterCidr ?? ''),
    nodePortAddresses: parseNodePortAddresses(name('nodeportAddresses', '--nodeport-addresses'), f.nodeportAddresses ?? ''),
    localhostNodePorts: parseBool(name('iptablesLocalhostNodeports', '--iptables-localhost-nodeports'), f.iptablesLocalhostNodeports, true),
    detectLocal: parseDetectLocal(
      {
        ...f,
        detectLocalMode: f.detectLocalMode ?? '',
        podBridgeInterface: f.podBridgeInterface ?? '',
        podInterfaceNamePrefix: f.podInterfaceNamePrefix ?? '',
      },
      name,
    ),
  };
}
