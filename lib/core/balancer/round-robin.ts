import type { EndpointState } from './endpoint-state.js';
import { avoid, type Strategy } from './strategy.js';

export class RoundRobin implements Strategy {
  readonly name = 'round-robin';
  private next = 0;

  pick(endpoints: readonly EndpointState[], exclude: ReadonlySet<EndpointState> | null, now: number): EndpointState | undefined {
    const n = endpoints.length;
    if (n === 0) return undefined;
    for (let i = 0; i < n; i++) {
      const idx = (this.next + i) % n;
      const ep = endpoints[idx]!;
      if (!avoid(ep, exclude, now)) {
        this.next = (idx + 1) % n;
        return ep;
      }
    }
    const ep = endpoints[this.next % n]!;
    this.next = (this.next + 1) % n;
    return ep;
  }

  peek(endpoints: readonly EndpointState[]): EndpointState | undefined {
    return endpoints.length === 0 ? undefined : endpoints[this.next % endpoints.length];
  }

  reset(endpoints: readonly EndpointState[]): void {
    // Keep the rotation going rather than restarting at the first endpoint:
    // restarting on every change would send a burst to endpoint 0 (the legacy
    // proxier shuffled instead, which made picks impossible to predict).
    if (endpoints.length > 0) this.next %= endpoints.length;
    else this.next = 0;
  }
}
