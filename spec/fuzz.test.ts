import { isIP } from 'node:net';
import t from 'tap';
import { ChangeTracker } from '../lib/core/change-tracker.js';
import { needsExternalListener, type ProxyPortNumbers, type ServicePortKey } from '../lib/core/types.js';
import { renderRules } from '../lib/iptables/render.js';

/**
 * Thousands of generated objects, hostile and malformed ones among them,
 * through the translation and the rule renderer: nothing may throw, and every
 * rule line must be built only from known tokens, valid addresses and numbers.
 */

// A small deterministic PRNG so a failure can be reproduced from its seed.
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x1_0000_0000;
  };
}

const NASTY: unknown[] = [
  '',
  ' ',
  'a b',
  '"quoted"',
  "it's",
  '$(reboot)',
  '`id`',
  'line\nCOMMIT\n*filter',
  '-A INPUT -j ACCEPT',
  'x'.repeat(300),
  'ünïcode',
  '../../etc',
  null,
  undefined,
  0,
  -1,
  65536,
  1.5,
  'NaN',
  true,
  {},
  [],
  ['10.0.0.1'],
  { ip: '10.0.0.1' },
  '10.0.0.1',
  '10.0.0.256',
  '::1',
  'fe80::1%eth0',
  '1.2.3.4/32',
  '::ffff:10.0.0.1',
  '2001:db8::1',
  '010.001.002.003',
  80,
  443,
  30080,
  'http',
  'TCP',
  'UDP',
  'SCTP',
  'ICMP',
  'None',
  'ClusterIP',
  'NodePort',
  'LoadBalancer',
  'ExternalName',
  'Local',
];

function gen(r: () => number) {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const maybe = <T>(good: T): unknown => (r() < 0.8 ? good : pick(NASTY));
  const ip4 = () => `10.${Math.floor(r() * 256)}.${Math.floor(r() * 256)}.${Math.floor(r() * 256)}`;
  const ip6 = () => `fd00::${Math.floor(r() * 65535).toString(16)}`;
  const port = () => 1 + Math.floor(r() * 65535);
  const name = () => maybe(pick(['web', 'api', 'db', 'dns', 'a-b', 'x1']) + Math.floor(r() * 50));
  const ns = () => maybe(pick(['default', 'kube-system', 'prod']));
  const svcName = name();
  const namespace = ns();
  const ports = Array.from({ length: Math.floor(r() * 4) }, () => ({
    name: maybe(pick(['http', 'https', 'dns', 'metrics', ''])),
    port: maybe(port()),
    protocol: maybe(pick(['TCP', 'UDP'])),
    nodePort: r() < 0.3 ? maybe(30000 + Math.floor(r() * 2767)) : undefined,
  }));
  const service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: svcName, namespace, labels: r() < 0.05 ? { 'service.kubernetes.io/service-proxy-name': 'x' } : {} },
    spec: maybe({
      type: maybe(pick(['ClusterIP', 'NodePort', 'LoadBalancer'])),
      clusterIP: maybe(ip4()),
      clusterIPs: r() < 0.3 ? [maybe(ip4()), maybe(ip6())] : undefined,
      externalIPs: r() < 0.3 ? [maybe(ip4()), maybe(ip6())] : undefined,
      loadBalancerSourceRanges: r() < 0.2 ? [maybe('192.0.2.0/24'), maybe('2001:db8::/32')] : undefined,
      sessionAffinity: maybe(pick(['None', 'ClientIP'])),
      sessionAffinityConfig: r() < 0.3 ? { clientIP: { timeoutSeconds: maybe(Math.floor(r() * 100000)) } } : undefined,
      internalTrafficPolicy: maybe(pick(['Cluster', 'Local'])),
      externalTrafficPolicy: maybe(pick(['Cluster', 'Local'])),
      ports: maybe(ports),
    }),
    status: { loadBalancer: { ingress: r() < 0.3 ? [{ ip: maybe(ip4()) }, { ip: maybe(ip6()), ipMode: maybe('VIP') }] : [] } },
  };
  const slices = Array.from({ length: Math.floor(r() * 3) }, (_, i) => {
    const v6 = r() < 0.3;
    return {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: `${String(svcName)}-${i}`, namespace, labels: { 'kubernetes.io/service-name': maybe(svcName) } },
      addressType: maybe(v6 ? 'IPv6' : 'IPv4'),
      ports: maybe(ports.map((p) => ({ name: maybe(p.name), port: maybe(port()), protocol: maybe(p.protocol) }))),
      endpoints: maybe(
        Array.from({ length: Math.floor(r() * 5) }, () => ({
          addresses: maybe([maybe(v6 ? ip6() : ip4())]),
          conditions: maybe({ ready: maybe(r() < 0.8), serving: maybe(true), terminating: maybe(r() < 0.2) }),
          nodeName: maybe(pick(['node-a', 'node-b'])),
          hints: r() < 0.2 ? { forZones: [{ name: maybe('zone-a') }] } : undefined,
        })),
      ),
    };
  });
  return { service, slices };
}

