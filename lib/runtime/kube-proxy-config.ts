/**
 * kube-proxy's configuration file (`KubeProxyConfiguration`,
 * kubeproxy.config.k8s.io/v1alpha1), as kubeadm writes it into the
 * `kube-proxy` ConfigMap: decoded into the values of the `kup run` flags that
 * mean the same, and the effective configuration encoded back for
 * `--write-config-to`. Pure: the CLI reads and writes the files.
 *
 * Decoding is lenient as upstream's: an unknown field is one warning, not an
 * error; a zero value ("", "0s", 0, null) means "unset, take the default", as
 * upstream's defaulting does (kubeadm writes every field, mostly zero).
 */
import { parseAllDocuments, stringify } from 'yaml';
import { errorMessage, KupError } from '../core/errors.js';
import { asObject, printable, quote, type Obj } from '../core/object-fields.js';
import type { RunConfig } from './config.js';

export const KUBE_PROXY_API_VERSION = 'kubeproxy.config.k8s.io/v1alpha1';
export const KUBE_PROXY_KIND = 'KubeProxyConfiguration';

/** The `kup run` flags a file may set (the keys of lib/cli's RunFlags), in flag syntax. */
export type KubeProxyFileFlag =
  | 'bindAddress'
  | 'healthzBindAddress'
  | 'metricsBindAddress'
  | 'kubeconfig'
  | 'kubeApiQps'
  | 'kubeApiBurst'
  | 'hostnameOverride'
  | 'nodeportAddresses'
  | 'iptablesLocalhostNodeports'
  | 'clusterCidr'
  | 'detectLocalMode'
  | 'podBridgeInterface'
  | 'podInterfaceNamePrefix'
  | 'syncPeriod'
  | 'minSyncPeriod'
  | 'udpTimeout'
  | 'proxyPortRange';

export interface KubeProxyFileSettings {
  /** Flag values the file sets, in the syntax the flags take. */
  readonly flags: Partial<Record<KubeProxyFileFlag, string>>;
  /** For error messages: which field of the file set each flag. */
  readonly fieldOf: Partial<Record<KubeProxyFileFlag, string>>;
  /** One line per unknown field. */
  readonly warnings: string[];
  /** Fields upstream knows that kup accepts but does not use, set to something other than their zero value. */
  readonly ignored: string[];
}

/** The modes kup runs as: it is kube-proxy's userspace mode. */
const USERSPACE_MODES = new Set(['', 'userspace']);

type Reader = (value: unknown, path: string, out: Collector) => void;
type Schema = { readonly [field: string]: Reader | Schema };

interface Collector {
  readonly origin: string;
  readonly settings: KubeProxyFileSettings;
}

function bad(origin: string, message: string): KupError {
  return new KupError('KUP_BAD_CONFIG', `${origin}: ${message}`);
}

function isZero(value: unknown): boolean {
  if (value === null || value === undefined || value === '' || value === 0 || value === false) return true;
  // Zero durations as Go prints them ("0s", "0m0s"), and "0" as kubeadm writes logging's buffer sizes.
  if (typeof value === 'string' && /^0+(\.0+)?(ns|us|µs|ms|s|m|h)?(0+(ns|us|µs|ms|s|m|h))*$/.test(value)) return true;
  if (Array.isArray(value)) return value.length === 0;
  const obj = asObject(value);
  return obj !== undefined && Object.values(obj).every(isZero);
}

/** A string field mapped to a flag; zero means unset. */
function toFlag(flag: KubeProxyFileFlag, transform: (v: string) => string = (v) => v): Reader {
  return (value, path, { origin, settings }) => {
    if (isZero(value)) return;
    if (typeof value !== 'string' && typeof value !== 'number') {
      throw bad(origin, `${path}: ${printable(value)} is not a ${typeof value === 'object' ? 'scalar' : 'string'}`);
    }
    settings.flags[flag] = transform(String(value));
    settings.fieldOf[flag] = path;
  };
}

/** A number field (qps, burst) mapped to a flag. */
function numberFlag(flag: KubeProxyFileFlag): Reader {
  return (value, path, { origin, settings }) => {
    if (isZero(value)) return;
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0)
      throw bad(origin, `${path}: ${printable(value)} is not a number`);
    settings.flags[flag] = String(value);
    settings.fieldOf[flag] = path;
  };
}

