import type { EndpointState } from './endpoint-state.js';

interface Sticky {
  endpointId: string;
  lastUsed: number;
}

/** Read-only in practice: deletes on it find nothing, and record() swaps in a Map of its own first. */
const NO_CLIENTS = new Map<string, Sticky>();

/**
 * ClientIP session affinity of one service port: a client keeps its endpoint
 * while it comes back within the timeout. Shared by the port's listeners, as
 * kube-proxy keys affinity by service port whichever address was used.
 */
export class SessionAffinity {
  /** Shared and empty until the first record (most of 10,000 ports never use affinity). */
  private byClient: Map<string, Sticky> = NO_CLIENTS;
  private timeoutMs: number;
  private readonly now: () => number;

  constructor(timeoutSeconds: number, now: () => number = Date.now) {
    this.timeoutMs = timeoutSeconds * 1000;
    this.now = now;
  }

  get timeoutSeconds(): number {
    return this.timeoutMs / 1000;
  }

  /** A new timeout applies at once, to existing entries too (the legacy proxier ignored it). */
  setTimeout(timeoutSeconds: number): void {
    this.timeoutMs = timeoutSeconds * 1000;
  }

  /** The endpoint this client is stuck to, if still fresh and still in `endpoints`; refreshes it. */
  lookup(clientIP: string, endpoints: readonly EndpointState[]): EndpointState | undefined {
    const s = this.byClient.get(clientIP);
    if (s === undefined) return undefined;
    const t = this.now();
    if (t - s.lastUsed >= this.timeoutMs) {
      this.byClient.delete(clientIP);
      return undefined;
    }
    for (const ep of endpoints) {
      if (ep.id === s.endpointId) {
        s.lastUsed = t;
        return ep;
      }
    }
    return undefined;
  }

  /** Like lookup() but without refreshing the entry. */
  peek(clientIP: string, endpoints: readonly EndpointState[]): EndpointState | undefined {
    const s = this.byClient.get(clientIP);
    if (s === undefined || this.now() - s.lastUsed >= this.timeoutMs) return undefined;
    return endpoints.find((ep) => ep.id === s.endpointId);
  }

  record(clientIP: string, ep: EndpointState): void {
    const s = this.byClient.get(clientIP);
    if (this.byClient === NO_CLIENTS) this.byClient = new Map();
    if (s === undefined) this.byClient.set(clientIP, { endpointId: ep.id, lastUsed: this.now() });
    else {
      s.endpointId = ep.id;
      s.lastUsed = this.now();
    }
  }

  forget(clientIP: string): void {
    this.byClient.delete(clientIP);
  }

  /** Drops expired entries and those naming endpoints no longer present. */
  purge(liveIds?: ReadonlySet<string>): void {
    const t = this.now();
    for (const [ip, s] of this.byClient) {
      if (t - s.lastUsed >= this.timeoutMs || (liveIds !== undefined && !liveIds.has(s.endpointId))) {
        this.byClient.delete(ip);
      }
    }
  }

  get size(): number {
    return this.byClient.size;
  }
}
