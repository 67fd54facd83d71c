import type { RelayChoice } from '../dataplane/native-relay.js';
/**
 * What a running kup is told, validated: the CLI's flags parse into it, and
 * the runtime, the admin face and the sources read it. It lives below the CLI
 * so that nothing in lib/ imports lib/cli/.
 */
import type { HostPort } from '../core/address.js';
import type { LbStrategyName } from '../core/balancer/strategy.js';
import type { ServiceCIDR } from '../core/cluster-ip-range.js';
import type { PortRange } from '../core/port-range.js';
import type { LogLevel } from '../log.js';

/** kube-proxy's --detect-local-mode values; "" leaves upstream's default (ClusterCIDR). */
export const DETECT_LOCAL_MODES = ['ClusterCIDR', 'NodeCIDR', 'BridgeInterface', 'InterfaceNamePrefix'] as const;
export type DetectLocalMode = (typeof DETECT_LOCAL_MODES)[number] | '';

export type SourceSpec = { readonly kind: 'kubernetes' } | { readonly kind: 'file'; readonly path: string };

/** Everything `kup run` is told, validated. Flag names follow kube-proxy's where they mean the same. */
export interface RunConfig {
  readonly source: SourceSpec;
  readonly kubeconfig: string | null;
  /**
   * The API client's rate (--kube-api-qps, --kube-api-burst): accepted for
   * kube-proxy's configuration; client-node's informers have no client-side
   * rate limiter to apply them to (they list once and then watch).
   */
  readonly kubeApiQps: number;
  readonly kubeApiBurst: number;
  /** This node's name (--hostname-override, else the host name), lowercased as kube-proxy does. */
  readonly nodeName: string;
  readonly bindAddress: string;
  readonly portRange: PortRange | null;
  readonly udpTimeoutMs: number;
  readonly udpMaxSessions: number;
  readonly tcpIdleTimeoutMs: number;
  /** --relay: who moves the bytes of established TCP connections (auto: the native relay when its addon loads). */
  readonly relay: RelayChoice;
  /** SO_RCVBUF/SO_SNDBUF asked for each UDP socket, in bytes (0: the kernel's default). */
  readonly udpBufferSize: number;
  readonly lbStrategy: LbStrategyName;
  readonly iptables: boolean;
  /**
   * --expose-on-loopback: each Service listens on its own loopback address
   * (lib/core/loopback-address.ts) at its real ports, instead of at proxy
   * ports on --bind-address; runs without iptables.
   */
  readonly exposeOnLoopback: boolean;
  readonly syncPeriodMs: number;
  readonly minSyncPeriodMs: number;
  /** null: disabled (empty flag). */
  readonly healthzBindAddress: HostPort | null;
  readonly metricsBindAddress: HostPort | null;
  readonly shutdownGracePeriodMs: number;
  /**
   * Where kup keeps its state: the lock (one kup with iptables per directory;
   * hand-over to a successor) and the proxy port file. Used with iptables, or
   * when set to anything but DEFAULT_STATE_DIR.
   */
  readonly stateDir: string;
  /**
   * --no-handover (false): a kup started while another holds the state
   * directory exits with KUP_ALREADY_RUNNING instead of taking over. Default true.
   */
  readonly handover?: boolean;
  readonly logLevel: LogLevel;
  /** --service-cluster-ip-range: addresses for file-source Services that name no clusterIP. */
  readonly serviceClusterIPRange: ServiceCIDR;
  /** --cluster-cidr: the pods' CIDRs (one per family), for --detect-local-mode ClusterCIDR (lib/core/local-detector.ts). */
  readonly clusterCIDRs: readonly string[];
  /**
   * --nodeport-addresses: CIDRs and keywords (primary, localhost, all). Empty:
   * NodePorts on every local address; else only on the node's addresses they
   * select (lib/core/nodeport-addresses.ts).
   */
  readonly nodePortAddresses: readonly string[];
  /**
   * --iptables-localhost-nodeports (default true, as kube-proxy's iptables
   * mode): the node's own processes reach NodePorts at 127.0.0.0/8 (IPv4
   * only), when nodePortAddresses is empty or selects a loopback address.
   */
  readonly localhostNodePorts: boolean;
  /** --detect-local-mode and its options: how pod traffic is told apart (lib/runtime/local-detection.ts). */
  readonly detectLocal: {
    readonly mode: DetectLocalMode;
    readonly bridgeInterface: string;
    readonly interfaceNamePrefix: string;
  };
}

/** --state-dir's default: the node's kup with rules keeps its state here. */
export const DEFAULT_STATE_DIR = '/var/lib/kup';
