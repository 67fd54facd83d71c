import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { isExternallyReachable, type ListenerScope, type ServicePort, type ServiceTable } from '../core/types.js';
import type { ListenerStats } from '../dataplane/stats.js';
import type { IptablesMetrics } from '../iptables/applier.js';
import type { ChangeTracker } from '../core/change-tracker.js';
import type { ServicePortListeners } from '../dataplane/proxier.js';
import type { SourceState } from '../sources/source.js';
import type { SyncRecord, SyncState } from '../sync/syncer.js';
import { kupVersion } from '../runtime/version.js';
import type { ListenerView } from './status.js';
import type { RelayKind } from '../dataplane/native-relay.js';

/** What the metrics read; a ProxyRuntime provides all of it. */
export interface MetricsSource {
  readonly tracker: Pick<ChangeTracker, 'counters' | 'current'>;
  readonly proxier: {
    entries(): Iterable<ServicePortListeners>;
    failures(): ReadonlyMap<string, unknown>;
    refreshUdpDrops(): Promise<void>;
    /** Which relay moves TCP bytes; absent in tests without a proxier. */
    readonly relay?: RelayKind;
  };
  readonly syncer: { readonly state: Readonly<SyncState> };
  readonly source: { state(): SourceState };
  /** The iptables applier's counts, or null when running without rules. */
  iptables(): IptablesMetrics | null;
  /** Whether this node's Node says it should get load-balancer traffic. */
  nodeEligible(): boolean;
}

/** kube-proxy's buckets for sync durations: 1ms doubling to ~16s. */
const SYNC_BUCKETS = [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192, 16.384];
/** kube-proxy's network programming buckets: 0.25s steps to 1s, then 1s to 59s, 5s to 115s, 30s to 5min. */
const PROGRAMMING_BUCKETS = [
  0.25,
  0.5,
  ...Array.from({ length: 59 }, (_, i) => i + 1),
  ...Array.from({ length: 12 }, (_, i) => 60 + 5 * i),
  ...Array.from({ length: 7 }, (_, i) => 120 + 30 * i),
];

const PORT_LABELS = ['namespace', 'service', 'port', 'protocol', 'listener'] as const;
type PortLabels = Record<(typeof PORT_LABELS)[number], string>;
const ENDPOINT_LABELS = ['namespace', 'service', 'port', 'protocol', 'endpoint'] as const;

function portLabels(sp: ServicePort, listener: ListenerScope): PortLabels {
  return {
    namespace: sp.namespace,
    service: sp.name,
    port: sp.portName === '' ? String(sp.port) : sp.portName,
    protocol: sp.protocol,
    listener,
  };
}

function* listeners(src: MetricsSource): Generator<[ServicePort, ListenerScope, ListenerView]> {
  for (const p of src.proxier.entries()) {
    yield [p.sp, 'internal', p.internal];
    if (p.external !== null) yield [p.sp, 'external', p.external];
    if (p.cluster !== null) yield [p.sp, 'cluster', p.cluster];
  }
}

/**
 * The Prometheus registry of one proxy. Nothing here is touched on the data
 * path: per-port series are rebuilt from the listeners' plain counters at
 * scrape time (collect callbacks), so a port or endpoint that goes away
 * simply stops being reported and cardinality stays one series per live port
 * and endpoint. Only sync results (a few per second at most) are observed as
 * they happen.
 */
export class ProxyMetrics {
  readonly registry = new Registry();
  private readonly syncDuration: Histogram;
  private readonly fullSyncDuration: Histogram;
  private readonly partialSyncDuration: Histogram;
  private readonly programming: Histogram;
  private readonly healthz: Counter<'code'>;
  private readonly livez: Counter<'code'>;
  private readonly src: MetricsSource;

