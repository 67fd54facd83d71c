import type { EndpointState } from './endpoint-state.js';
import { avoid, type Strategy } from './strategy.js';

/** Fewest active connections wins; ties go round-robin so idle endpoints share the load. */
export class LeastConnections implements Strategy {
  readonly name = 'least-connections';
  private next = 0;

  pick(endpoints: readonly EndpointState[], exclude: ReadonlySet<EndpointState> | null, now: number): EndpointState | undefined {
    const best = this.choose(endpoints, exclude, now);
    if (best < 0) return undefined;
    this.next = (best + 1) % endpoints.length;
    return endpoints[best];
  }

  peek(endpoints: readonly EndpointState[]): EndpointState | undefined {
    const best = this.choose(endpoints, null, Date.now());
    return best < 0 ? undefined : endpoints[best];
  }

  private choose(endpoints: readonly EndpointState[], exclude: ReadonlySet<EndpointState> | null, now: number): number {
    const n = endpoints.length;
    let best = -1;
    let bestActive = Infinity;
    for (let pass = 0; pass < 2 && best < 0; pass++) {
      // The first pass honours `exclude` and cool-downs; the second accepts anything.
      for (let i = 0; i < n; i++) {
        const idx = (this.next + i) % n;
        const ep = endpoints[idx]!;
        if (pass === 0 && avoid(ep, exclude, now)) continue;
        if (ep.active < bestActive) {
          best = idx;
          bestActive = ep.active;
        }
      }
    }
    return best;
  }

  reset(endpoints: readonly EndpointState[]): void {
    if (endpoints.length > 0) this.next %= endpoints.length;
    else this.next = 0;
  }
}
