import type { V1Node } from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { localTrafficDetector, type LocalTrafficDetector } from '../core/local-detector.js';
import type { RunConfig } from './config.js';

/**
 * The local-traffic detector of a running kup (--detect-local-mode): fixed by
 * the flags, except NodeCIDR, which follows this node's Node object (its
 * spec.podCIDRs). Says in one line what it detects, or why it detects
 * nothing, whenever that changes.
 */
export class LocalDetection {
  private podCIDRs: readonly string[] | null = null;
  private detector: LocalTrafficDetector | null = null;
  private said: string | null = null;

  constructor(
    private readonly config: Pick<RunConfig, 'clusterCIDRs' | 'detectLocal'>,
    private readonly log: Logger,
  ) {
    this.detector = this.compute().detector;
  }

  current(): LocalTrafficDetector | null {
    return this.detector;
  }

  /** True when the Node changed what is detected (the rules must be rewritten). */
  observeNode(node: V1Node | null): boolean {
    if (this.config.detectLocal.mode !== 'NodeCIDR') return false;
    const spec = node?.spec;
    this.podCIDRs = node === null ? null : (spec?.podCIDRs ?? (spec?.podCIDR === undefined ? [] : [spec.podCIDR]));
    const before = JSON.stringify(this.detector);
    this.detector = this.compute().detector;
    const changed = JSON.stringify(this.detector) !== before;
    if (changed) this.report();
    return changed;
  }

  /** Logs the detector in force, once per change; called once the source delivered its initial state. */
  report(): void {
    const { detector, reason } = this.compute();
    const line =
      detector !== null
        ? `local-traffic detector: ${detector.kind === 'cidr' ? `sources ${detector.cidrs.join(', ')}` : `input interface ${detector.name}`}; their traffic to eTP-Local external addresses goes to all endpoints`
        : reason !== null
          ? `${reason}; pod traffic is not told apart (no short-circuit to all endpoints)`
          : null;
    if (line === null || line === this.said) return;
    this.said = line;
    if (detector === null) this.log.warn({ detectLocalMode: this.config.detectLocal.mode }, line);
    else this.log.info({ detectLocalMode: this.config.detectLocal.mode || 'ClusterCIDR' }, line);
  }

  private compute(): ReturnType<typeof localTrafficDetector> {
    return localTrafficDetector({
      mode: this.config.detectLocal.mode,
      clusterCIDRs: this.config.clusterCIDRs,
      nodePodCIDRs: this.podCIDRs,
      bridgeInterface: this.config.detectLocal.bridgeInterface,
      interfaceNamePrefix: this.config.detectLocal.interfaceNamePrefix,
    });
  }
}
