import type { Socket } from 'node:net';

export interface SpliceResult {
  /** Bytes the client sent that reached the endpoint's socket, and the reverse. */
  readonly bytesIn: number;
  readonly bytesOut: number;
}

/**
 * Joins two connected sockets both ways with backpressure (pipe pauses the
 * reader while the writer's buffer is full).
 *
 * Half-close is carried: when one side sends FIN, the other side's write half
 * is ended and the reverse direction keeps flowing. Both sockets must have
 * been created with allowHalfOpen so Node does not end them on its own. A
 * socket whose read side ended and write side finished destroys itself
 * (autoDestroy); once both have closed, `done` runs exactly once.
 *
 * An error on one side ends the other at once: a reset is passed on as a reset
 * (resetAndDestroy), any other error as a plain close, so a client sees what
 * the endpoint did; except that a reset before any byte went either way
 * calls `onEarlyReset` instead and leaves the client untouched, so it can be
 * dialled elsewhere. `idleTimeoutMs` > 0 closes both after that long with no
 * bytes either way (the client socket sees reads of one direction and writes
 * of the other).
 */
export function splice(
  client: Socket,
  backend: Socket,
  idleTimeoutMs: number,
  done: (result: SpliceResult) => void,
  onEarlyReset?: () => void,
): void {
  let open = 2;
  const onClose = (): void => {
    if (--open === 0) done({ bytesIn: backend.bytesWritten, bytesOut: client.bytesWritten });
  };
  const onClientError = (err: NodeJS.ErrnoException): void => abort(backend, err);
  const onBackendError = (err: NodeJS.ErrnoException): void => {
    if (onEarlyReset !== undefined && err.code === 'ECONNRESET' && backend.bytesRead === 0 && backend.bytesWritten === 0 && !client.destroyed) {
      // Nothing reached either side yet: hand the client back untouched. The
      // error is delivered on the tick after the reset was read, before any
      // further client data could have been written here.
      client.unpipe(backend);
      backend.unpipe(client);
      client.pause();
      client.off('error', onClientError);
      client.off('close', onClose);
      client.off('close', closeBackend);
      backend.off('close', onClose);
      backend.off('close', closeClient);
      if (idleTimeoutMs > 0) client.setTimeout(0);
      onEarlyReset();
      return;
    }
    abort(client, err);
  };
  // A side that closed without error but before its data was carried (a
  // destroy() from the proxy itself) must not leave its peer open.
  const closeBackend = (): void => closePeer(backend);
  const closeClient = (): void => closePeer(client);
  client.once('close', onClose);
  backend.once('close', onClose);
  client.on('error', onClientError);
  backend.on('error', onBackendError);
  client.once('close', closeBackend);
  backend.once('close', closeClient);

  if (idleTimeoutMs > 0) {
    client.setTimeout(idleTimeoutMs, () => {
      client.destroy();
      backend.destroy();
    });
  }

  client.pipe(backend);
  backend.pipe(client);
  client.resume();
}

function abort(peer: Socket, err: NodeJS.ErrnoException): void {
  if (peer.destroyed) return;
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE') peer.resetAndDestroy();
  else peer.destroy();
}

function closePeer(peer: Socket): void {
  if (peer.destroyed) return;
  // The peer ends by itself once its pending writes flush when the closed side
  // had ended cleanly (its FIN was already passed on); otherwise close it now.
  if (peer.readableEnded || peer.writableEnded) {
    if (!peer.writableEnded) peer.end();
    return;
  }
  peer.destroy();
}
