import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { joinHostPort } from '../core/address.js';
import { KupError } from '../core/errors.js';

/** Starts `server` on host:port (0: any free port) and resolves to the bound port; a port in use is the user's to fix. */
export function listenHttp(server: Server, host: string, port: number, what: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const why =
        err.code === 'EADDRINUSE'
          ? 'the port is in use (is another kup or kube-proxy running?)'
          : err.code === 'EADDRNOTAVAIL'
            ? 'no such local address'
            : err.message;
      reject(new KupError('KUP_LISTEN_FAILED', `cannot start the ${what} on ${joinHostPort(host, port)}: ${why}`, { cause: err }));
    };
    server.once('error', onError);
    server.listen({ host, port, exclusive: true }, () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/** Stops accepting and drops idle keep-alive connections, so shutdown is not held up by a browser tab. */
export function closeHttp(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}
