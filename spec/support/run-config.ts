import { testRelayChoice } from './relay.js';
import type { RunConfig } from '../../lib/runtime/config.js';
import { DEFAULT_SERVICE_CIDR, parseServiceCIDR } from '../../lib/core/cluster-ip-range.js';

/** A `kup run` configuration for in-process tests: a file source, loopback, no iptables, admin servers off. */
export function testRunConfig(path: string, overrides: Partial<RunConfig> = {}): RunConfig {
  return {
    source: { kind: 'file', path },
    kubeconfig: null,
    nodeName: 'node-a',
    bindAddress: '127.0.0.1',
    portRange: null,
    udpTimeoutMs: 30_000,
    udpMaxSessions: 100,
    tcpIdleTimeoutMs: 0,
    relay: testRelayChoice(),
    udpBufferSize: 4 * 1024 * 1024,
    exposeOnLoopback: false,
    lbStrategy: 'round-robin',
    iptables: false,
    syncPeriodMs: 30_000,
    minSyncPeriodMs: 0,
    healthzBindAddress: null,
    metricsBindAddress: null,
    shutdownGracePeriodMs: 0,
    stateDir: '/nonexistent/kup-state',
    logLevel: 'silent',
    serviceClusterIPRange: parseServiceCIDR('--service-cluster-ip-range', DEFAULT_SERVICE_CIDR),
    kubeApiQps: 5,
    kubeApiBurst: 10,
    clusterCIDRs: [],
    nodePortAddresses: [],
    localhostNodePorts: true,
    detectLocal: { mode: '', bridgeInterface: '', interfaceNamePrefix: '' },
    ...overrides,
  };
}
