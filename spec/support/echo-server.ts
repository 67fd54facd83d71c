/**
 * A stand-in for the data plane's listeners, run inside the node namespace:
 * `echo-server.js BIND proto:port:label...`. Each TCP connection gets
 * "label\n" then close; each UDP datagram gets "label" back. Prints "ready".
 */
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';

const [bind = '::', ...specs] = process.argv.slice(2);
let pending = specs.length;
const ready = (): void => {
  if (--pending === 0) process.stdout.write('ready\n');
};
for (const spec of specs) {
  const [proto, portText, label = ''] = spec.split(':');
  const port = Number(portText);
  if (proto === 'tcp') {
    createServer((sock) => {
      sock.on('error', () => undefined);
      sock.end(`${label}\n`);
    }).listen({ host: bind, port }, ready);
  } else {
    const sock = createSocket(bind.includes(':') ? 'udp6' : 'udp4');
    sock.on('message', (_msg, rinfo) => sock.send(label, rinfo.port, rinfo.address));
    sock.bind(port, bind, ready);
  }
}
