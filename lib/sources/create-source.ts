import type { Logger } from 'pino';
import { KupError } from '../core/errors.js';
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
  throw new KupError(
    'KUP_NO_SOURCE',
    'the live Kubernetes source is not available in this build; use --source file:PATH, or `kup demo`',
  );
}
