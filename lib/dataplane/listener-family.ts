import { ipFamily } from '../core/address.js';
import type { PickFamily } from '../core/balancer/balancer.js';

/** A listener whose connections may be of either family: each one's family is read from its socket. */
export const PER_CONNECTION = -1;

/** What a listener knows of its connections' family: one family, any (0), or per connection. */
export type ListenerFamily = PickFamily | typeof PER_CONNECTION;

/**
 * The family of the connections a listener bound to `host` receives. A
 * dual-stack `::` socket takes both (v4 as ::ffff:a.b.c.d), so it must look
 * per connection; any other bind hears one family only, and rules steer only
 * that family's virtual IPs to it.
 */
export function listenerFamily(host: string, ipv6Only: boolean): ListenerFamily {
  if ((host === '::' || host === '[::]') && !ipv6Only) return PER_CONNECTION;
  return ipFamily(host);
}
