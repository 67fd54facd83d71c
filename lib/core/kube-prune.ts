import { asArray, asObject, type Obj } from './object-fields.js';
import { PROXY_PROTOCOL_ANNOTATION } from './proxy-protocol.js';

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
        metadata: pruneServiceMeta(obj['metadata']),
        // translate reads status.loadBalancer.ingress[].ip / ipMode only.
        status: pruneLoadBalancer(obj['status']),
      });
    case 'EndpointSlice':
      return pick(obj, ['apiVersion', 'kind', 'addressType', 'ports'], {
        metadata: pruneMeta(obj['metadata']),
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
    case 'Node':
      return pick(obj, ['apiVersion', 'kind'], { metadata: pruneMeta(obj['metadata']) });
    default:
      return obj;
  }
}

function pruneMeta(meta: unknown): unknown {
  const m = asObject(meta);
  // Annotations: kup reads none but a Service's kup.dev/proxy-protocol (pruneServiceMeta).
  return m === undefined ? meta : pick(m, ['name', 'namespace', 'labels', 'resourceVersion'], {});
}

/** A Service's metadata keeps the one annotation kup reads (kup.dev/proxy-protocol). */
function pruneServiceMeta(meta: unknown): unknown {
  const m = asObject(meta);
  if (m === undefined) return meta;
  const value = asObject(m['annotations'])?.[PROXY_PROTOCOL_ANNOTATION];
  return pick(m, ['name', 'namespace', 'labels', 'resourceVersion'], {
    annotations: value === undefined ? undefined : { [PROXY_PROTOCOL_ANNOTATION]: value },
  });
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
