/**
 * NodePort addresses (issue 13 item 6): which node addresses
 * --nodeport-addresses selects, and the NodePort rules rendered for them and
 * for localhost NodePorts, as kube-proxy's iptables mode.
 */
import t from 'tap';
import { cidrContains, isLoopbackIP, resolveNodePortIPs } from '../lib/core/nodeport-addresses.js';
import type { ProxyPortNumbers, ServicePortKey } from '../lib/core/types.js';
import { renderRules, type RenderInput } from '../lib/iptables/render.js';
import { parseRunFlags, RUN_DEFAULTS } from '../lib/cli/options.js';
import { KupError } from '../lib/core/errors.js';
import { endpoint, servicePort, tableOf } from './support/service-fixtures.js';

const LOCAL = ['127.0.0.1', '::1', '10.0.0.5', '10.1.0.5', '192.168.7.2', '2001:db8:1::5', 'fe80::1'];

t.test('CIDR containment', async (t) => {
  t.ok(cidrContains('10.0.0.0/8', '10.1.2.3'));
  t.notOk(cidrContains('10.0.0.0/16', '10.1.2.3'));
  t.ok(cidrContains('10.0.0.5/32', '10.0.0.5'));
  t.ok(cidrContains('0.0.0.0/0', '192.168.7.2'));
  t.notOk(cidrContains('10.0.0.0/8', '2001:db8::1'), 'families never mix');
  t.ok(cidrContains('2001:db8:1::/48', '2001:db8:1::5'));
  t.notOk(cidrContains('2001:db8:2::/48', '2001:db8:1::5'));
  t.ok(cidrContains('::ffff:0:0/96', '::ffff:10.0.0.1'));
  t.ok(isLoopbackIP('127.0.0.1') && isLoopbackIP('127.9.9.9') && isLoopbackIP('::1'));
  t.notOk(isLoopbackIP('10.0.0.1') || isLoopbackIP('::2'));
});

t.test('resolving --nodeport-addresses against the node', async (t) => {
  const primary = { ipv4: '10.0.0.5', ipv6: '2001:db8:1::5' };
  t.equal(resolveNodePortIPs([], LOCAL, primary), null, 'unset: every local address');
  t.equal(resolveNodePortIPs(['10.0.0.0/8', 'all'], LOCAL, primary), null, 'all: every local address');
  t.same(resolveNodePortIPs(['10.0.0.0/16'], LOCAL, primary), { ipv4: ['10.0.0.5'], ipv6: [] });
  t.same(resolveNodePortIPs(['10.0.0.0/8', '2001:db8::/32'], LOCAL, primary), { ipv4: ['10.0.0.5', '10.1.0.5'], ipv6: ['2001:db8:1::5'] });
  t.same(resolveNodePortIPs(['primary'], LOCAL, primary), { ipv4: ['10.0.0.5'], ipv6: ['2001:db8:1::5'] });
  t.same(resolveNodePortIPs(['127.0.0.0/8', '192.168.0.0/16'], LOCAL, primary), { ipv4: ['127.0.0.1', '192.168.7.2'], ipv6: [] });
  t.same(resolveNodePortIPs(['localhost'], LOCAL, primary), { ipv4: ['127.0.0.1'], ipv6: ['::1'] });
  t.same(resolveNodePortIPs(['172.16.0.0/12'], LOCAL, primary), { ipv4: [], ipv6: [] }, 'nothing matches: nowhere');
});

const web = servicePort({ name: 'web', portName: 'http', port: 80, clusterIPs: ['10.96.0.10', 'fd00:96::10'], nodePort: 30080 });
const dns = servicePort({ name: 'dns', portName: 'dns', protocol: 'UDP', port: 53, clusterIPs: ['10.96.0.53'], nodePort: 30053 });
const proxyPorts = new Map<ServicePortKey, ProxyPortNumbers>([
  [web.key, { internal: 40001 }],
  [dns.key, { internal: 40002 }],
]);
const base: RenderInput = {
  table: tableOf([web, dns]),
  proxyPorts,
  bindAddress: '0.0.0.0',
  hostIPs: { ipv4: '10.0.0.5', ipv6: '2001:db8:1::5' },
  commentSupported: false,
};
const chain = (text: string, name: string): string[] => text.split('\n').filter((l) => l.startsWith(`-A ${name} `));

