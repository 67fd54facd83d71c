import type { V1Node } from '@kubernetes/client-node';
import type { ObjectStore } from '../core/object-store.js';

/**
 * The store the source feeds, with this node's Node also handed to `onNode`
 * (node eligibility for /healthz), however it arrives: one watch event or a
 * whole snapshot (relist, file reload).
 */
export function withNodeObserver(store: ObjectStore, onNode: (node: V1Node | null) => void): ObjectStore {
  return {
    applyService: (svc) => store.applyService(svc),
    deleteService: (namespace, name) => store.deleteService(namespace, name),
    applySlice: (slice) => store.applySlice(slice),
    deleteSlice: (namespace, name) => store.deleteSlice(namespace, name),
    applyNode: (node) => {
      store.applyNode(node);
      onNode(node);
    },
    replaceAll: (snapshot) => {
      store.replaceAll(snapshot);
      if (snapshot.node !== undefined) onNode(snapshot.node);
    },
  };
}