const TOKEN =
  /^(-A|-d|-s|-p|-m|-j|!|--dport|--to-ports|--to-destination|--comment|--reject-with|--dst-type|--ctstate|tcp|udp|comment|addrtype|conntrack|NEW|LOCAL|REDIRECT|DNAT|REJECT|ACCEPT|RETURN|DROP|tcp-reset|icmp-port-unreachable|icmp6-port-unreachable|KUP-[A-Z-]+)$/;

function checkRule(line: string): string | null {
  if (/^(\*nat|\*filter|COMMIT)$/.test(line) || /^:KUP-[A-Z-]+ - \[0:0\]$/.test(line)) return null;
  if (!line.startsWith('-A KUP-')) return `unexpected line: ${line}`;
  const tokens = line.split(' ');
  for (let i = 0; i < tokens.length; i++) {
    const tok = tokens[i]!;
    const prev = tokens[i - 1];
    if (TOKEN.test(tok)) continue;
    if (prev === '--comment' && /^[A-Za-z0-9_.:/-]{1,256}$/.test(tok)) continue;
    if ((prev === '--dport' || prev === '--to-ports') && /^\d+$/.test(tok) && +tok >= 1 && +tok <= 65535) continue;
    if (prev === '-d' || prev === '-s') {
      const [ip, bits] = tok.split('/');
      if (isIP(ip!) !== 0 && /^\d{1,3}$/.test(bits ?? '')) continue;
    }
    if (prev === '--to-destination') {
      const m = /^(?:\[([0-9a-f:]+)\]|([0-9.]+)):(\d+)$/.exec(tok);
      if (m !== null && isIP(m[1] ?? m[2]!) !== 0 && +m[3]! >= 1 && +m[3]! <= 65535) continue;
    }
    return `bad token ${JSON.stringify(tok)} in: ${line}`;
  }
  return null;
}

t.test('generated objects: no throw, only valid rules', async (t) => {
  const seed = Number(process.env['KUP_FUZZ_SEED'] ?? 20261124);
  const r = rng(seed);
  const tracker = new ChangeTracker({ nodeName: 'node-a' });
  let objects = 0;
  let warnings = 0;
  let rules = 0;
  const problems: string[] = [];
  for (let round = 0; round < 20; round++) {
    const services: unknown[] = [];
    const slices: unknown[] = [];
    for (let i = 0; i < 100; i++) {
      const g = gen(r);
      services.push(g.service);
      slices.push(...g.slices);
    }
    // Whole objects that are not even objects, too.
    services.push(null, 42, 'svc', []);
    objects += services.length + slices.length;
    tracker.replaceAll({ services: services as never, slices: slices as never });
    const flushed = tracker.flush();
    warnings += flushed.warnings.length;
    for (const w of flushed.warnings) if (w.includes('\n')) problems.push(`multi-line warning: ${JSON.stringify(w)}`);
    const proxyPorts = new Map<ServicePortKey, ProxyPortNumbers>();
    let p = 20000;
    for (const sp of tracker.current().values())
      proxyPorts.set(sp.key, needsExternalListener(sp) ? { internal: p++, external: p++ } : { internal: p++ });
    for (const bindAddress of ['0.0.0.0', '127.0.0.1', '::']) {
      const out = renderRules({
        table: tracker.current(),
        proxyPorts,
        bindAddress,
        hostIPs: { ipv4: '192.0.2.2', ipv6: '2001:db8::2' },
        commentSupported: true,
      });
      for (const line of `${out.ipv4}\n${out.ipv6}`.split('\n').filter((l) => l !== '')) {
        rules++;
        const bad = checkRule(line);
        if (bad !== null) problems.push(bad);
      }
    }
  }
  t.comment(
    `seed ${seed}: ${objects} objects, ${tracker.current().size} service ports in the last round, ${warnings} warnings, ${rules} rule lines`,
  );
  t.ok(objects > 2000, 'a few thousand objects');
  t.ok(rules > 1000, 'many rules rendered');
  t.same(problems.slice(0, 5), [], 'every rule line is made of valid tokens only');
});

t.test('a slice with 10,000 endpoints is applied whole', async (t) => {
  const tracker = new ChangeTracker({ nodeName: 'node-a' });
  const endpoints = Array.from({ length: 10_000 }, (_, i) => ({ addresses: [`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`] }));
  tracker.replaceAll({
    services: [{ metadata: { name: 'big', namespace: 'default' }, spec: { clusterIP: '10.96.0.1', ports: [{ name: 'http', port: 80 }] } }],
    slices: [
      {
        metadata: { name: 'big-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'big' } },
        addressType: 'IPv4',
        ports: [{ name: 'http', port: 8080 }],
        endpoints,
      },
    ],
  });
  const { warnings } = tracker.flush();
  t.same(warnings, []);
  t.equal([...tracker.current().values()][0]!.clusterEndpoints.length, 10_000);
});
