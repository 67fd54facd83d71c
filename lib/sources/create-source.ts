import type { Logger } from 'pino';
import { FileSource } from './file-source.js';
import type { Source } from './source.js';

export interface SourceOptions {
  readonly source: { readonly kind: 'kubernetes' } | { readonly kind: 'file'; readonly path: string };
  readonly kubeconfig: string | null;
  readonly nodeName: string;
  readonly logger: Logger;
}

export async function createSource(opts: SourceOptions): Promise<Source> {
  if (opts.source.kind === 'file') {
    return new FileSource({ path: opts.source.path, nodeName: opts.nodeName, logger: opts.logger });
  }
  // Loaded only when needed: client-node alone costs a proxy ~90 MB of RSS.
  const { KubeSource } = await import('./kube-source.js');
  // Throws KupError KUP_NO_SOURCE / KUP_BAD_FILE when no kubeconfig can be found or read.
  return new KubeSource({ kubeconfig: opts.kubeconfig ?? undefined, nodeName: opts.nodeName, logger: opts.logger });
}
