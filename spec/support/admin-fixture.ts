import dgram from 'node:dgram';
import { writeFile } from 'node:fs/promises';
import net, { type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { request } from 'undici';
import type { RunConfig } from '../../lib/runtime/config.js';
import { createLogger } from '../../lib/log.js';
import { testRunConfig } from './run-config.js';
import { startProxy, type ProxyRuntime } from '../../lib/runtime/proxy-runtime.js';

/** Everything here talks to 127.0.0.1 only. */
export const LOOPBACK = '127.0.0.1';

export interface Closeable {
  readonly port: number;
  close(): Promise<void>;
}

/** A TCP echo server: what goes in comes back, so bytes in == bytes out == bytes sent. */
export function tcpEcho(): Promise<Closeable> {
  const socks = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    socks.add(s);
    s.on('close', () => socks.delete(s));
    s.on('error', () => {});
    s.pipe(s);
  });
  return new Promise((res) =>
    server.listen(0, LOOPBACK, () =>
      res({
        port: (server.address() as AddressInfo).port,
        close: () =>
          new Promise<void>((r) => {
            for (const s of socks) s.destroy();
            server.close(() => r());
          }),
      }),
    ),
  );
}

export function udpEcho(): Promise<Closeable> {
  const sock = dgram.createSocket('udp4');
  sock.on('message', (m, r) => sock.send(m, r.port, r.address));
  return new Promise((res) =>
    sock.bind(0, LOOPBACK, () => res({ port: sock.address().port, close: () => new Promise<void>((r) => sock.close(() => r())) })),
  );
}

/** A port free right now on loopback (for healthCheckNodePort, which the table names). */
export function freePort(): Promise<number> {
  const s = net.createServer();
  return new Promise((res) =>
    s.listen(0, LOOPBACK, () => {
      const p = (s.address() as AddressInfo).port;
      s.close(() => res(p));
    }),
  );
}

export interface FixturePorts {
  readonly echoA: number;
  readonly echoB: number;
  /** Nothing listens here: the terminating endpoint. */
  readonly dead: number;
  readonly udp: number;
  readonly hcLocal: number;
  readonly hcDraining: number;
}

/** The fixture cluster: node "node-a", four services covering each address kind. */
export function fixtureYaml(p: FixturePorts, opts: { lbLocalReady?: boolean } = {}): string {
  const lbLocalReady = opts.lbLocalReady ?? true;
  return `apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: { name: api, namespace: shop }
    spec:
      type: ClusterIP
      clusterIP: 10.96.0.10
      ports: [{ name: http, protocol: TCP, port: 80, targetPort: 8080 }]
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: { name: api-1, namespace: shop, labels: { kubernetes.io/service-name: api } }
    addressType: IPv4
    ports: [{ name: http, protocol: TCP, port: ${p.echoA} }]
    endpoints:
      - { addresses: [127.0.0.1], conditions: { ready: true }, nodeName: node-a }
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: { name: api-2, namespace: shop, labels: { kubernetes.io/service-name: api } }
    addressType: IPv4
    ports: [{ name: http, protocol: TCP, port: ${p.echoB} }]
    endpoints:
      - { addresses: [127.0.0.1], conditions: { ready: true }, nodeName: node-b }
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: { name: api-3, namespace: shop, labels: { kubernetes.io/service-name: api } }
    addressType: IPv4
    ports: [{ name: http, protocol: TCP, port: ${p.dead} }]
    endpoints:
      - { addresses: [127.0.0.1], conditions: { ready: false, serving: true, terminating: true }, nodeName: node-a }
  - apiVersion: v1
    kind: Service
    metadata: { name: dns, namespace: shop }
    spec:
      type: NodePort
      clusterIP: 10.96.0.53
      ports: [{ protocol: UDP, port: 53, targetPort: 53, nodePort: 30053 }]
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: { name: dns-1, namespace: shop, labels: { kubernetes.io/service-name: dns } }
    addressType: IPv4
    ports: [{ name: "", protocol: UDP, port: ${p.udp} }]
    endpoints:
      - { addresses: [127.0.0.1], nodeName: node-a }
  - apiVersion: v1
    kind: Service
    metadata: { name: lb, namespace: shop }
    spec:
      type: LoadBalancer
      clusterIP: 10.96.0.20
      externalIPs: [192.0.2.10]
      externalTrafficPolicy: Local
      healthCheckNodePort: ${p.hcLocal}
      ports: [{ name: web, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30080 }]
    status: { loadBalancer: { ingress: [{ ip: 198.51.100.7 }] } }
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: { name: lb-1, namespace: shop, labels: { kubernetes.io/service-name: lb } }
    addressType: IPv4
    ports: [{ name: web, protocol: TCP, port: ${p.echoA} }]
    endpoints:
      - { addresses: [127.0.0.1], conditions: { ready: ${lbLocalReady} }, nodeName: node-a }
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: { name: lb-2, namespace: shop, labels: { kubernetes.io/service-name: lb } }
    addressType: IPv4
    ports: [{ name: web, protocol: TCP, port: ${p.echoB} }]
    endpoints:
      - { addresses: [127.0.0.1], conditions: { ready: true }, nodeName: node-b }
  - apiVersion: v1
    kind: Service
    metadata: { name: lb-draining, namespace: shop }
    spec:
      type: LoadBalancer
      clusterIP: 10.96.0.21
      externalTrafficPolicy: Local
      healthCheckNodePort: ${p.hcDraining}
      ports: [{ name: web, protocol: TCP, port: 80, targetPort: 8080, nodePort: 30081 }]
  - apiVersion: discovery.k8s.io/v1
    kind: EndpointSlice
    metadata: { name: lb-draining-1, namespace: shop, labels: { kubernetes.io/service-name: lb-draining } }
    addressType: IPv4
    ports: [{ name: web, protocol: TCP, port: ${p.echoA} }]
    endpoints:
      - { addresses: [127.0.0.1], conditions: { ready: false, serving: true, terminating: true }, nodeName: node-a }
`;
}

