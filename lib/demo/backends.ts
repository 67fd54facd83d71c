import dgram from 'node:dgram';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ipFamily } from '../core/address.js';

/** A backend of the demo (and of tests): it answers with its own name so picks are visible. */
export interface DemoBackend {
  readonly name: string;
  readonly protocol: 'TCP' | 'UDP';
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

/** HTTP server answering every request with "NAME\n". */
export function startHttpBackend(name: string, host: string, port: number): Promise<DemoBackend> {
  const server = http.createServer((req, res) => {
    req.resume();
    const body = `${name}\n`;
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), 'x-backend': name });
    res.end(body);
  });
  server.keepAliveTimeout = 5000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve({
        name,
        protocol: 'TCP',
        host,
        port: (server.address() as AddressInfo).port,
        close: () =>
          new Promise<void>((r) => {
            server.closeAllConnections();
            server.close(() => r());
          }),
      });
    });
  });
}

/** UDP server replying to each datagram with "NAME: " followed by the datagram. */
export function startUdpEchoBackend(name: string, host: string, port: number): Promise<DemoBackend> {
  const sock = dgram.createSocket(ipFamily(host) === 6 ? 'udp6' : 'udp4');
  const prefix = Buffer.from(`${name}: `);
  sock.on('message', (msg, rinfo) => sock.send(Buffer.concat([prefix, msg]), rinfo.port, rinfo.address));
  return new Promise((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(port, host, () => {
      sock.off('error', reject);
      resolve({
        name,
        protocol: 'UDP',
        host,
        port: sock.address().port,
        close: () => new Promise<void>((r) => sock.close(() => r())),
      });
    });
  });
}
