/**
 * The local-traffic detector (--detect-local-mode): which sources or input
 * interfaces count as this node's pods, CIDR intersection with
 * loadBalancerSourceRanges, and the one log line saying what is detected.
 */
import t from 'tap';
import { PassThrough } from 'node:stream';
import { cidrContainsAddress, intersectCidrs, localTrafficDetector, type DetectorInput } from '../lib/core/local-detector.js';
import { LocalDetection } from '../lib/runtime/local-detection.js';
import { createLogger } from '../lib/log.js';

const input = (over: Partial<DetectorInput>): DetectorInput => ({
  mode: '',
  clusterCIDRs: [],
  nodePodCIDRs: null,
  bridgeInterface: '',
  interfaceNamePrefix: '',
  ...over,
});

t.test('each mode gives its detector, or none with the reason', async (t) => {
  t.same(localTrafficDetector(input({})), { detector: null, reason: null }, 'nothing asked: nothing detected, nothing to say');
  t.same(localTrafficDetector(input({ clusterCIDRs: ['10.244.0.0/16', 'fd00:244::/56'] })).detector, {
    kind: 'cidr',
    cidrs: ['10.244.0.0/16', 'fd00:244::/56'],
  });
  t.match(localTrafficDetector(input({ mode: 'ClusterCIDR' })).reason, /ClusterCIDR without --cluster-cidr/);
  t.match(localTrafficDetector(input({ mode: 'NodeCIDR' })).reason, /Node object is not known/);
  t.match(localTrafficDetector(input({ mode: 'NodeCIDR', nodePodCIDRs: [] })).reason, /no spec\.podCIDRs/);
  t.same(localTrafficDetector(input({ mode: 'NodeCIDR', nodePodCIDRs: ['10.244.3.0/24'] })).detector, {
    kind: 'cidr',
    cidrs: ['10.244.3.0/24'],
  });
  t.same(localTrafficDetector(input({ mode: 'BridgeInterface', bridgeInterface: 'cbr0' })).detector, { kind: 'interface', name: 'cbr0' });
  t.same(localTrafficDetector(input({ mode: 'InterfaceNamePrefix', interfaceNamePrefix: 'veth' })).detector, {
    kind: 'interface',
    name: 'veth+',
  });
  const hostile = localTrafficDetector(input({ mode: 'BridgeInterface', bridgeInterface: 'br0 -j ACCEPT' }));
  t.equal(hostile.detector, null, 'a name that could reach rule text is refused');
  t.match(hostile.reason, /is not an interface name/);
});

t.test('CIDR arithmetic, both families', async (t) => {
  t.ok(cidrContainsAddress('10.0.0.0/8', '10.1.2.3', 'ipv4'));
  t.notOk(cidrContainsAddress('10.0.0.0/8', '11.0.0.1', 'ipv4'));
  t.ok(cidrContainsAddress('2001:db8::/32', '2001:db8:ffff::1', 'ipv6'));
  t.notOk(cidrContainsAddress('2001:db8::/32', '2001:db9::1', 'ipv6'));
  t.ok(cidrContainsAddress('::ffff:0:0/96', '::ffff:10.0.0.1', 'ipv6'), 'an embedded IPv4 tail');
  t.same(intersectCidrs(['10.244.0.0/16'], '10.244.3.0/24', 'ipv4'), ['10.244.3.0/24'], 'the narrower range');
  t.same(intersectCidrs(['10.244.3.0/24'], '10.0.0.0/8', 'ipv4'), ['10.244.3.0/24'], 'the narrower pod CIDR');
  t.same(intersectCidrs(['10.244.0.0/16'], '192.168.0.0/16', 'ipv4'), [], 'disjoint: no pod source is in range');
  t.same(intersectCidrs(['fd00:244::/48'], 'fd00:244:0:7::/64', 'ipv6'), ['fd00:244:0:7::/64']);
});

t.test('NodeCIDR follows the Node and says so once per change', async (t) => {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d: Buffer) => (text += d.toString()));
  const d = new LocalDetection(
    { clusterCIDRs: [], detectLocal: { mode: 'NodeCIDR', bridgeInterface: '', interfaceNamePrefix: '' } },
    createLogger('info', out),
  );
  d.report();
  d.report();
  await new Promise((r) => setImmediate(r));
  const lines = (): string[] => text.split('\n').filter((l) => l.includes('detect') || l.includes('detector'));
  t.equal(lines().length, 1, 'one line while the Node is unknown');
  t.match(lines()[0], /NodeCIDR: this node's Node object is not known; pod traffic is not told apart/);
  t.equal(d.current(), null);
  t.equal(d.observeNode({ spec: { podCIDRs: ['10.244.5.0/24'] } }), true, 'the Node arriving changes the rules');
  t.same(d.current(), { kind: 'cidr', cidrs: ['10.244.5.0/24'] });
  t.equal(d.observeNode({ spec: { podCIDRs: ['10.244.5.0/24'] } }), false, 'the same Node again changes nothing');
  await new Promise((r) => setImmediate(r));
  t.equal(lines().length, 2);
  t.match(lines()[1], /local-traffic detector: sources 10\.244\.5\.0\/24/);
});
