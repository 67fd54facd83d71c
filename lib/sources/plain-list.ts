import { HttpMethod, RequestContext, type KubeConfig, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import { fetch } from 'undici';

export interface PlainListRequest {
  /** e.g. /api/v1/services */
  readonly path: string;
  readonly labelSelector?: string;
  readonly fieldSelector?: string;
  /** The items' apiVersion and kind (the API server leaves them out of list items). */
  readonly apiVersion: string;
  readonly kind: string;
}

/**
 * A list as plain JSON, the shape watch events have. client-node's typed list
 * calls turn every object into its generated model (Dates, renamed fields) and
 * kup turned them back: at 10,000 Services and EndpointSlices that round trip
 * was over a second of start-up and most of its garbage. This asks the same
 * API server with the same credentials (client-node's own authentication, as
 * its Watch does) and keeps what JSON.parse returns.
 *
 * Errors: an HTTP status other than 200 throws an Error with `statusCode` and
 * the API server's Status message (describeApiError makes one line of it).
 */
export async function listPlain<T extends KubernetesObject>(kc: KubeConfig, req: PlainListRequest): Promise<KubernetesListObject<T>> {
  const cluster = kc.getCurrentCluster();
  if (cluster === null) throw new Error('no current cluster in the kubeconfig');
  const url = new URL(cluster.server.replace(/\/+$/, '') + req.path);
  if (req.labelSelector !== undefined) url.searchParams.set('labelSelector', req.labelSelector);
  if (req.fieldSelector !== undefined) url.searchParams.set('fieldSelector', req.fieldSelector);
  const ctx = new RequestContext(url.toString(), HttpMethod.GET);
  ctx.setHeaderParam('Accept', 'application/json');
  await kc.applySecurityAuthentication(ctx);
  const res = await fetch(url, { method: 'GET', headers: ctx.getHeaders(), dispatcher: ctx.getDispatcher() });
  const text = await res.text();
  if (res.status !== 200) {
    const err = new Error(statusMessage(text) ?? (res.statusText || 'request failed')) as Error & { statusCode: number };
    err.statusCode = res.status;
    throw err;
  }
  const list = JSON.parse(text) as KubernetesListObject<T>;
  for (const item of list.items) {
    item.apiVersion = req.apiVersion;
    item.kind = req.kind;
  }
  return {
    ...(list.apiVersion !== undefined ? { apiVersion: list.apiVersion } : {}),
    ...(list.kind !== undefined ? { kind: list.kind } : {}),
    metadata: { resourceVersion: list.metadata?.resourceVersion ?? '' },
    items: list.items,
  };
}

/** The `message` of a Kubernetes Status body; null when the body is not one. */
function statusMessage(body: string): string | null {
  try {
    const parsed = JSON.parse(body) as { message?: unknown };
    return typeof parsed.message === 'string' && parsed.message !== '' ? parsed.message : null;
  } catch {
    return null;
  }
}