export interface TestCluster {
  readonly runtime: ProxyRuntime;
  readonly ports: FixturePorts;
  readonly file: string;
  readonly metricsUrl: string;
  readonly healthzUrl: string;
  close(): Promise<void>;
}

/** Backends, the fixture file in `dir`, and a proxy over it with its admin servers on free loopback ports. */
export async function startCluster(dir: string, config: Partial<RunConfig> = {}): Promise<TestCluster> {
  const a = await tcpEcho();
  const b = await tcpEcho();
  const u = await udpEcho();
  const ports: FixturePorts = {
    echoA: a.port,
    echoB: b.port,
    dead: await freePort(),
    udp: u.port,
    hcLocal: await freePort(),
    hcDraining: await freePort(),
  };
  const file = join(dir, 'cluster.yaml');
  await writeFile(file, fixtureYaml(ports));
  const runtime = await startProxy(
    testRunConfig(file, {
      bindAddress: LOOPBACK,
      healthzBindAddress: { host: LOOPBACK, port: 0 },
      metricsBindAddress: { host: LOOPBACK, port: 0 },
      ...config,
    }),
    createLogger('silent'),
  );
  const m = runtime.admin.metricsAddress;
  const h = runtime.admin.healthzAddress;
  return {
    runtime,
    ports,
    file,
    metricsUrl: m === null ? '' : `http://${LOOPBACK}:${m.port}`,
    healthzUrl: h === null ? '' : `http://${LOOPBACK}:${h.port}`,
    async close() {
      await runtime.stop();
      await Promise.all([a.close(), b.close(), u.close()]);
    },
  };
}

export interface HttpAnswer {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly text: string;
}

export async function get(url: string): Promise<HttpAnswer> {
  const res = await request(url, { headersTimeout: 5000, bodyTimeout: 5000 });
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) if (typeof v === 'string') headers[k] = v;
  return { status: res.statusCode, headers, text: await res.body.text() };
}

/** Sends `payload` through a TCP connection to 127.0.0.1:port, reads the echo back, closes; resolves to what came back. */
export function echoThrough(port: number, payload: Buffer): Promise<Buffer> {
  return new Promise((res, rej) => {
    const chunks: Buffer[] = [];
    const c = net.connect({ host: LOOPBACK, port, allowHalfOpen: false }, () => c.end(payload));
    c.on('data', (d: Buffer) => chunks.push(d));
    c.on('error', rej);
    c.on('close', () => res(Buffer.concat(chunks)));
    c.setTimeout(5000, () => c.destroy(new Error('echo timed out')));
  });
}
