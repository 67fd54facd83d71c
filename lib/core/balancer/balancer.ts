import { endpointId, type Endpoint } from '../types.js';
import { EndpointState } from './endpoint-state.js';
import { LeastConnections } from './least-connections.js';
import { RoundRobin } from './round-robin.js';
import type { SessionAffinity } from './session-affinity.js';
import type { LbStrategyName, Strategy } from './strategy.js';

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

  constructor(strategy: Strategy, affinity: SessionAffinity | null = null) {
    this.strategy = strategy;
    this.affinity = affinity;
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

  setAffinity(affinity: SessionAffinity | null): void {
    this.affinity = affinity;
  }

  /** Replaces the endpoint set, keeping the state (counters) of endpoints that stay. */
  update(endpoints: readonly Endpoint[]): void {
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
    const ep = this.strategy.pick(this.states, exclude);
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

  /** After a failed dial the client's affinity is reset, as in the legacy proxier. */
  forgetClient(clientIP: string): void {
    this.affinity?.forget(clientIP);
  }
}