/** Known upstream, no meaning to a userspace proxy: accepted, noted once when set. */
const ignored: Reader = (value, path, { settings }) => {
  if (!isZero(value)) settings.ignored.push(path);
};

const mode: Reader = (value, path, { origin }) => {
  const m = value === null || value === undefined ? '' : value;
  if (typeof m !== 'string' || !USERSPACE_MODES.has(m)) {
    throw bad(
      origin,
      `${path} ${quote(m)}: kup is a userspace proxy (kube-proxy's userspace mode); set mode to "" or "userspace", or run kube-proxy for that mode`,
    );
  }
};

const SCHEMA: Schema = {
  apiVersion: () => undefined,
  kind: () => undefined,
  featureGates: ignored,
  clientConnection: {
    kubeconfig: toFlag('kubeconfig'),
    qps: numberFlag('kubeApiQps'),
    burst: numberFlag('kubeApiBurst'),
    acceptContentTypes: ignored,
    contentType: ignored,
  },
  logging: ignored,
  hostnameOverride: toFlag('hostnameOverride'),
  bindAddress: toFlag('bindAddress'),
  healthzBindAddress: toFlag('healthzBindAddress'),
  metricsBindAddress: toFlag('metricsBindAddress'),
  bindAddressHardFail: ignored,
  enableProfiling: ignored,
  showHiddenMetricsForVersion: ignored,
  mode,
  // Newer versions moved the periods to the top level; they win over iptables.* (read before them).
  syncPeriod: toFlag('syncPeriod'),
  minSyncPeriod: toFlag('minSyncPeriod'),
  iptables: {
    syncPeriod: toFlag('syncPeriod'),
    minSyncPeriod: toFlag('minSyncPeriod'),
    masqueradeBit: ignored,
    masqueradeAll: ignored,
    // *bool upstream: null means the default (true), false turns them off, so not toFlag (whose zero is "unset").
    localhostNodePorts: (value, path, { origin, settings }) => {
      if (value === null || value === undefined) return;
      if (typeof value !== 'boolean') throw bad(origin, `${path}: ${printable(value)} is not true or false`);
      settings.flags.iptablesLocalhostNodeports = String(value);
      settings.fieldOf.iptablesLocalhostNodeports = path;
    },
    snatNodeInternalIP: ignored,
  },
  ipvs: ignored,
  nftables: ignored,
  winkernel: ignored,
  detectLocalMode: toFlag('detectLocalMode'),
  detectLocal: {
    bridgeInterface: toFlag('podBridgeInterface'),
    interfaceNamePrefix: toFlag('podInterfaceNamePrefix'),
  },
  clusterCIDR: toFlag('clusterCidr'),
  nodePortAddresses: (value, path, { origin, settings }) => {
    if (isZero(value)) return;
    if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) {
      throw bad(origin, `${path}: ${printable(value)} is not a list of CIDRs`);
    }
    settings.flags.nodeportAddresses = value.join(',');
    settings.fieldOf.nodeportAddresses = path;
  },
  oomScoreAdj: ignored,
  conntrack: {
    udpTimeout: toFlag('udpTimeout'),
    maxPerCore: ignored,
    min: ignored,
    tcpEstablishedTimeout: ignored,
    tcpCloseWaitTimeout: ignored,
    tcpBeLiberal: ignored,
    udpStreamTimeout: ignored,
  },
  configSyncPeriod: ignored,
  portRange: toFlag('proxyPortRange'),
  windowsRunAsService: ignored,
};

/** The order fields are read in: iptables.* first, so that a top-level syncPeriod/minSyncPeriod overwrites it. */
function orderedEntries(obj: Obj): [string, unknown][] {
  return Object.entries(obj).sort(([a], [b]) => Number(b === 'iptables') - Number(a === 'iptables'));
}

