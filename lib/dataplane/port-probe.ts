import dgram from 'node:dgram';
import net from 'node:net';
import { isIPv6 } from 'node:net';

/**
 * Proxy listeners bind with SO_REUSEPORT so a successor kup can bind the same
 * ports alongside (hand-over). The price: a second process of the same user
 * that also sets it would share a port silently instead of getting
 * EADDRINUSE. So a port that is not being taken over from a live predecessor
 * is first bound once without SO_REUSEPORT: that bind fails while anyone
 * holds the port, shared or not. Port 0 needs no probe: the kernel never
 * picks a port in use for an automatic bind.
 */
export function probeFree(protocol: 'TCP' | 'UDP', host: string, port: number, ipv6Only: boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    if (protocol === 'UDP') {
      const s = dgram.createSocket({ type: isIPv6(host) ? 'udp6' : 'udp4', ipv6Only });
      s.once('error', (err) => {
        s.close();
        reject(err);
      });
      s.bind({ address: host, port, exclusive: true }, () => s.close(() => resolve()));
      return;
    }
    const srv = net.createServer();
    srv.once('error', reject);
    // A listen, not just a bind (Node has no bind-only TCP socket); closed at once, before any rule points here.
    srv.listen({ host, port, ipv6Only, exclusive: true, backlog: 1 }, () => srv.close(() => resolve()));
  });
}
