/**
 * The pods of a packet-flow case, run inside the pods namespace:
 * `flow-backends.js JSON` where JSON is a list of [ip, port, "TCP"|"UDP", label?].
 * Each socket is bound to its own IP:port and answers with that IP:port (or
 * the label), so the client learns which endpoint really served it. Prints "ready".
 */
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';

const specs = JSON.parse(process.argv[2] ?? '[]') as [string, number, 'TCP' | 'UDP', string?][];
let pending = specs.length;
const ready = (): void => {
  if (--pending === 0) process.stdout.write('ready\n');
};
for (const [ip, port, proto, name] of specs) {
  const label = name ?? `${ip}:${port}`;
  if (proto === 'TCP') {
    const server = createServer((sock) => {
      sock.on('error', () => undefined);
      sock.end(`${label}\n`);
    });
    server.on('error', (err) => {
      process.stderr.write(`${label}/TCP: ${err.message}\n`);
      process.exit(1);
    });
    server.listen({ host: ip, port }, ready);
  } else {
    const sock = createSocket('udp4');
    sock.on('message', (_msg, rinfo) => sock.send(label, rinfo.port, rinfo.address));
    sock.on('error', (err) => {
      process.stderr.write(`${label}/UDP: ${err.message}\n`);
      process.exit(1);
    });
    sock.bind(port, ip, ready);
  }
}
if (specs.length === 0) process.stdout.write('ready\n');