  constructor(src: MetricsSource) {
    this.src = src;
    const registers = [this.registry];
    this.syncDuration = new Histogram({
      name: 'kubeproxy_sync_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds (listeners and rules brought in line with the table)',
      buckets: SYNC_BUCKETS,
      registers,
    });
    this.fullSyncDuration = new Histogram({
      name: 'kubeproxy_sync_full_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds for full resyncs',
      buckets: SYNC_BUCKETS,
      registers,
    });
    this.partialSyncDuration = new Histogram({
      name: 'kubeproxy_sync_partial_proxy_rules_duration_seconds',
      help: 'SyncProxyRules latency in seconds for partial resyncs',
      buckets: SYNC_BUCKETS,
      registers,
    });
    this.programming = new Histogram({
      name: 'kubeproxy_network_programming_duration_seconds',
      help: "In Cluster Network Programming Latency in seconds (from the EndpointSlice's last-change-trigger-time to the change being applied)",
      buckets: PROGRAMMING_BUCKETS,
      registers,
    });
    new Counter({
      name: 'kubeproxy_sync_proxy_rules_iptables_restore_failures_total',
      help: 'Cumulative proxy iptables restore failures',
      // ip_family as kube-proxy since 1.33; one series per family kup writes rules for.
      labelNames: ['ip_family'],
      registers,
      collect() {
        this.reset();
        const ipt = src.iptables();
        if (ipt === null) return;
        for (const family of ipt.families) this.inc({ ip_family: FAMILY_LABEL[family] }, ipt.restoreFailures[family]);
      },
    });
    const version = kupVersion();
    const [major = '', minor = ''] = /^(\d+)\.(\d+)\./.exec(version)?.slice(1) ?? [];
    // component-base's build info: what applies to a Node program is filled, the Go-specific fields stay empty.
    new Gauge({
      name: 'kubernetes_build_info',
      help: 'A metric with a constant 1 value labeled by major, minor, git version, git commit, git tree state, build date, Go version, and compiler from which Kubernetes was built, and platform on which it is running.',
      labelNames: ['major', 'minor', 'git_version', 'git_commit', 'git_tree_state', 'build_date', 'go_version', 'compiler', 'platform'],
      registers,
    }).set(
      {
        major,
        minor,
        git_version: `v${version}`,
        git_commit: '',
        git_tree_state: '',
        build_date: '',
        go_version: '',
        compiler: '',
        platform: `${process.platform}/${GO_ARCH[process.arch] ?? process.arch}`,
      },
      1,
    );
    this.healthz = new Counter({
      name: 'kubeproxy_proxy_healthz_total',
      help: 'Cumulative proxy healthz HTTP status',
      labelNames: ['code'],
      registers,
    });
    this.livez = new Counter({
      name: 'kubeproxy_proxy_livez_total',
      help: 'Cumulative proxy livez HTTP status',
      labelNames: ['code'],
      registers,
    });

    const sync = (): Readonly<SyncState> => src.syncer.state;
    new Gauge({
      name: 'kup_relay_info',
      help: 'Which relay moves the bytes of established TCP connections and UDP datagrams (native: the addon epoll threads; js: splice.ts and dgram sockets); always 1',
      labelNames: ['relay'],
      registers,
      collect() {
        this.reset();
        if (src.proxier.relay !== undefined) this.set({ relay: src.proxier.relay }, 1);
      },
    });
    new Gauge({
      name: 'kubeproxy_sync_proxy_rules_last_timestamp_seconds',
      help: 'The last time proxy rules were successfully synced',
      registers,
      collect() {
        this.set(sync().lastSyncTime / 1000);
      },
    });
    new Gauge({
      name: 'kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds',
      help: 'The last time a sync of proxy rules was queued',
      registers,
      collect() {
        this.set(sync().lastQueuedTime / 1000);
      },
    });
    const counters = (): ChangeTracker['counters'] => src.tracker.counters;
    new Gauge({
      name: 'kubeproxy_sync_proxy_rules_endpoint_changes_pending',
      help: 'Pending proxy rules Endpoint changes',
      registers,
      collect() {
        this.set(counters().endpointChangesPending);
      },
    });
    new Counter({
      name: 'kubeproxy_sync_proxy_rules_endpoint_changes_total',
      help: 'Cumulative proxy rules Endpoint changes',
      registers,
      collect() {
        this.reset();
        this.inc(counters().endpointChangesTotal);
      },
    });
    new Gauge({
      name: 'kubeproxy_sync_proxy_rules_service_changes_pending',
      help: 'Pending proxy rules Service changes',
      registers,
      collect() {
        this.set(counters().serviceChangesPending);
      },
    });
    new Counter({
      name: 'kubeproxy_sync_proxy_rules_service_changes_total',
      help: 'Cumulative proxy rules Service changes',
      registers,
      collect() {
        this.reset();
        this.inc(counters().serviceChangesTotal);
      },
    });
    // A gauge despite its name, as in kube-proxy.
    new Gauge({
      name: 'kubeproxy_sync_proxy_rules_no_local_endpoints_total',
      help: 'Number of service ports with a Local traffic policy and no local endpoints, while endpoints exist elsewhere',
      labelNames: ['traffic_policy'],
      registers,
      collect() {
        const { internal, external } = noLocalEndpoints(src.tracker.current());
        this.set({ traffic_policy: 'internal' }, internal);
        this.set({ traffic_policy: 'external' }, external);
      },
    });
    new Gauge({
      name: 'kubeproxy_sync_proxy_rules_iptables_total',
      help: 'Total number of iptables rules owned by kube-userspace-proxy',
      // ip_family as kube-proxy since 1.33, where each family's proxier sets its own series.
      labelNames: ['table', 'ip_family'],
      registers,
      collect() {
        this.reset();
        const installed = src.iptables()?.installed ?? null;
        if (installed === null) return;
        for (const [table, n] of countRules(installed.ipv4)) this.set({ table, ip_family: 'IPv4' }, n);
        if (installed.ipv6 !== '') for (const [table, n] of countRules(installed.ipv6)) this.set({ table, ip_family: 'IPv6' }, n);
      },
    });

    const perListener = (
      name: string,
      help: string,
      read: (s: ListenerStats) => number,
      kind: 'counter' | 'gauge',
      only?: 'TCP' | 'UDP',
    ): void => {
      const fill = (set: (labels: PortLabels, v: number) => void): void => {
        for (const [sp, scope, l] of listeners(src))
          if (only === undefined || sp.protocol === only) set(portLabels(sp, scope), read(l.stats));
      };
      scraped(kind, name, help, PORT_LABELS, registers, fill);
    };
    perListener(
      'kup_connections_accepted_total',
      'TCP connections accepted / UDP sessions created per service port listener',
      (s) => s.accepted,
      'counter',
    );
    perListener('kup_connections_active', 'Open TCP connections / live UDP sessions per service port listener', (s) => s.active, 'gauge');
    perListener(
      'kup_dial_failures_total',
      'Dials (TCP) or backend sockets (UDP) to an endpoint that failed',
      (s) => s.dialFailures,
      'counter',
    );
    perListener(
      'kup_connections_no_endpoints_total',
      'Clients turned away because no endpoint was usable',
      (s) => s.noEndpoints,
      'counter',
    );
    perListener(
      'kup_connections_exhausted_total',
      'TCP clients closed because every dial attempt failed',
      (s) => s.exhausted,
      'counter',
      'TCP',
    );
    perListener(
      'kup_bytes_in_total',
      'Bytes from clients to endpoints, counted when a TCP connection closes',
      (s) => s.bytesIn,
      'counter',
      'TCP',
    );
    perListener(
      'kup_bytes_out_total',
      'Bytes from endpoints to clients, counted when a TCP connection closes',
      (s) => s.bytesOut,
      'counter',
      'TCP',
    );
    perListener('kup_udp_datagrams_in_total', 'UDP datagrams relayed from clients to endpoints', (s) => s.datagramsIn, 'counter', 'UDP');
    perListener('kup_udp_datagrams_out_total', 'UDP datagrams relayed from endpoints to clients', (s) => s.datagramsOut, 'counter', 'UDP');
    perListener(
      'kup_udp_datagrams_dropped_total',
      'UDP datagrams dropped (no endpoint, queue full, send error)',
      (s) => s.datagramsDropped,
      'counter',
      'UDP',
    );
    perListener(
      'kup_udp_receive_drops_total',
      "UDP datagrams the kernel dropped on the listener's socket before kup read them (receive buffer full; /proc/net/udp drops)",
      (s) => s.receiveDrops,
      'counter',
      'UDP',
    );
    perListener(
      'kup_udp_sessions_evicted_total',
      'UDP sessions evicted because the session cap was reached',
      (s) => s.sessionsEvicted,
      'counter',
      'UDP',
    );
    perListener(
      'kup_udp_sessions_endpoint_gone_total',
      'UDP sessions closed because their endpoint left the usable set (removed, or no longer serving)',
      (s) => s.sessionsEndpointGone,
      'counter',
      'UDP',
    );
    perListener('kup_accept_errors_total', 'accept() errors reported by the listening socket', (s) => s.acceptErrors, 'counter', 'TCP');
    perListener('kup_connections_shed_total', 'Clients shed because the process was out of file descriptors', (s) => s.shed, 'counter');

    const perEndpoint = (
      name: string,
      help: string,
      read: (active: number, picks: number, failures: number) => number,
      kind: 'counter' | 'gauge',
    ): void => {
      const fill = (set: (labels: Record<(typeof ENDPOINT_LABELS)[number], string>, v: number) => void): void => {
        for (const p of src.proxier.entries()) {
          // One series per endpoint of the port, both listeners summed.
          const sums = new Map<string, [number, number, number]>();
          for (const l of [p.internal, p.external, p.cluster]) {
            if (l === null) continue;
            for (const e of l.balancer.endpoints) {
              const s = sums.get(e.id) ?? [0, 0, 0];
              sums.set(e.id, [s[0] + e.active, s[1] + e.picks, s[2] + e.failures]);
            }
          }
          const base = portLabels(p.sp, 'internal');
          for (const [id, [a, pk, f]] of sums) {
            set(
              { namespace: base.namespace, service: base.service, port: base.port, protocol: base.protocol, endpoint: id },
              read(a, pk, f),
            );
          }
        }
      };
      scraped(kind, name, help, ENDPOINT_LABELS, registers, fill);
    };
    perEndpoint('kup_endpoint_picks_total', 'Times the balancer chose this endpoint', (_a, p) => p, 'counter');
    perEndpoint('kup_endpoint_active_connections', 'Connections (TCP) or sessions (UDP) open to this endpoint', (a) => a, 'gauge');
    perEndpoint('kup_endpoint_dial_failures_total', 'Dials to this endpoint that failed', (_a, _p, f) => f, 'counter');

    new Gauge({
      name: 'kup_service_ports',
      help: 'Service ports in the table, and those whose listener could not be opened',
      labelNames: ['state'],
      registers,
      collect() {
        this.set({ state: 'total' }, src.tracker.current().size);
        this.set({ state: 'listener_failed' }, src.proxier.failures().size);
      },
    });
    // The source's health is not /healthz's business (kube-proxy's rule); it is alerted on from here.
    new Gauge({
      name: 'kup_source_healthy',
      help: 'Whether the source (API server watches, or the file) is synced and without error (1) or not (0)',
      labelNames: ['source'],
      registers,
      collect() {
        const st = src.source.state();
        this.reset();
        this.set({ source: st.kind }, st.synced && st.lastError === null ? 1 : 0);
      },
    });
    new Gauge({
      name: 'kup_node_eligible',
      help: "Whether this node's Node object lets it take load-balancer traffic (not gone, not being deleted, not tainted ToBeDeletedByClusterAutoscaler)",
      registers,
      collect() {
        this.set(src.nodeEligible() ? 1 : 0);
      },
    });
  }

