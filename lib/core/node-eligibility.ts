import type { V1Node } from '@kubernetes/client-node';
import { asArray, asString, field } from './object-fields.js';

/** The taint the Cluster Autoscaler puts on a node it is about to remove (KEP-3836). */
export const TO_BE_DELETED_TAINT = 'ToBeDeletedByClusterAutoscaler';

export interface NodeEligibility {
  /** Whether load balancers should send this node traffic. */
  readonly eligible: boolean;
  /** Why not, for people; null while eligible. */
  readonly reason: string | null;
}

export const ELIGIBLE: NodeEligibility = { eligible: true, reason: null };

/**
 * kube-proxy's rule (healthcheck.ProxyHealthServer.SyncNode): a node is not
 * eligible once its Node object is gone, carries a deletionTimestamp, or is
 * tainted ToBeDeletedByClusterAutoscaler, so load balancers drain it before it
 * goes. `node` is the plain JSON object, null when the source says it is gone.
 */
export function nodeEligibility(nodeName: string, node: V1Node | null): NodeEligibility {
  if (node === null) return { eligible: false, reason: `the Node ${nodeName} does not exist` };
  // A string in the JSON shape; a Date if a deserialised model slips through. Either way: set.
  const deletion = field(node, 'metadata', 'deletionTimestamp');
  if (deletion !== undefined && deletion !== null && deletion !== '') {
    return { eligible: false, reason: `the Node ${nodeName} is being deleted` };
  }
  for (const taint of asArray(field(node, 'spec', 'taints'))) {
    if (asString(field(taint, 'key')) === TO_BE_DELETED_TAINT) {
      return { eligible: false, reason: `the Node ${nodeName} is tainted ${TO_BE_DELETED_TAINT}` };
    }
  }
  return ELIGIBLE;
}
