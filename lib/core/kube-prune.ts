import { asArray, asObject, type Obj } from './object-fields.js';
import { PROXY_PROTOCOL_ANNOTATION } from './proxy-protocol.js';

/** Set by the endpoints controller on each EndpointSlice it writes: when the Pod or Service change behind it happened. */
export const TRIGGER_TIME_ANNOTATION = 'endpoints.kubernetes.io/last-change-trigger-time';

/**
 * Only the fields kup reads (see translate.ts and change-tracker.ts), copied
 * out of a parsed Service, EndpointSlice or Node. `kubectl get -o yaml`
 * prints managedFields, last-applied annotations, status, targetRefs...:
 * several times what kup needs. Pruning at parse time keeps memory and the
 * copy to the main thread small, and a field kup ignores can no longer make
 * an object look changed.
 */
export function pruneKubeObject(obj: Obj): Obj {
  switch (obj['kind']) {
    case 'Service':
      return pick(obj, ['apiVersion', 'kind', 'spec'], {
        metadata: pruneMeta(obj['metadata'], PROXY_PROTOCOL_ANNOTATION),
        // translate reads status.loadBalancer.ingress[].ip / ipMode only.
        status: pruneLoadBalancer(obj['status']),
      });
    case 'EndpointSlice':
      return pick(obj, ['apiVersion', 'kind', 'addressType', 'ports'], {
        metadata: pruneMeta(obj['metadata'], TRIGGER_TIME_ANNOTATION),
        endpoints: Array.isArray(obj['endpoints'])
          ? (obj['endpoints'] as unknown[]).map((e) => {
              const ep = asObject(e);
              if (ep === undefined) return e;
              // The Pod's name names the demo's backends; its uid and resourceVersion are not needed.
              const ref = asObject(ep['targetRef']);
              return pick(ep, ['addresses', 'conditions', 'nodeName', 'zone', 'hints'], {
                targetRef: ref === undefined ? undefined : pick(ref, ['kind', 'name', 'namespace'], {}),
              });
            })
          : obj['endpoints'],
      });
    case 'Node': {
      // Node eligibility (the health check) reads deletionTimestamp and the taints too.
      const meta = asObject(obj['metadata']);
      return pick(obj, ['apiVersion', 'kind'], {
        metadata:
          meta?.['deletionTimestamp'] === undefined
            ? pruneMeta(meta ?? obj['metadata'])
            : { ...asObject(pruneMeta(meta)), deletionTimestamp: meta['deletionTimestamp'] },
        // Taints for the health check; --detect-local-mode NodeCIDR reads the pod CIDRs.
        spec: pruneNodeSpec(obj['spec']),
      });
    }
    default:
      return obj;
  }
}

/**
 * Annotations: kup reads one per kind at most, kept by name: a Service's
 * kup.dev/proxy-protocol, a slice's trigger time (network programming latency).
 */
function pruneMeta(meta: unknown, keepAnnotation?: string): unknown {
  const m = asObject(meta);
  if (m === undefined) return meta;
  const value = keepAnnotation === undefined ? undefined : asObject(m['annotations'])?.[keepAnnotation];
  return pick(m, ['name', 'namespace', 'labels', 'resourceVersion'], {
    annotations: value === undefined || keepAnnotation === undefined ? undefined : { [keepAnnotation]: value },
  });
}

function pruneNodeSpec(spec: unknown): unknown {
  const o = asObject(spec);
  if (o === undefined) return undefined;
  const kept = pick(o, ['podCIDR', 'podCIDRs', 'taints'], {});
  return Object.keys(kept).length === 0 ? undefined : kept;
}

function pruneLoadBalancer(status: unknown): unknown {
  const ingress = asObject(asObject(status)?.['loadBalancer'])?.['ingress'];
  if (ingress === undefined) return undefined;
  return {
    loadBalancer: {
      ingress: Array.isArray(ingress)
        ? asArray(ingress).map((i) => {
            const o = asObject(i);
            return o === undefined ? i : pick(o, ['ip', 'ipMode'], {});
          })
        : ingress,
    },
  };
}

function pick(from: Obj, keys: readonly string[], extra: Obj): Obj {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (from[k] !== undefined) out[k] = from[k];
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) out[k] = v;
  return out;
}
