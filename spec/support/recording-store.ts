import type { V1EndpointSlice, V1Node, V1Service } from '@kubernetes/client-node';
import type { ObjectSnapshot, ObjectStore } from '../../lib/core/object-store.js';

/** An ObjectStore that keeps what it was given and the order it came in, for asserting on a source. */
export class RecordingStore implements ObjectStore {
  readonly services = new Map<string, V1Service>();
  readonly slices = new Map<string, V1EndpointSlice>();
  node: V1Node | null | undefined = undefined;
  readonly log: string[] = [];

  private static key(obj: { metadata?: { namespace?: string; name?: string } }): string {
    return `${obj.metadata?.namespace ?? ''}/${obj.metadata?.name ?? ''}`;
  }

  applyService(svc: V1Service): void {
    const key = RecordingStore.key(svc);
    this.log.push(`applyService ${key}`);
    this.services.set(key, svc);
  }

  deleteService(namespace: string, name: string): void {
    this.log.push(`deleteService ${namespace}/${name}`);
    this.services.delete(`${namespace}/${name}`);
  }

  applySlice(slice: V1EndpointSlice): void {
    const key = RecordingStore.key(slice);
    this.log.push(`applySlice ${key}`);
    this.slices.set(key, slice);
  }

  deleteSlice(namespace: string, name: string): void {
    this.log.push(`deleteSlice ${namespace}/${name}`);
    this.slices.delete(`${namespace}/${name}`);
  }

  applyNode(node: V1Node | null): void {
    this.log.push(`applyNode ${node?.metadata?.name ?? 'null'}`);
    this.node = node;
  }

  replaceAll(snapshot: ObjectSnapshot): void {
    this.log.push('replaceAll');
    this.services.clear();
    this.slices.clear();
    for (const s of snapshot.services) this.services.set(RecordingStore.key(s), s);
    for (const s of snapshot.slices) this.slices.set(RecordingStore.key(s), s);
    if (snapshot.node !== undefined) this.node = snapshot.node;
  }

  deletions(): string[] {
    return this.log.filter((l) => l.startsWith('delete'));
  }
}
