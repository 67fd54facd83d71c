/**
 * The backend behind kup in the hand-over test, on 127.0.0.1:PORT (TCP and UDP).
 * TCP: the first line says what to do: `DATA <bytes> <bytesPerSecond>` sends
 * that many bytes of a known pattern at that rate, then ends; `ECHO` echoes
 * every line back. UDP: each datagram is echoed.
 * Usage: node handover-backend.js PORT
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { patternChunk, PATTERN_PERIOD } from './handover-pattern.js';

const port = Number(process.argv[2]);
const chunk = patternChunk();

const srv = net.createServer((s) => {
  s.on('error', () => undefined);
  let head = '';
  const onData = (d: Buffer): void => {
    head += d.toString('latin1');
    const nl = head.indexOf('\n');
    if (nl < 0) return;
    s.off('data', onData);
    const [cmd, a, b] = head.slice(0, nl).split(' ');
    const rest = head.slice(nl + 1);
    if (cmd === 'ECHO') {
      if (rest !== '') s.write(rest);
      s.pipe(s);
      return;
    }
    if (cmd === 'DATA') sendPattern(s, Number(a), Number(b));
    else s.destroy();
  };
  s.on('data', onData);
});

/** Sends `total` pattern bytes at about `rate` bytes/s, in 10 ms ticks, minding backpressure. */
function sendPattern(s: net.Socket, total: number, rate: number): void {
  let sent = 0;
  const perTick = Math.max(1, Math.floor(rate / 100));
  const timer = setInterval(() => {
    if (s.destroyed) return clearInterval(timer);
    if (s.writableLength > 4 * chunk.length) return;
    let budget = Math.min(perTick, total - sent);
    while (budget > 0) {
      const off = sent % PATTERN_PERIOD;
      const n = Math.min(budget, chunk.length - off);
      s.write(chunk.subarray(off, off + n));
      sent += n;
      budget -= n;
    }
    if (sent >= total) {
      clearInterval(timer);
      s.end();
    }
  }, 10);
}

const udp = dgram.createSocket('udp4');
udp.on('message', (m, r) => udp.send(m, r.port, r.address));
srv.listen(port, '127.0.0.1', () => udp.bind(port, '127.0.0.1', () => process.stdout.write('ready\n')));
