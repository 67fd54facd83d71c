import { endpointId, type Endpoint } from '../types.js';

/**
 * One endpoint as a balancer sees it, with the live counters the data plane
 * bumps. The same object survives endpoint-set updates (matched by ip:port),
 * so counts of established connections stay true across changes.
 */
export class EndpointState {
  readonly id: string;
  endpoint: Endpoint;
  /** Connections (TCP) or sessions (UDP) now open to this endpoint. */
  active = 0;
  /** How many times a balancer chose it. */
  picks = 0;
  /** Dials to it that failed. */
  failures = 0;
  /**
   * After a failed dial the endpoint is passed over until this time (ms since
   * epoch) while others are available: one dead pod then costs one client one
   * attempt, not every other client an attempt (nginx's fail_timeout idea).
   */
  unavailableUntil = 0;
  /** False once it left the endpoint set; open connections keep their reference. */
  current = true;

  constructor(endpoint: Endpoint) {
    this.id = endpointId(endpoint);
    this.endpoint = endpoint;
  }
}
