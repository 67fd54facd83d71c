import { endpointId, scopeEndpoints, type Endpoint, type ListenerScope, type ServicePort } from '../types.js';
import { EndpointState } from './endpoint-state.js';
import { LeastConnections } from './least-connections.js';
import { RoundRobin } from './round-robin.js';
import type { SessionAffinity } from './session-affinity.js';
import type { LbStrategyName, Strategy } from './strategy.js';

/** How long an endpoint whose dial failed is passed over while others are available. */
export const FAILURE_COOLDOWN_MS = 5000;

export function createStrategy(name: LbStrategyName): Strategy {
  return name === 'least-connections' ? new LeastConnections() : new RoundRobin();
}

/**
 * The endpoints of one listener and how the next one is chosen: a strategy,
 * optionally under ClientIP session affinity.
 */
export class Balancer {
  private states: EndpointState[] = [];
  private readonly strategy: Strategy;
  private affinity: SessionAffinity | null;

  private readonly now: () => number;

  constructor(strategy: Strategy, affinity: SessionAffinity | null = null, now: () => number = Date.now) {
    this.strategy = strategy;
    this.affinity = affinity;
    this.now = now;
  }

  get strategyName(): LbStrategyName {
    return this.strategy.name;
  }

  get endpoints(): readonly EndpointState[] {
    return this.states;
  }

  get size(): number {
    return this.states.length;
  }

  /** Whether picks depend on the client's IP (ClientIP affinity is on). */
  get usesClientIP(): boolean {
    return this.affinity !== null;
  }

  setAffinity(affinity: SessionAffinity | null): void {
    this.affinity = affinity;
  }

  /**
   * Follows a service port: the endpoints its listener of `scope` may use,
   * under the port's ClientIP affinity when it has one. Returns how many
   * endpoints left the set.
   */
  follow(sp: ServicePort, scope: ListenerScope, affinity: SessionAffinity): number {
    this.setAffinity(sp.affinityTimeoutSeconds > 0 ? affinity : null);
    return this.update(scopeEndpoints(sp, scope));
  }

  /**
   * Replaces the endpoint set, keeping the state (counters) of endpoints that
   * stay; those that leave are marked not `current`. Returns how many left.
   */
  update(endpoints: readonly Endpoint[]): number {
    const old = new Map<string, EndpointState>();
    for (const s of this.states) old.set(s.id, s);
    const next: EndpointState[] = [];
    for (const ep of endpoints) {
      const id = endpointId(ep);
      const prev = old.get(id);
      if (prev !== undefined) {
        prev.endpoint = ep;
        old.delete(id);
        next.push(prev);
      } else next.push(new EndpointState(ep));
    }
    for (const gone of old.values()) gone.current = false;
    this.states = next;
    this.strategy.reset(next);
    return old.size;
  }

  /**
   * The endpoint for a new connection from `clientIP`, or undefined when there
   * is none. `exclude` lists endpoints that already failed for this connection.
   */
  pick(clientIP: string, exclude: ReadonlySet<EndpointState> | null = null): EndpointState | undefined {
    if (this.states.length === 0) return undefined;
    const aff = this.affinity;
    if (aff !== null && exclude === null) {
      const sticky = aff.lookup(clientIP, this.states);
      if (sticky !== undefined) {
        sticky.picks++;
        return sticky;
      }
    }
    const ep = this.strategy.pick(this.states, exclude, this.now());
    if (ep !== undefined) {
      ep.picks++;
      if (aff !== null) aff.record(clientIP, ep);
    }
    return ep;
  }

  /** The endpoint the next connection from `clientIP` would get, changing nothing. */
  peek(clientIP: string): EndpointState | undefined {
    return this.affinity?.peek(clientIP, this.states) ?? this.strategy.peek(this.states);
  }

  /**
   * A dial to `ep` failed: pass it over for a while, and reset the client's
   * affinity as the legacy proxier did so the retry may go elsewhere.
   */
  reportFailure(ep: EndpointState, clientIP: string): void {
    ep.failures++;
    ep.unavailableUntil = this.now() + FAILURE_COOLDOWN_MS;
    this.affinity?.forget(clientIP);
  }

  /** A dial to `ep` succeeded: it is available again at once. */
  reportSuccess(ep: EndpointState): void {
    ep.unavailableUntil = 0;
  }
}