t.test('default: NodePorts at 127.0.0.0/8 for the node, DNATed to loopback; never in PREROUTING; not IPv6', async (t) => {
  const r = renderRules(base);
  t.same(chain(r.ipv4, 'KUP-NODEPORT-HOST'), [
    '-A KUP-NODEPORT-HOST -d 127.0.0.0/8 -p udp -m udp --dport 30053 -j DNAT --to-destination 127.0.0.1:40002',
    '-A KUP-NODEPORT-HOST ! -d 127.0.0.0/8 -p udp -m udp --dport 30053 -m addrtype --dst-type LOCAL -j DNAT --to-destination 10.0.0.5:40002',
    '-A KUP-NODEPORT-HOST -d 127.0.0.0/8 -p tcp -m tcp --dport 30080 -j DNAT --to-destination 127.0.0.1:40001',
    '-A KUP-NODEPORT-HOST ! -d 127.0.0.0/8 -p tcp -m tcp --dport 30080 -m addrtype --dst-type LOCAL -j DNAT --to-destination 10.0.0.5:40001',
  ]);
  t.same(chain(r.ipv4, 'KUP-NODEPORT-CONTAINER'), [
    '-A KUP-NODEPORT-CONTAINER ! -d 127.0.0.0/8 -p udp -m udp --dport 30053 -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 40002',
    '-A KUP-NODEPORT-CONTAINER ! -d 127.0.0.0/8 -p tcp -m tcp --dport 30080 -m addrtype --dst-type LOCAL -j REDIRECT --to-ports 40001',
  ]);
  // dns is single-stack IPv4: no IPv6 NodePort at all (one family per virtual IP).
  t.same(chain(r.ipv6, 'KUP-NODEPORT-HOST'), [
    '-A KUP-NODEPORT-HOST ! -d ::1/128 -p tcp -m tcp --dport 30080 -m addrtype --dst-type LOCAL -j DNAT --to-destination [2001:db8:1::5]:40001',
  ]);
  t.notMatch(r.ipv4 + r.ipv6, /route_localnet|KUBE-FIREWALL/, 'no martian safeguard needed: nothing leaves the node from 127/8');
});

t.test('localhostNodePorts off: loopback excluded as before', async (t) => {
  const r = renderRules({ ...base, localhostNodePorts: false });
  t.notMatch(r.ipv4, /-A KUP-NODEPORT-HOST -d 127/);
  t.equal(chain(r.ipv4, 'KUP-NODEPORT-HOST').length, 2);
});

t.test('a non-wildcard bind: loopback NodePorts DNAT to the bound address', async (t) => {
  const r = renderRules({ ...base, bindAddress: '10.0.0.5' });
  t.match(r.ipv4, /-A KUP-NODEPORT-HOST -d 127\.0\.0\.0\/8 -p tcp -m tcp --dport 30080 -j DNAT --to-destination 10\.0\.0\.5:40001\n/);
});

t.test('nodePortAddresses: one -d rule per selected address instead of addrtype LOCAL', async (t) => {
  const r = renderRules({ ...base, nodePortIPs: { ipv4: ['10.1.0.5'], ipv6: ['2001:db8:1::5'] } });
  t.same(chain(r.ipv4, 'KUP-NODEPORT-CONTAINER'), [
    '-A KUP-NODEPORT-CONTAINER -d 10.1.0.5/32 -p udp -m udp --dport 30053 -j REDIRECT --to-ports 40002',
    '-A KUP-NODEPORT-CONTAINER -d 10.1.0.5/32 -p tcp -m tcp --dport 30080 -j REDIRECT --to-ports 40001',
  ]);
  t.same(chain(r.ipv4, 'KUP-NODEPORT-HOST'), [
    '-A KUP-NODEPORT-HOST -d 10.1.0.5/32 -p udp -m udp --dport 30053 -j DNAT --to-destination 10.0.0.5:40002',
    '-A KUP-NODEPORT-HOST -d 10.1.0.5/32 -p tcp -m tcp --dport 30080 -j DNAT --to-destination 10.0.0.5:40001',
  ]);
  t.notMatch(r.ipv4 + r.ipv6, /addrtype/, 'no other local address accepts them');
  t.notMatch(r.ipv4, /-d 127/, 'no localhost NodePorts unless a loopback address is selected');
  // dns is single-stack IPv4: only web (dual-stack) has IPv6 NodePort rules.
  t.same(chain(r.ipv6, 'KUP-NODEPORT-CONTAINER'), [
    '-A KUP-NODEPORT-CONTAINER -d 2001:db8:1::5/128 -p tcp -m tcp --dport 30080 -j REDIRECT --to-ports 40001',
  ]);
});

