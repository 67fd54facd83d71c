import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';

/** What the file source asks its parse worker. */
export interface ParseRequest {
  readonly path: string;
  /** sha256 of the bytes last applied: the same bytes are not parsed again. */
  readonly previousHash: string | null;
}

/** What the worker answers: chunks of objects, then done; or unchanged; or one error line. */
export type ParseMessage =
  | { readonly type: 'services'; readonly items: V1Service[] }
  | { readonly type: 'slices'; readonly items: V1EndpointSlice[] }
  | { readonly type: 'done'; readonly hash: string; readonly nodes: V1Node[]; readonly warnings: string[] }
  | { readonly type: 'unchanged' }
  | { readonly type: 'error'; readonly message: string };
