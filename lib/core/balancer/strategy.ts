import type { EndpointState } from './endpoint-state.js';

export type LbStrategyName = 'round-robin' | 'least-connections';

export const LB_STRATEGIES: readonly LbStrategyName[] = ['round-robin', 'least-connections'];

/**
 * How one service port chooses among its endpoints. `exclude` holds endpoints
 * already tried for this connection; a strategy avoids them, and endpoints
 * cooling down after a failure (unavailableUntil > now), while it can.
 */
export interface Strategy {
  readonly name: LbStrategyName;
  pick(endpoints: readonly EndpointState[], exclude: ReadonlySet<EndpointState> | null, now: number): EndpointState | undefined;
  /** What pick() would return now, without moving the strategy on (for `kup explain`). */
  peek(endpoints: readonly EndpointState[]): EndpointState | undefined;
  /** The endpoint list changed. */
  reset(endpoints: readonly EndpointState[]): void;
}

/** True when a strategy should pass `ep` over on its first pass. */
export function avoid(ep: EndpointState, exclude: ReadonlySet<EndpointState> | null, now: number): boolean {
  return ep.unavailableUntil > now || (exclude !== null && exclude.has(ep));
}
