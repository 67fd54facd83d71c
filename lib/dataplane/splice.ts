import type { Socket } from 'node:net';

export interface SpliceResult {
  /** Bytes the client sent that reached the endpoint's socket, and the reverse. */
  readonly bytesIn: number;
  readonly bytesOut: number;
}

/**
 * Joins two connected sockets both ways with backpressure: the reader is
 * paused while the writer's buffer is full and resumed on its 'drain'.
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
  // One 'close' listener per socket ('close' fires once; on() spares once()'s
  // wrapper): count the side closed, then make sure its peer does not stay
  // open when this side was destroyed before its data was carried (a
  // destroy() from the proxy itself).
  const onClientClose = (): void => {
    if (--open === 0) done({ bytesIn: backend.bytesWritten, bytesOut: client.bytesWritten });
    closePeer(backend);
  };
  const onBackendClose = (): void => {
    if (--open === 0) done({ bytesIn: backend.bytesWritten, bytesOut: client.bytesWritten });
    closePeer(client);
  };
  const onClientError = (err: NodeJS.ErrnoException): void => abort(backend, err);
  const stopUp = carry(client, backend);
  const stopDown = carry(backend, client);
  const onBackendError = (err: NodeJS.ErrnoException): void => {
    if (onEarlyReset !== undefined && err.code === 'ECONNRESET' && backend.bytesRead === 0 && backend.bytesWritten === 0 && !client.destroyed) {
      // Nothing reached either side yet: hand the client back untouched. The
      // error is delivered on the tick after the reset was read, before any
      // further client data could have been written here.
      stopUp();
      stopDown();
      client.pause();
      client.off('error', onClientError);
      client.off('close', onClientClose);
      backend.off('close', onBackendClose);
      if (idleTimeoutMs > 0) client.setTimeout(0);
      onEarlyReset();
      return;
    }
    abort(client, err);
  };
  client.on('close', onClientClose);
  backend.on('close', onBackendClose);
  client.on('error', onClientError);
  backend.on('error', onBackendError);

  if (idleTimeoutMs > 0) {
    client.setTimeout(idleTimeoutMs, () => {
      client.destroy();
      backend.destroy();
    });
  }

  client.resume();
}

/**
 * One direction, by hand rather than stream.pipe(): pipe's bookkeeping
 * (unpipe, awaitDrain writers, its own error and close handlers) costs a
 * dozen listeners per connection and work on every chunk, and splice already
 * handles errors and closes itself. Writes to a destroyed socket are dropped
 * by the stream without an 'error' event, and its peer is closed by splice.
 * Returns what undoes it (a connection handed back after an early reset).
 */
function carry(from: Socket, to: Socket): () => void {
  const onData = (chunk: Buffer): void => {
    if (!to.write(chunk)) from.pause();
  };
  const onDrain = (): void => {
    from.resume();
  };
  // FIN carried as FIN: the other direction keeps flowing (half-close).
  const onEnd = (): void => {
    to.end();
  };
  from.on('data', onData);
  to.on('drain', onDrain);
  // A client handed back after an early reset may have sent its FIN already.
  if (from.readableEnded) to.end();
  else from.on('end', onEnd);
  return () => {
    from.off('data', onData);
    to.off('drain', onDrain);
    from.off('end', onEnd);
  };
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
