import { ipFamily, type IPFamily } from '../address.js';
import { endpointId, scopeEndpoints, type Endpoint, type ListenerScope, type ServicePort } from '../types.js';
import { EndpointState } from './endpoint-state.js';
import { LeastConnections } from './least-connections.js';
import { RoundRobin } from './round-robin.js';
import type { SessionAffinity } from './session-affinity.js';
import type { LbStrategyName, Strategy } from './strategy.js';

/** The empty endpoint list shared by every listener without endpoints of a family (never mutated). */
const NO_STATES: EndpointState[] = [];

/** How long an endpoint whose dial failed is passed over while others are available. */
export const FAILURE_COOLDOWN_MS = 5000;

export function createStrategy(name: LbStrategyName): Strategy {
  return name === 'least-connections' ? new LeastConnections() : new RoundRobin();
}

/**
 * Which endpoints a pick may choose from: those of one IP family (the family
 * of the virtual IP the connection was addressed to), or 0 for any (a listener
 * that serves no virtual IP, such as --expose-on-loopback's).
 */
export type PickFamily = IPFamily | 0;

/**
 * The endpoints of one listener and how the next one is chosen: a strategy,
 * optionally under ClientIP session affinity.
 *
 * Dual-stack: kube-proxy runs one proxier per family, so an IPv4 virtual IP
 * reaches only IPv4 endpoints and an IPv6 one only IPv6 endpoints. One
 * listener here serves both families, so the endpoints are also kept split by
 * family, each family with a strategy of its own: its round-robin position
 * moves only with its own picks. Least-connection counts live on each
 * EndpointState, which belongs to one family, and a ClientIP affinity entry
 * is keyed by the client's address, which has the connection's family, so
 * both stay right without more state. The split is made when the endpoint set
 * changes, never per pick.
 */
export class Balancer {
  private states: EndpointState[] = [];
  /** `states` split by family, in the same order; rebuilt by update(). */
  private v4: EndpointState[] = [];
  private v6: EndpointState[] = [];
  /** For picks among both families at once (family 0 over a mixed set). */
  private readonly strategy: Strategy;
  private readonly strategy4: Strategy;
  private readonly strategy6: Strategy;
  private affinity: SessionAffinity | null;

  private readonly now: () => number;

  constructor(strategy: Strategy, affinity: SessionAffinity | null = null, now: () => number = Date.now) {
    // The strategy given serves IPv4 endpoints; IPv6 ones and mixed picks get
    // fresh strategies of the same kind.
    this.strategy4 = strategy;
    this.strategy6 = createStrategy(strategy.name);
    this.strategy = createStrategy(strategy.name);
    this.affinity = affinity;
    this.now = now;
  }

  /** The endpoints of one family, or all of them for 0. */
  endpointsOf(family: PickFamily): readonly EndpointState[] {
    const f = this.resolve(family);
    return f === 4 ? this.v4 : f === 6 ? this.v6 : this.states;
  }

  private strategyOf(family: PickFamily): Strategy {
    const f = this.resolve(family);
    return f === 4 ? this.strategy4 : f === 6 ? this.strategy6 : this.strategy;
  }

  /**
   * "Any family" over endpoints of one family is that family, so picks and
   * peeks of either kind share one rotation (`kup explain` without a client
   * then tells the pick a listener of that family makes next).
   */
  private resolve(family: PickFamily): PickFamily {
    if (family !== 0) return family;
    if (this.v6.length === 0) return 4;
    return this.v4.length === 0 ? 6 : 0;
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
    let v4: EndpointState[] = [];
    let v6: EndpointState[] = [];
    for (const s of next) (ipFamily(s.endpoint.ip) === 6 ? v6 : v4).push(s);
    // One family (nearly every listener): its list is `next` itself and the
    // other one shared and empty, not two more arrays per listener (10,000 of them).
    if (v6.length === 0) [v4, v6] = [next, NO_STATES];
    else if (v4.length === 0) [v4, v6] = [NO_STATES, next];
    this.v4 = v4;
    this.v6 = v6;
    this.strategy.reset(next);
    this.strategy4.reset(v4);
    this.strategy6.reset(v6);
    return old.size;
  }

  /**
   * The endpoint for a new connection from `clientIP`, or undefined when there
   * is none. `exclude` lists endpoints that already failed for this connection.
   * `family` is the family of the address the connection was sent to: only
   * endpoints of that family may answer it (0: any).
   */
  pick(clientIP: string, exclude: ReadonlySet<EndpointState> | null = null, family: PickFamily = 0): EndpointState | undefined {
    const states = this.endpointsOf(family);
    if (states.length === 0) return undefined;
    const aff = this.affinity;
    if (aff !== null && exclude === null) {
      const sticky = aff.lookup(clientIP, states);
      if (sticky !== undefined) {
        sticky.picks++;
        return sticky;
      }
    }
    const ep = this.strategyOf(family).pick(states, exclude, this.now());
    if (ep !== undefined) {
      ep.picks++;
      if (aff !== null) aff.record(clientIP, ep);
    }
    return ep;
  }

  /** The endpoint the next connection from `clientIP` to an address of `family` would get, changing nothing. */
  peek(clientIP: string, family: PickFamily = 0): EndpointState | undefined {
    const states = this.endpointsOf(family);
    return this.affinity?.peek(clientIP, states) ?? this.strategyOf(family).peek(states);
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