function walk(obj: Obj, schema: Schema, prefix: string, out: Collector): void {
  for (const [key, value] of orderedEntries(obj)) {
    const path = prefix === '' ? key : `${prefix}.${key}`;
    const entry = schema[key];
    if (entry === undefined) {
      out.settings.warnings.push(`${out.origin}: unknown field ${path}; ignored`);
    } else if (typeof entry === 'function') {
      entry(value, path, out);
    } else if (value !== null && value !== undefined) {
      const inner = asObject(value);
      if (inner === undefined) throw bad(out.origin, `${path}: ${printable(value)} is not an object`);
      walk(inner, entry, path, out);
    }
  }
}

/** Decodes one KubeProxyConfiguration document (YAML or JSON). Throws KUP_BAD_CONFIG, one line. */
export function decodeKubeProxyConfiguration(text: string, origin: string): KubeProxyFileSettings {
  const docs = parseAllDocuments(text, { prettyErrors: false });
  const list = (Array.isArray(docs) ? docs : [docs]).filter((d) => d.contents !== null);
  if (list.length !== 1) throw bad(origin, `expected one ${KUBE_PROXY_KIND} document, found ${list.length}`);
  const doc = list[0]!;
  const e = doc.errors[0];
  if (e !== undefined) throw bad(origin, `not valid YAML: ${e.message.split('\n')[0]}`);
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (err) {
    throw bad(origin, `not valid YAML: ${errorMessage(err).split('\n')[0]}`);
  }
  const obj = asObject(value);
  if (obj === undefined) throw bad(origin, `not a ${KUBE_PROXY_KIND} (${printable(value, 40)})`);
  if (obj['kind'] !== KUBE_PROXY_KIND || obj['apiVersion'] !== KUBE_PROXY_API_VERSION) {
    throw bad(
      origin,
      `kind ${quote(obj['kind'])}, apiVersion ${quote(obj['apiVersion'])}: expected kind ${KUBE_PROXY_KIND}, apiVersion ${KUBE_PROXY_API_VERSION}`,
    );
  }
  const settings: KubeProxyFileSettings = { flags: {}, fieldOf: {}, warnings: [], ignored: [] };
  walk(obj, SCHEMA, '', { origin, settings });
  return settings;
}

/** Milliseconds as Go's time.Duration prints them ("30s", "1m30s", "250ms", "0s"). */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  if (ms < 1000) return `${ms}ms`;
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  const s = (ms % 60_000) / 1000;
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

function hostPort(a: RunConfig['healthzBindAddress']): string {
  if (a === null) return '';
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/**
 * The effective configuration as a KubeProxyConfiguration, for
 * `--write-config-to`: what kube-proxy would read to behave as this kup
 * (a disabled health or metrics server has no representation there; it is
 * written empty, which upstream would take for its default).
 */
export function encodeKubeProxyConfiguration(config: RunConfig): string {
  const doc = {
    apiVersion: KUBE_PROXY_API_VERSION,
    kind: KUBE_PROXY_KIND,
    bindAddress: config.bindAddress,
    healthzBindAddress: hostPort(config.healthzBindAddress),
    metricsBindAddress: hostPort(config.metricsBindAddress),
    clientConnection: {
      kubeconfig: config.kubeconfig ?? '',
      qps: config.kubeApiQps,
      burst: config.kubeApiBurst,
    },
    hostnameOverride: config.nodeName,
    mode: 'userspace',
    clusterCIDR: config.clusterCIDRs.join(','),
    detectLocalMode: config.detectLocal.mode,
    detectLocal: {
      bridgeInterface: config.detectLocal.bridgeInterface,
      interfaceNamePrefix: config.detectLocal.interfaceNamePrefix,
    },
    nodePortAddresses: [...config.nodePortAddresses],
    // Under iptables, where v1alpha1 has them (kube-proxy reading this file would not know top-level ones).
    iptables: {
      syncPeriod: formatDuration(config.syncPeriodMs),
      minSyncPeriod: formatDuration(config.minSyncPeriodMs),
      localhostNodePorts: config.localhostNodePorts,
    },
    conntrack: { udpTimeout: formatDuration(config.udpTimeoutMs) },
    portRange: config.portRange === null ? '' : `${config.portRange.base}-${config.portRange.base + config.portRange.size - 1}`,
  };
  return stringify(doc);
}
