import type { Logger } from 'pino';
import type { ServiceCIDR } from '../core/cluster-ip-range.js';
import { FileSource } from './file-source.js';
import type { Source } from './source.js';

export interface SourceOptions {
  readonly source: { readonly kind: 'kubernetes' } | { readonly kind: 'file'; readonly path: string };
  readonly kubeconfig: string | null;
  readonly nodeName: string;
  readonly logger: Logger;
  /** File source: where Services without a clusterIP get one (default 10.96.0.0/12). */
  readonly serviceCIDR?: ServiceCIDR;
}

export async function createSource(opts: SourceOptions): Promise<Source> {
  if (opts.source.kind === 'file') {
    return new FileSource({ path: opts.source.path, nodeName: opts.nodeName, logger: opts.logger, serviceCIDR: opts.serviceCIDR });
  }
  // Loaded only when needed: client-node alone costs a proxy ~90 MB of RSS.
  const { KubeSource } = await import('./kube-source.js');
  // Throws KupError KUP_NO_SOURCE / KUP_BAD_FILE when no kubeconfig can be found or read.
  return new KubeSource({ kubeconfig: opts.kubeconfig ?? undefined, nodeName: opts.nodeName, logger: opts.logger });
}
