/**
 * A client, run inside a namespace: `probe.js tcp|udp HOST PORT [TIMEOUT_MS] [SOURCE_PORT]`.
 * Prints one JSON line: {"ok":true,"reply":"..."} or {"ok":false,"error":CODE}
 * with the elapsed milliseconds, so tests can tell a refusal from a timeout.
 */
import { connect } from 'node:net';
import { createSocket } from 'node:dgram';

const [proto, host = '', portText = '0', timeoutText = '2000', sourcePortText = '0'] = process.argv.slice(2);
const port = Number(portText);
const timeoutMs = Number(timeoutText);
const started = Date.now();
const done = (r: { ok: boolean; reply?: string; error?: string }): void => {
  process.stdout.write(JSON.stringify({ ...r, ms: Date.now() - started }) + '\n');
  process.exit(0);
};
setTimeout(() => done({ ok: false, error: 'TIMEOUT' }), timeoutMs).unref();

if (proto === 'tcp') {
  let reply = '';
  const sock = connect({ host, port });
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => (reply += d));
  sock.on('end', () => done({ ok: true, reply: reply.trim() }));
  sock.on('error', (err: NodeJS.ErrnoException) => done({ ok: false, error: err.code ?? err.message }));
} else {
  // Connected, like a DNS resolver: a reply from any other address than the one asked is dropped.
  const sock = createSocket(host.includes(':') ? 'udp6' : 'udp4');
  sock.on('message', (msg) => done({ ok: true, reply: msg.toString('utf8') }));
  sock.on('error', (err: NodeJS.ErrnoException) => done({ ok: false, error: err.code ?? err.message }));
  // A fixed source port, as a resolver that reuses one: the kernel then matches the same conntrack entry each time.
  sock.bind(Number(sourcePortText), () => sock.connect(port, host, () => sock.send('ping')));
}
