import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { joinHostPort } from '../core/address.js';
import { KupError } from '../core/errors.js';
import { probeFree } from '../dataplane/port-probe.js';

/**
 * Admin servers (health, metrics, service health checks) listen with
 * SO_REUSEPORT so that a successor kup (hostNetwork: same ports) can start
 * next to the running one. Only while taking over does a kup join ports held
 * by its predecessor; otherwise a port is probed first, so a port in use is
 * still an error, as before.
 */
let joiningPredecessor = false;

/** On while this kup takes over from a predecessor (its admin ports are shared, not in use by a stranger). */
export function joinPredecessorPorts(on: boolean): void {
  joiningPredecessor = on;
}

/** Starts `server` on host:port (0: any free port) and resolves to the bound port; a port in use is the user's to fix. */
export async function listenHttp(server: Server, host: string, port: number, what: string): Promise<number> {
  if (port !== 0 && !joiningPredecessor)
    await probeFree('TCP', host, port, false).catch((err: NodeJS.ErrnoException) => {
      throw listenError(err, host, port, what);
    });
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => reject(listenError(err, host, port, what));
    server.once('error', onError);
    server.listen({ host, port, exclusive: true, reusePort: true }, () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function listenError(err: NodeJS.ErrnoException, host: string, port: number, what: string): KupError {
  const why =
    err.code === 'EADDRINUSE'
      ? 'the port is in use (is another kup or kube-proxy running?)'
      : err.code === 'EADDRNOTAVAIL'
        ? 'no such local address'
        : err.message;
  return new KupError('KUP_LISTEN_FAILED', `cannot start the ${what} on ${joinHostPort(host, port)}: ${why}`, { cause: err });
}

/** Stops accepting and drops idle keep-alive connections, so shutdown is not held up by a browser tab. */
export function closeHttp(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}
