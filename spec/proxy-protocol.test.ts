import t from 'tap';
import { pruneKubeObject } from '../lib/core/kube-prune.js';
import type { Obj } from '../lib/core/object-fields.js';
import { proxyProtocolHeader, PROXY_PROTOCOL_ANNOTATION } from '../lib/core/proxy-protocol.js';
import { translateService } from '../lib/core/translate.js';
import { service } from './support/objects.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const SIG = '0d0a0d0a000d0a515549540a';

t.test('v1: the text lines of haproxy proxy-protocol.txt', async (t) => {
  // Section 2.1's example and its worst cases, byte for byte.
  const conn = { sourceAddress: '192.168.0.1', sourcePort: 56324, destinationAddress: '192.168.0.11', destinationPort: 443 };
  t.equal(proxyProtocolHeader('v1', conn).toString('latin1'), 'PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n');
  const max4 = { sourceAddress: '255.255.255.255', sourcePort: 65535, destinationAddress: '255.255.255.255', destinationPort: 65535 };
  t.equal(proxyProtocolHeader('v1', max4).toString('latin1'), 'PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n');
  const f = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
  const max6 = { sourceAddress: f, sourcePort: 65535, destinationAddress: f, destinationPort: 65535 };
  const line = proxyProtocolHeader('v1', max6);
  t.equal(line.toString('latin1'), `PROXY TCP6 ${f} ${f} 65535 65535\r\n`);
  t.ok(line.length <= 107, `${line.length} bytes: within the spec's 107-byte maximum`);
  const bad = { sourceAddress: 'nonsense', sourcePort: 1, destinationAddress: '10.0.0.1', destinationPort: 2 };
  t.equal(proxyProtocolHeader('v1', bad).toString('latin1'), 'PROXY UNKNOWN\r\n');
});

t.test('an IPv4-mapped IPv6 client (a dual-stack listener) is sent as IPv4', async (t) => {
  const conn = { sourceAddress: '::ffff:127.0.0.2', sourcePort: 40000, destinationAddress: '::ffff:127.0.0.1', destinationPort: 8080 };
  t.equal(proxyProtocolHeader('v1', conn).toString('latin1'), 'PROXY TCP4 127.0.0.2 127.0.0.1 40000 8080\r\n');
  t.same(proxyProtocolHeader('v2', conn), hex(`${SIG} 21 11 000c 7f000002 7f000001 9c40 1f90`));
});

t.test('v2: signature, version/command 0x21, family 0x11 / 0x21, addresses, ports', async (t) => {
  const v4 = { sourceAddress: '192.168.0.1', sourcePort: 56324, destinationAddress: '192.168.0.11', destinationPort: 443 };
  t.same(proxyProtocolHeader('v2', v4), hex(`${SIG} 21 11 000c c0a80001 c0a8000b dc04 01bb`));
  const v6 = { sourceAddress: '2001:db8::1', sourcePort: 56324, destinationAddress: 'fd00::a:b', destinationPort: 443 };
  t.same(
    proxyProtocolHeader('v2', v6),
    hex(`${SIG} 21 21 0024 20010db8000000000000000000000001 fd0000000000000000000000000a000b dc04 01bb`),
  );
  const mixedTail = { sourceAddress: '::ffff:1.2.3.4:5', sourcePort: 1, destinationAddress: '::1', destinationPort: 2 };
  t.equal(proxyProtocolHeader('v2', mixedTail).length, 16, 'an unparseable source: LOCAL, no addresses');
  const tail = { sourceAddress: '64:ff9b::192.0.2.33', sourcePort: 1, destinationAddress: '::1', destinationPort: 2 };
  t.same(proxyProtocolHeader('v2', tail).subarray(16, 32), hex('0064ff9b0000000000000000c0000221'), 'a dotted IPv4 tail');
  const bad = { sourceAddress: '', sourcePort: 0, destinationAddress: '', destinationPort: 0 };
  t.same(proxyProtocolHeader('v2', bad), hex(`${SIG} 20 00 0000`), 'unknown addresses: LOCAL command, UNSPEC family');
});

const ctx = { nodeName: 'node-a', nodeZone: null };

t.test('the annotation: v1/v2 on TCP ports, off for UDP, anything else one warning and off', async (t) => {
  const ports = [
    { name: 'web', port: 80 },
    { name: 'dns', port: 53, protocol: 'UDP' as const },
  ];
  for (const v of ['v1', 'v2'] as const) {
    const r = translateService(
      service({ name: 'pp', clusterIP: '10.96.0.9', ports, annotations: { [PROXY_PROTOCOL_ANNOTATION]: v } }),
      [],
      ctx,
    );
    t.same(
      r.ports.map((p) => [p.protocol, p.proxyProtocol]),
      [
        ['TCP', v],
        ['UDP', null],
      ],
    );
    t.same(r.warnings, []);
  }
  const none = translateService(service({ name: 'plain', clusterIP: '10.96.0.9', ports }), [], ctx);
  t.same(
    none.ports.map((p) => p.proxyProtocol),
    [null, null],
  );
  const bad = translateService(
    service({ name: 'odd', clusterIP: '10.96.0.9', ports, annotations: { [PROXY_PROTOCOL_ANNOTATION]: 'V2 ' } }),
    [],
    ctx,
  );
  t.same(
    bad.ports.map((p) => p.proxyProtocol),
    [null, null],
    'off',
  );
  t.same(
    bad.warnings,
    ['Service default/odd: kup.dev/proxy-protocol "V2 " is not v1 or v2; PROXY protocol off'],
    'one warning naming the Service',
  );
});

t.test('the file source keeps the annotation when it prunes a Service', async (t) => {
  const svc = service({
    name: 'pp',
    clusterIP: '10.96.0.9',
    ports: [{ port: 80 }],
    annotations: { [PROXY_PROTOCOL_ANNOTATION]: 'v2', 'kubectl.kubernetes.io/last-applied-configuration': '{"huge":true}' },
  });
  const pruned = pruneKubeObject(JSON.parse(JSON.stringify(svc)) as Obj);
  t.same((pruned['metadata'] as Obj)['annotations'], { [PROXY_PROTOCOL_ANNOTATION]: 'v2' });
  const plain = pruneKubeObject(JSON.parse(JSON.stringify(service({ name: 'x', clusterIP: '10.96.0.9', ports: [{ port: 80 }] }))) as Obj);
  t.equal((plain['metadata'] as Obj)['annotations'], undefined);
});
