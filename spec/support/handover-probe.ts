/**
 * Connects to HOST:PORT every 5 ms until an ECHO round trip succeeds or
 * TIMEOUT_MS passes; prints {ok, attempts, ms}. Measures how long a port was
 * refused (kup restarting). Usage: node handover-probe.js HOST PORT TIMEOUT_MS
 */
import net from 'node:net';

const [host = '127.0.0.1', portS, timeoutS] = process.argv.slice(2);
const t0 = performance.now();
let attempts = 0;

function once(): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(Number(portS), host);
    let got = '';
    const timer = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, 1000);
    s.on('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
    s.on('connect', () => s.write('ECHO\nprobe\n'));
    s.on('data', (d) => {
      got += d.toString();
      if (got === 'probe\n') {
        clearTimeout(timer);
        s.end();
        resolve(true);
      }
    });
    s.on('end', () => {
      clearTimeout(timer);
      resolve(got === 'probe\n');
    });
  });
}

for (;;) {
  if (await once()) break;
  attempts++;
  if (performance.now() - t0 > Number(timeoutS)) {
    process.stdout.write(`${JSON.stringify({ ok: false, attempts, ms: Math.round(performance.now() - t0) })}\n`);
    process.exit(0);
  }
  await new Promise((r) => setTimeout(r, 5));
}
process.stdout.write(`${JSON.stringify({ ok: true, attempts, ms: Math.round(performance.now() - t0) })}\n`);
