/**
 * Continuous load through kup for the hand-over test, run next to it:
 * - a new TCP connection every `intervalMs` (ECHO, one line, reply checked, closed);
 * - `transfers` long downloads of `bytes` each at `rate` bytes/s, checked byte by byte;
 * - one idle connection (ECHO) that answers a line every second and at the end;
 * - a UDP query every `intervalMs` (one retry after 500 ms, as a resolver would).
 * Prints `running` once every transfer is under way; on a `stop` line on stdin,
 * waits for the transfers, then prints one JSON line with the counts.
 * Usage: node handover-load.js HOST TCP_PORT UDP_PORT TRANSFERS BYTES RATE INTERVAL_MS
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { patternChunk, PATTERN_PERIOD } from './handover-pattern.js';

const [host = '127.0.0.1', tcpPortS, udpPortS, transfersS, bytesS, rateS, intervalS] = process.argv.slice(2);
const tcpPort = Number(tcpPortS);
const udpPort = Number(udpPortS);
const transfers = Number(transfersS);
const bytes = Number(bytesS);
const rate = Number(rateS);
const intervalMs = Number(intervalS);
const chunk = patternChunk();

const counts = {
  connects: 0,
  connectFailures: 0,
  connectErrors: [] as string[],
  transfersOk: 0,
  transfersBroken: [] as string[],
  idleExchanges: 0,
  idleOk: false,
  udpQueries: 0,
  udpAnswered: 0,
  udpRetried: 0,
  udpLost: 0,
  /** Milliseconds since the load began at which lost queries were first sent (the first 10), to place them against the hand-over. */
  udpLostAt: [] as number[],
};
const began = performance.now();
let stopping = false;

function oneConnection(n: number): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(tcpPort, host);
    let got = '';
    const fail = (why: string): void => {
      counts.connectFailures++;
      if (counts.connectErrors.length < 10) counts.connectErrors.push(`#${n}: ${why}`);
      s.destroy();
      resolve();
    };
    const timer = setTimeout(() => fail('timeout'), 5000);
    s.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      fail(err.code ?? err.message);
    });
    s.on('connect', () => s.write(`ECHO\nhello ${n}\n`));
    s.on('data', (d) => {
      got += d.toString();
      if (got === `hello ${n}\n`) {
        clearTimeout(timer);
        counts.connects++;
        s.end();
        resolve();
      }
    });
    s.on('end', () => {
      if (got !== `hello ${n}\n`) {
        clearTimeout(timer);
        fail(`closed after ${JSON.stringify(got)}`);
      }
    });
  });
}

function transfer(i: number, started: () => void): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(tcpPort, host);
    let received = 0;
    let bad = '';
    s.on('connect', () => s.write(`DATA ${bytes} ${rate}\n`));
    s.on('data', (d: Buffer) => {
      if (received === 0) started();
      // Compared natively, a pattern-chunk's worth at a time (a per-byte loop would starve the rest of the load).
      for (let k = 0; bad === '' && k < d.length;) {
        const off = (received + k) % PATTERN_PERIOD;
        const n = Math.min(d.length - k, chunk.length - off);
        if (!d.subarray(k, k + n).equals(chunk.subarray(off, off + n)))
          bad = `transfer ${i}: wrong bytes in ${received + k}..${received + k + n}`;
        k += n;
      }
      received += d.length;
    });
    const done = (why: string): void => {
      if (bad === '' && received === bytes && why === 'end') counts.transfersOk++;
      else counts.transfersBroken.push(bad || `transfer ${i}: ${why} after ${received} of ${bytes} bytes`);
      resolve();
    };
    s.on('error', (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
    s.on('end', () => done('end'));
  });
}

function idleConnection(): { finish(): Promise<void> } {
  const s = net.connect(tcpPort, host);
  let buf = '';
  let expect = 0;
  let waiter: (() => void) | null = null;
  s.on('error', () => undefined);
  s.on('connect', () => s.write('ECHO\n'));
  s.on('data', (d) => {
    buf += d.toString();
    while (buf.includes(`idle ${expect}\n`)) {
      buf = buf.replace(`idle ${expect}\n`, '');
      counts.idleExchanges++;
      expect++;
      waiter?.();
    }
  });
  let sent = 0;
  const timer = setInterval(() => s.write(`idle ${sent++}\n`), 1000);
  return {
    async finish() {
      clearInterval(timer);
      const last = sent++;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 3000);
        waiter = () => {
          if (expect > last) {
            clearTimeout(t);
            resolve();
          }
        };
        s.write(`idle ${last}\n`);
      });
      counts.idleOk = counts.idleExchanges === sent && !s.destroyed;
      s.end();
    },
  };
}

function udpQuery(n: number): Promise<void> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket('udp4');
    const msg = Buffer.from(`q ${n}`);
    const sentAt = Math.round(performance.now() - began);
    let tries = 0;
    let timer: NodeJS.Timeout;
    const send = (): void => {
      tries++;
      if (tries === 2) counts.udpRetried++;
      sock.send(msg, udpPort, host);
      timer = setTimeout(() => {
        if (tries < 2) send();
        else {
          counts.udpLost++;
          if (counts.udpLostAt.length < 10) counts.udpLostAt.push(sentAt);
          sock.close();
          resolve();
        }
      }, 500);
    };
    sock.on('message', (m) => {
      if (m.toString() !== `q ${n}`) return;
      clearTimeout(timer);
      counts.udpAnswered++;
      sock.close();
      resolve();
    });
    counts.udpQueries++;
    send();
  });
}

const pending: Promise<void>[] = [];
let n = 0;
let startedTransfers = 0;
const all = Array.from({ length: transfers }, (_, i) =>
  transfer(i, () => {
    if (++startedTransfers === transfers) process.stdout.write('running\n');
  }),
);
if (transfers === 0) process.stdout.write('running\n');
const idle = idleConnection();
const ticker = setInterval(() => {
  if (stopping) return;
  const i = n++;
  pending.push(oneConnection(i), udpQuery(i));
}, intervalMs);

createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() !== 'stop' || stopping) return;
  stopping = true;
  clearInterval(ticker);
  void (async () => {
    await Promise.all(all);
    await Promise.all(pending);
    await idle.finish();
    process.stdout.write(`${JSON.stringify(counts)}\n`);
    process.exit(0);
  })();
});