t.test('nodePortAddresses selecting loopback: localhost NodePorts at 127.0.0.1 only, IPv4 only, and only with the switch on', async (t) => {
  const nodePortIPs = { ipv4: ['127.0.0.1'], ipv6: ['::1'] };
  const r = renderRules({ ...base, nodePortIPs });
  t.same(chain(r.ipv4, 'KUP-NODEPORT-HOST'), [
    '-A KUP-NODEPORT-HOST -d 127.0.0.1/32 -p udp -m udp --dport 30053 -j DNAT --to-destination 127.0.0.1:40002',
    '-A KUP-NODEPORT-HOST -d 127.0.0.1/32 -p tcp -m tcp --dport 30080 -j DNAT --to-destination 127.0.0.1:40001',
  ]);
  t.same(chain(r.ipv4, 'KUP-NODEPORT-CONTAINER'), [], 'never for traffic arriving on the node');
  t.same(chain(r.ipv6, 'KUP-NODEPORT-HOST'), [], '::1 never (as upstream)');
  t.same(chain(renderRules({ ...base, nodePortIPs, localhostNodePorts: false }).ipv4, 'KUP-NODEPORT-HOST'), []);
});

t.test(
  'both policies Local: localhost and node traffic to the NodePort use the all-endpoints listener; pods short-circuit per selected address',
  async (t) => {
    // One endpoint here, one elsewhere: the three listeners balance over different sets.
    const both = servicePort({
      name: 'both',
      port: 80,
      clusterIPs: ['10.96.0.80'],
      nodePort: 30081,
      internalTrafficPolicy: 'Local',
      externalTrafficPolicy: 'Local',
      endpoints: [endpoint('10.244.0.5', 8080, true), endpoint('10.244.1.5', 8080, false)],
    });
    const input: RenderInput = {
      ...base,
      table: tableOf([both]),
      proxyPorts: new Map([[both.key, { internal: 41001, external: 41002, cluster: 41003 }]]),
      localDetector: { kind: 'cidr', cidrs: ['10.244.0.0/16'] },
    };
    const all = renderRules(input);
    t.same(chain(all.ipv4, 'KUP-NODEPORT-HOST'), [
      '-A KUP-NODEPORT-HOST -d 127.0.0.0/8 -p tcp -m tcp --dport 30081 -j DNAT --to-destination 127.0.0.1:41003',
      '-A KUP-NODEPORT-HOST ! -d 127.0.0.0/8 -p tcp -m tcp --dport 30081 -m addrtype --dst-type LOCAL -j DNAT --to-destination 10.0.0.5:41003',
    ]);
    const selected = renderRules({ ...input, nodePortIPs: { ipv4: ['127.0.0.1', '10.1.0.5'], ipv6: [] } });
    t.same(chain(selected.ipv4, 'KUP-NODEPORT-HOST'), [
      '-A KUP-NODEPORT-HOST -d 127.0.0.1/32 -p tcp -m tcp --dport 30081 -j DNAT --to-destination 127.0.0.1:41003',
      '-A KUP-NODEPORT-HOST -d 10.1.0.5/32 -p tcp -m tcp --dport 30081 -j DNAT --to-destination 10.0.0.5:41003',
    ]);
    t.same(chain(selected.ipv4, 'KUP-NODEPORT-CONTAINER'), [
      '-A KUP-NODEPORT-CONTAINER -s 10.244.0.0/16 -d 10.1.0.5/32 -p tcp -m tcp --dport 30081 -j REDIRECT --to-ports 41003',
      '-A KUP-NODEPORT-CONTAINER -d 10.1.0.5/32 -p tcp -m tcp --dport 30081 -j REDIRECT --to-ports 41002',
    ]);
  },
);

t.test('flags: --iptables-localhost-nodeports and --nodeport-addresses', async (t) => {
  const parse = (extra: Record<string, string | boolean>) => parseRunFlags({ ...RUN_DEFAULTS, iptables: true, ...extra });
  t.equal(parse({}).localhostNodePorts, true, 'on by default, as kube-proxy iptables mode');
  t.equal(parse({ iptablesLocalhostNodeports: 'false' }).localhostNodePorts, false);
  t.equal(parse({ iptablesLocalhostNodeports: true }).localhostNodePorts, true, 'a bare flag is true');
  t.throws(() => parse({ iptablesLocalhostNodeports: 'maybe' }), {
    code: 'KUP_BAD_FLAG',
    message: '--iptables-localhost-nodeports: "maybe" is neither true nor false',
  });
  t.same(parse({ nodeportAddresses: '10.0.0.0/8, primary' }).nodePortAddresses, ['10.0.0.0/8', 'primary']);
  try {
    parse({ nodeportAddresses: '10.0.0.0/33' });
    t.fail('an invalid CIDR must be refused');
  } catch (err) {
    t.ok(err instanceof KupError);
    t.match(err, { code: 'KUP_BAD_FLAG', message: '--nodeport-addresses: "10.0.0.0/33" is neither a CIDR nor primary, localhost or all' });
  }
});