  /** Called once per sync (not on the data path). */
  observeSync(r: SyncRecord, now = Date.now()): void {
    if (!r.ok) return;
    const s = r.durationMs / 1000;
    this.syncDuration.observe(s);
    (r.full ? this.fullSyncDuration : this.partialSyncDuration).observe(s);
    // One observation per slice change applied, from its trigger time, as kube-proxy; a failed sync's are dropped, as there.
    for (const t of r.triggerTimes) this.programming.observe(Math.max(0, now - t) / 1000);
  }

  countHealthz(code: number): void {
    this.healthz.inc({ code: String(code) });
  }

  countLivez(code: number): void {
    this.livez.inc({ code: String(code) });
  }

  async text(): Promise<string> {
    // The kernel's UDP drop counts are read now, at scrape time, not kept up per datagram.
    await this.src.proxier.refreshUdpDrops();
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

const FAMILY_LABEL = { ipv4: 'IPv4', ipv6: 'IPv6' } as const;

/** Node's process.arch in Go's GOARCH spelling, as component-base's platform label has it. */
const GO_ARCH: Partial<Record<string, string>> = {
  x64: 'amd64',
  ia32: '386',
  arm64: 'arm64',
  arm: 'arm',
  ppc64: 'ppc64le',
  s390x: 's390x',
};

/**
 * Service ports with a Local policy and no local endpoint, per policy, as
 * kube-proxy counts them: only when the port has endpoints elsewhere (with
 * none at all the port is simply without endpoints, not a Local problem).
 */
export function noLocalEndpoints(table: ServiceTable): { internal: number; external: number } {
  let internal = 0;
  let external = 0;
  for (const sp of table.values()) {
    if (sp.localEndpoints.length > 0 || sp.clusterEndpoints.length === 0) continue;
    if (sp.internalTrafficPolicy === 'Local') internal++;
    if (sp.externalTrafficPolicy === 'Local' && isExternallyReachable(sp)) external++;
  }
  return { internal, external };
}

/** Rules per table in an iptables-restore script ("*nat" ... "-A ..." ... "COMMIT"). */
export function countRules(script: string | null): Map<string, number> {
  const out = new Map<string, number>();
  if (script === null) return out;
  let table = 'filter';
  for (const line of script.split('\n')) {
    if (line.startsWith('*')) {
      table = line.slice(1).trim();
      out.set(table, out.get(table) ?? 0);
    } else if (line.startsWith('-A ') || line.startsWith('-I ')) out.set(table, (out.get(table) ?? 0) + 1);
  }
  return out;
}

/**
 * A metric whose values are read from live counters at scrape time: reset,
 * then refilled, so series of ports and endpoints that went away vanish.
 */
function scraped<L extends string>(
  kind: 'counter' | 'gauge',
  name: string,
  help: string,
  labelNames: readonly L[],
  registers: Registry[],
  fill: (set: (labels: Record<L, string>, v: number) => void) => void,
): void {
  if (kind === 'counter') {
    new Counter({
      name,
      help,
      labelNames,
      registers,
      collect() {
        this.reset();
        fill((labels, v) => this.inc(labels, v));
      },
    });
  } else {
    new Gauge({
      name,
      help,
      labelNames,
      registers,
      collect() {
        this.reset();
        fill((labels, v) => this.set(labels, v));
      },
    });
  }
}
