/**
 * Counters of one listener. Plain numbers bumped on the hot path (no maps, no
 * labels, no allocation); the admin face reads them when asked.
 */
export class ListenerStats {
  /** TCP connections accepted / UDP sessions created. */
  accepted = 0;
  /** Open TCP connections / live UDP sessions. */
  active = 0;
  /** Dials (TCP) or backend sockets (UDP) that failed. */
  dialFailures = 0;
  /** Clients turned away because no endpoint was usable (TCP reset, UDP datagram dropped). */
  noEndpoints = 0;
  /** Clients closed because every dial attempt failed. */
  exhausted = 0;
  /** Bytes from clients to endpoints / from endpoints to clients, counted as connections close. */
  bytesIn = 0;
  bytesOut = 0;
  /** UDP datagrams relayed each way, and dropped (no endpoint, session cap, send error). */
  datagramsIn = 0;
  datagramsOut = 0;
  datagramsDropped = 0;
  /**
   * UDP datagrams the kernel dropped before kup read them (the listener's
   * receive buffer was full): /proc/net/udp's "drops", refreshed when metrics
   * or /status are read, not counted by kup.
   */
  receiveDrops = 0;
  /** UDP sessions evicted because the session cap was reached. */
  sessionsEvicted = 0;
  /** UDP sessions closed because their endpoint left the usable set (removed, or no longer serving). */
  sessionsEndpointGone = 0;
  /** accept() errors reported by the listening socket. */
  acceptErrors = 0;
  /** Clients shed (reset, or datagram dropped) because the process was out of file descriptors. */
  shed = 0;
}
