import type { Socket } from 'node:net';

export interface SpliceResult {
  /** Bytes the client sent that reached the endpoint's socket, and the reverse. */
  readonly bytesIn: number;
  readonly bytesOut: number;
}

/**
 * How long a socket whose peer is gone may take to take its last bytes and
 * close its side, as nginx's lingering close: closing it at once while its
 * owner is still sending would reset it, and a reset throws away the answer
 * still in its receive queue.
 */
export const LINGER_MS = 5000;

const EMPTY = Buffer.alloc(0);

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
 * When one side goes away, the other always gets every byte already read from
 * it, then:
 * - a reset, when the side that went was reset before its FIN (ECONNRESET):
 *   a reset is passed on as a reset;
 * - otherwise its FIN (a lingering close): what it still sends is read and
 *   dropped until it closes its side too, for at most LINGER_MS.
 * Except that a reset of the endpoint before any byte went either way calls
 * `onEarlyReset` instead and leaves the client untouched, so it can be dialled
 * elsewhere. A side kup destroyed itself (idle timeout, shutdown) takes the
 * other with it at once. `idleTimeoutMs` > 0 closes both after that long with
 * no bytes either way (the client socket sees reads of one direction and
 * writes of the other).
 *
 * "Already read" is all this relay can promise: a write to a socket that was
 * reset fails at once, and Node then closes it (autoDestroy) before the event
 * loop reads it again, so what was still in its receive queue (an endpoint's
 * answer and FIN, when kup was not scheduled between them and the reset) is lost.
 *
 * `preambleBytes` were written to the endpoint by kup itself before (a PROXY
 * protocol header): they are neither the client's bytes nor a reason to keep
 * a client on an endpoint that reset before answering (a redial sends its own).
 */
export function splice(
  client: Socket,
  backend: Socket,
  idleTimeoutMs: number,
  done: (result: SpliceResult) => void,
  onEarlyReset?: () => void,
  preambleBytes = 0,
): void {
  let open = 2;
  const up = carry(client, backend);
  const down = carry(backend, client);
  // Set once a side's error has decided its peer's fate; its 'close' then leaves the peer alone.
  let clientFailed = false;
  let backendFailed = false;
  // One 'close' listener per socket ('close' fires once; on() spares once()'s wrapper).
  const onClientClose = (): void => {
    if (--open === 0) done({ bytesIn: backend.bytesWritten - preambleBytes, bytesOut: client.bytesWritten });
    if (!clientFailed) afterClose(client, backend, down);
  };
  const onBackendClose = (): void => {
    if (--open === 0) done({ bytesIn: backend.bytesWritten - preambleBytes, bytesOut: client.bytesWritten });
    if (!backendFailed) afterClose(backend, client, up);
  };
  const onClientError = (err: NodeJS.ErrnoException): void => {
    clientFailed = true;
    afterError(client, backend, down, err);
  };
  const onBackendError = (err: NodeJS.ErrnoException): void => {
    if (
      onEarlyReset !== undefined &&
      err.code === 'ECONNRESET' &&
      backend.bytesRead === 0 &&
      backend.bytesWritten === preambleBytes &&
      !client.destroyed &&
      !client.writableEnded
    ) {
      // Nothing reached either side yet (not even the endpoint's FIN; kup's own
      // PROXY header is no client byte): hand the
      // client back untouched. The error is delivered on the tick after the
      // reset was read, before any further client data could have been written here.
      up.stop();
      down.stop();
      client.pause();
      client.off('error', onClientError);
      client.off('close', onClientClose);
      backend.off('close', onBackendClose);
      if (idleTimeoutMs > 0) client.setTimeout(0);
      onEarlyReset();
      return;
    }
    backendFailed = true;
    afterError(backend, client, up, err);
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

interface Carry {
  /** Undoes it (a connection handed back after an early reset). */
  stop(): void;
  /** The destination is gone: keep reading the source, dropping what it sends. */
  drop(): void;
}

/**
 * One direction, by hand rather than stream.pipe(): pipe's bookkeeping
 * (unpipe, awaitDrain writers, its own error and close handlers) costs a
 * dozen listeners per connection and work on every chunk, and splice already
 * handles errors and closes itself.
 */
function carry(from: Socket, to: Socket): Carry {
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
  const stop = (): void => {
    from.off('data', onData);
    to.off('drain', onDrain);
    from.off('end', onEnd);
  };
  return {
    stop,
    drop() {
      // Writes to a destroyed socket fail quietly and would pause the reader
      // for good: a source that could not be read would never see its peer's
      // FIN nor close, and would hold its descriptor for ever.
      stop();
      from.on('data', discard);
      from.resume();
    },
  };
}

/**
 * `gone` failed with `err`: nothing more can be written to it nor read from
 * it. Its peer gets what was already read from `gone`, then a reset when
 * `gone` was reset before its FIN, else a FIN and a lingering close.
 */
function afterError(gone: Socket, peer: Socket, intoGone: Carry, err: NodeJS.ErrnoException): void {
  if (peer.destroyed) return;
  intoGone.drop();
  // EPIPE is what Linux reports for a reset that came after the other end's
  // FIN (a close with unread data: dnsmasq after its 100th answer), even
  // before that FIN was read here: it closed, then refused the rest. Only
  // ECONNRESET is a reset out of the blue, passed on as one.
  const reset = err.code === 'ECONNRESET' && !gone.readableEnded;
  // A socket whose write side was ended cannot be reset (libuv refuses while
  // the shutdown is pending, and Node then drops the handle without closing
  // it): its FIN is on its way anyway.
  if (reset && !peer.writableEnded) flushThenReset(peer);
  else linger(peer);
}

/**
 * `gone` closed without an error. Closed by itself once both its directions
 * were done (its FIN and its peer's were both carried): the peer is finishing
 * the same way. Destroyed by kup (idle timeout, shutdown): the peer goes too.
 */
function afterClose(gone: Socket, peer: Socket, intoGone: Carry): void {
  if (peer.destroyed) return;
  if (gone.readableEnded && gone.writableFinished) {
    intoGone.drop();
    linger(peer);
  } else {
    peer.destroy();
  }
}

/** Sends what is queued, then a reset. */
function flushThenReset(s: Socket): void {
  closeWithin(s, LINGER_MS);
  const reset = (): void => {
    if (!s.destroyed) s.resetAndDestroy();
  };
  if (s.writableLength === 0) reset();
  // The callback of a write runs once everything queued before it was handed to the kernel.
  else s.write(EMPTY, reset);
}

/**
 * Sends what is queued and a FIN, then waits for the other end's FIN (the
 * socket then closes itself); a socket that stays open longer is closed.
 */
function linger(s: Socket): void {
  if (!s.writableEnded) s.end();
  if (s.readableEnded && s.writableFinished) {
    s.destroy();
    return;
  }
  closeWithin(s, LINGER_MS);
}

/** Destroys `s` if it is still open `ms` from now. */
function closeWithin(s: Socket, ms: number): void {
  const timer = setTimeout(() => s.destroy(), ms).unref();
  s.once('close', () => clearTimeout(timer));
}

function discard(): void {}
