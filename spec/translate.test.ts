import t from 'tap';
import { ChangeTracker } from '../lib/core/change-tracker.js';
import { translateService } from '../lib/core/translate.js';
import { externalEndpoints, internalEndpoints, needsExternalListener } from '../lib/core/types.js';
import { endpointSlice, service } from './support/objects.js';

const ctx = { nodeName: 'node-a', nodeZone: 'zone-a' };

t.test('services that are not proxied', async (t) => {
  const headless = service({ name: 'h', clusterIP: 'None', ports: [{ port: 80 }] });
  t.equal(translateService(headless, [], ctx).skipped, 'headless (clusterIP None)');
  const ext = service({ name: 'e', type: 'ExternalName', externalName: 'example.org', ports: [{ port: 80 }] });
  t.equal(translateService(ext, [], ctx).skipped, 'type ExternalName');
  const other = service({ name: 'o', clusterIP: '10.96.0.10', ports: [{ port: 80 }], proxyName: 'cilium' });
  t.match(translateService(other, [], ctx).skipped, /service-proxy-name/);
  t.equal(translateService(other, [], ctx).warnings.length, 0, 'skipping a service meant for another proxy is not a warning');
});

t.test('ports, named targetPorts and endpoint merging', async (t) => {
  const svc = service({
    name: 'web',
    clusterIP: '10.96.0.10',
    ports: [
      { name: 'http', port: 80, targetPort: 'web' },
      { name: 'dns', port: 53, protocol: 'UDP' },
      { name: 'sctp', port: 99, protocol: 'SCTP' },
    ],
  });
  const slices = [
    endpointSlice({
      service: 'web',
      name: 'web-1',
      ports: [
        { name: 'http', port: 8080 },
        { name: 'dns', port: 5353, protocol: 'UDP' },
      ],
      endpoints: [{ ip: '10.0.0.1' }, { ip: '10.0.0.2', ready: false, serving: true, terminating: true }],
    }),
    // The same endpoint in a second slice, not terminating there: that entry wins.
    endpointSlice({
      service: 'web',
      name: 'web-2',
      ports: [{ name: 'http', port: 8080 }],
      endpoints: [{ ip: '10.0.0.2' }, { ip: '10.0.0.3' }],
    }),
  ];
  const r = translateService(svc, slices, ctx);
  t.same(
    r.ports.map((p) => p.key),
    ['default/web:http/TCP', 'default/web:dns/UDP'],
  );
  t.match(r.warnings, [/port "sctp": SCTP is not supported/]);
  const http = r.ports[0]!;
  t.same(
    http.endpoints.map((e) => `${e.ip}:${e.port}:${e.terminating}`),
    ['10.0.0.1:8080:false', '10.0.0.2:8080:false', '10.0.0.3:8080:false'],
    'the named targetPort resolves through the slice port name; duplicates merged',
  );
  t.same(
    r.ports[1]!.endpoints.map((e) => `${e.ip}:${e.port}`),
    ['10.0.0.1:5353', '10.0.0.2:5353'],
  );
});

t.test('ready endpoints, else serving-and-terminating ones', async (t) => {
  const svc = service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] });
  const r = translateService(
    svc,
    [
      endpointSlice({
        service: 'web',
        name: 'w',
        ports: [{ name: 'http', port: 8080 }],
        endpoints: [
          { ip: '10.0.0.1', ready: false, serving: true, terminating: true },
          { ip: '10.0.0.2', ready: false, serving: false, terminating: true },
          { ip: '10.0.0.3', ready: false, serving: false, terminating: false },
        ],
      }),
    ],
    ctx,
  );
  t.same(
    r.ports[0]!.clusterEndpoints.map((e) => e.ip),
    ['10.0.0.1'],
    'only the serving terminating one is used',
  );
  const r2 = translateService(
    svc,
    [
      endpointSlice({
        service: 'web',
        name: 'w',
        ports: [{ name: 'http', port: 8080 }],
        endpoints: [{ ip: '10.0.0.1', ready: false, serving: true, terminating: true }, { ip: '10.0.0.4' }],
      }),
    ],
    ctx,
  );
  t.same(
    r2.ports[0]!.clusterEndpoints.map((e) => e.ip),
    ['10.0.0.4'],
    'a ready endpoint takes precedence',
  );
});

t.test('nil conditions default as upstream: ready and serving true, terminating false (issue 13 item 8)', async (t) => {
  // endpointslicecache.go: Serving: Conditions.Serving == nil || *Conditions.Serving; a nil
  // serving is never taken from ready.
  const svc = service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] });
  const translate = (endpoints: Parameters<typeof endpointSlice>[0]['endpoints']) =>
    translateService(svc, [endpointSlice({ service: 'web', name: 'w', ports: [{ name: 'http', port: 8080 }], endpoints })], ctx).ports[0]!;
  const terminating = translate([{ ip: '10.0.0.1', ready: false, terminating: true }]);
  t.same(
    terminating.endpoints.map((e) => [e.ip, e.ready, e.serving, e.terminating]),
    [['10.0.0.1', false, true, true]],
    'ready false, serving nil: serving is true',
  );
  t.same(
    terminating.clusterEndpoints.map((e) => e.ip),
    ['10.0.0.1'],
    'an unready terminating endpoint with nil serving is used as the serving-terminating fallback',
  );
  const bare = translate([{ ip: '10.0.0.2' }]);
  t.same(
    bare.endpoints.map((e) => [e.ready, e.serving, e.terminating]),
    [[true, true, false]],
    'no conditions at all: ready, serving, not terminating',
  );
  t.same(
    bare.clusterEndpoints.map((e) => e.ip),
    ['10.0.0.2'],
  );
  const unreadyNotTerminating = translate([{ ip: '10.0.0.3', ready: false }]);
  t.same(
    unreadyNotTerminating.clusterEndpoints.map((e) => e.ip),
    [],
    'ready false, serving and terminating nil: serving but not terminating, so not used',
  );
});

t.test('traffic policies and this node', async (t) => {
  const eps = [
    { ip: '10.0.0.1', nodeName: 'node-a' },
    { ip: '10.0.0.2', nodeName: 'node-b' },
  ];
  const local = service({
    name: 'web',
    clusterIP: '10.96.0.10',
    ports: [{ name: 'http', port: 80, nodePort: 30080 }],
    type: 'NodePort',
    internalTrafficPolicy: 'Cluster',
    externalTrafficPolicy: 'Local',
  });
  const sp = translateService(
    local,
    [endpointSlice({ service: 'web', name: 'w', ports: [{ name: 'http', port: 8080 }], endpoints: eps })],
    ctx,
  ).ports[0]!;
  t.same(
    internalEndpoints(sp).map((e) => e.ip),
    ['10.0.0.1', '10.0.0.2'],
  );
  t.same(
    externalEndpoints(sp).map((e) => e.ip),
    ['10.0.0.1'],
    'externalTrafficPolicy Local: this node only',
  );
  t.equal(needsExternalListener(sp), true, 'different sets for internal and external traffic need two listeners');
  const itp = service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }], internalTrafficPolicy: 'Local' });
  const sp2 = translateService(
    itp,
    [endpointSlice({ service: 'web', name: 'w', ports: [{ name: 'http', port: 8080 }], endpoints: eps })],
    ctx,
  ).ports[0]!;
  t.same(
    internalEndpoints(sp2).map((e) => e.ip),
    ['10.0.0.1'],
    'internalTrafficPolicy Local',
  );
  t.equal(needsExternalListener(sp2), false, 'a ClusterIP service has no external traffic');
});

t.test('type ClusterIP with externalIPs honours externalTrafficPolicy Local (issue 13 item 5)', async (t) => {
  // Upstream ExternalPolicyLocal: ExternallyAccessible counts a ClusterIP Service with externalIPs.
  const slices = [
    endpointSlice({
      service: 'web',
      name: 'w',
      ports: [{ name: 'http', port: 8080 }],
      endpoints: [
        { ip: '10.0.0.1', nodeName: 'node-a' },
        { ip: '10.0.0.2', nodeName: 'node-b' },
      ],
    }),
  ];
  const withIPs = translateService(
    service({
      name: 'web',
      clusterIP: '10.96.0.10',
      externalIPs: ['203.0.113.5'],
      externalTrafficPolicy: 'Local',
      ports: [{ name: 'http', port: 80 }],
    }),
    slices,
    ctx,
  );
  t.same(withIPs.warnings, []);
  const sp = withIPs.ports[0]!;
  t.equal(sp.externalTrafficPolicy, 'Local');
  t.same(
    externalEndpoints(sp).map((e) => e.ip),
    ['10.0.0.1'],
    "traffic to the externalIP goes only to this node's endpoint",
  );
  t.same(
    internalEndpoints(sp).map((e) => e.ip),
    ['10.0.0.1', '10.0.0.2'],
    'ClusterIP traffic still goes to all',
  );
  t.equal(needsExternalListener(sp), true, 'the externalIP gets its own listener');
  t.equal(sp.healthCheckNodePort, 0, 'no health check node port: only LoadBalancer Services have one');

  // Without externalIPs the Service is not externally accessible and eTP is ignored.
  const plain = service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] });
  plain.spec!.externalTrafficPolicy = 'Local';
  const sp2 = translateService(plain, slices, ctx).ports[0]!;
  t.equal(sp2.externalTrafficPolicy, 'Cluster');
  t.equal(needsExternalListener(sp2), false);
});

t.test('topology hints are used only when every ready endpoint has them', async (t) => {
  const svc = service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] });
  const hinted = translateService(
    svc,
    [
      endpointSlice({
        service: 'web',
        name: 'w',
        ports: [{ name: 'http', port: 8080 }],
        endpoints: [
          { ip: '10.0.0.1', hints: ['zone-a'] },
          { ip: '10.0.0.2', hints: ['zone-b'] },
        ],
      }),
    ],
    ctx,
  ).ports[0]!;
  t.equal(hinted.usesTopologyHints, true);
  t.same(
    hinted.clusterEndpoints.map((e) => e.ip),
    ['10.0.0.1'],
  );
  const partial = translateService(
    svc,
    [
      endpointSlice({
        service: 'web',
        name: 'w',
        ports: [{ name: 'http', port: 8080 }],
        endpoints: [{ ip: '10.0.0.1', hints: ['zone-a'] }, { ip: '10.0.0.2' }],
      }),
    ],
    ctx,
  ).ports[0]!;
  t.equal(partial.usesTopologyHints, false);
  t.equal(partial.clusterEndpoints.length, 2);
});

t.test('PreferSameNode: forNodes hints take precedence over zone hints (issue 13 item 7, upstream TestCategorizeEndpoints)', async (t) => {
  // Cases transcribed from kubernetes/kubernetes pkg/proxy/topology_test.go TestCategorizeEndpoints
  // (the ones with node hints); this node is node-1 in zone-a, as there.
  const node1 = { nodeName: 'node-1', nodeZone: 'zone-a' };
  const svc = service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] });
  type EpIn = Parameters<typeof endpointSlice>[0]['endpoints'][number];
  const categorize = (endpoints: EpIn[], c: { nodeName: string; nodeZone: string | null } = node1) =>
    translateService(svc, [endpointSlice({ service: 'web', name: 'w', ports: [{ name: 'http', port: 80 }], endpoints })], c).ports[0]!;
  const hinted: EpIn[] = [
    { ip: '10.1.2.3', hints: ['zone-a'], nodeHints: ['node-1'] },
    { ip: '10.1.2.4', hints: ['zone-b'], nodeHints: ['node-2'] },
    { ip: '10.1.2.5', hints: ['zone-c'], nodeHints: ['node-3'] },
    { ip: '10.1.2.6', hints: ['zone-a'], nodeHints: ['node-4'] },
  ];

  t.test('upstream "PreferSameNode available"', async (t) => {
    const sp = categorize(hinted);
    t.same(
      sp.clusterEndpoints.map((e) => e.ip),
      ['10.1.2.3'],
      'only the endpoint hinted for this node',
    );
    t.equal(sp.topologyMode, 'PreferSameNode');
    t.equal(sp.usesTopologyHints, true);
  });

  t.test('upstream "PreferSameNode ignored if some endpoints unhinted"', async (t) => {
    const sp = categorize(hinted.map((e) => (e.ip === '10.1.2.5' ? { ip: e.ip, hints: e.hints! } : e)));
    t.same(
      sp.clusterEndpoints.map((e) => e.ip),
      ['10.1.2.3', '10.1.2.6'],
      'an endpoint without a node hint: the zone hints are used',
    );
    t.equal(sp.topologyMode, 'PreferSameZone');
  });

  t.test('upstream "PreferSameNode falls back to same-zone when no endpoint for node"', async (t) => {
    const sp = categorize(hinted.map((e) => (e.ip === '10.1.2.3' ? { ...e, nodeHints: ['node-5'] } : e)));
    t.same(
      sp.clusterEndpoints.map((e) => e.ip),
      ['10.1.2.3', '10.1.2.6'],
      'no endpoint names node-1: the zone hints are used',
    );
    t.equal(sp.topologyMode, 'PreferSameZone');
  });

  t.test('node hints alone, node without a zone label', async (t) => {
    const sp = categorize(
      hinted.map((e) => ({ ip: e.ip, nodeHints: e.nodeHints! })),
      { nodeName: 'node-1', nodeZone: null },
    );
    t.same(
      sp.clusterEndpoints.map((e) => e.ip),
      ['10.1.2.3'],
      'node hints do not need a zone',
    );
  });

  t.test('node hints, unready endpoint hinted for this node', async (t) => {
    // topologyModeFromHints looks at ready endpoints only: the hint for node-1 on an
    // unready endpoint does not count, so the zone hints decide.
    const sp = categorize(hinted.map((e) => (e.ip === '10.1.2.3' ? { ...e, ready: false } : e)));
    t.same(
      sp.clusterEndpoints.map((e) => e.ip),
      ['10.1.2.6'],
    );
    t.equal(sp.topologyMode, 'PreferSameZone');
  });
});

t.test('dual-stack, externalIPs, LoadBalancer IPs and affinity', async (t) => {
  const svc = service({
    name: 'web',
    ports: [{ name: 'http', port: 80, nodePort: 30080 }],
    type: 'LoadBalancer',
    clusterIPs: ['10.96.0.10', 'fd00::10'],
    externalIPs: ['203.0.113.5', 'not-an-ip'],
    loadBalancerSourceRanges: ['192.0.2.0/24', '10.0.0.0/99'],
    sessionAffinity: 'ClientIP',
    externalTrafficPolicy: 'Local',
    healthCheckNodePort: 32000,
  });
  // ClientIP with no timeout, as a hand-written manifest has it: the translator supplies the default.
  delete svc.spec!.sessionAffinityConfig;
  svc.status = {
    loadBalancer: { ingress: [{ ip: '198.51.100.7' }, { ip: '198.51.100.8', ipMode: 'Proxy' }, { hostname: 'lb.example' }] },
  };
  const r = translateService(
    svc,
    [
      endpointSlice({ service: 'web', name: 'w4', ports: [{ name: 'http', port: 8080 }], endpoints: [{ ip: '10.0.0.1' }] }),
      endpointSlice({
        service: 'web',
        name: 'w6',
        ports: [{ name: 'http', port: 8080 }],
        endpoints: [{ ip: 'fd00::1' }, { ip: '10.0.0.9' }],
        addressType: 'IPv6',
      }),
    ],
    ctx,
  );
  const sp = r.ports[0]!;
  t.same(sp.clusterIPs, ['10.96.0.10', 'fd00::10']);
  t.same(sp.externalIPs, ['203.0.113.5']);
  t.same(sp.loadBalancerIPs, ['198.51.100.7'], 'ipMode Proxy and hostnames are not VIPs');
  t.same(sp.loadBalancerSourceRanges, ['192.0.2.0/24']);
  t.equal(sp.affinityTimeoutSeconds, 10800, 'the default ClientIP timeout');
  t.equal(sp.healthCheckNodePort, 32000);
  t.same(
    sp.endpoints.map((e) => e.ip),
    ['10.0.0.1', 'fd00::1'],
    'an IPv4 address in an IPv6 slice is refused',
  );
  t.match(
    r.warnings.join('\n'),
    /externalIP "not-an-ip".*\n.*loadBalancerSourceRange "10.0.0.0\/99".*\n.*1 endpoint\(s\) without a valid IPv6 address/,
  );
});

t.test('malformed objects: one warning each, never a throw', async (t) => {
  const bad = [
    { metadata: { name: 'x' } },
    { metadata: { name: 'Bad Name; $(rm -rf /)' }, spec: { clusterIP: '10.0.0.1', ports: [{ port: 80 }] } },
    {
      metadata: { name: 'p', namespace: 'default' },
      spec: {
        clusterIP: '10.0.0.1',
        ports: [
          { port: 0 },
          { port: 65536 },
          { port: '80' },
          'x',
          { name: 'a', port: 1 },
          { name: 'a', port: 2 },
          { port: 5, protocol: 'ICMP' },
        ],
      },
    },
    { metadata: { name: 'q' }, spec: { clusterIP: '999.1.1.1', ports: [{ port: 80 }] } },
    {
      metadata: { name: 'r' },
      spec: {
        clusterIP: '10.0.0.1',
        ports: [{ port: 80 }],
        sessionAffinity: 'ClientIP',
        sessionAffinityConfig: { clientIP: { timeoutSeconds: 999999 } },
      },
    },
    null,
    42,
  ];
  const lines: string[] = [];
  for (const b of bad) {
    const r = translateService(b as never, [], ctx);
    lines.push(...r.warnings);
  }
  t.match(lines, [
    /spec is missing/,
    /metadata.name "Bad Name; \$\(rm -rf \/\)" is not a valid name/,
    /port "0": port 0 is not a number/,
    /port "65536": port 65536/,
    /port "80": port "80" is not a number/,
    /a port entry is not an object/,
    /port "a": duplicate port name/,
    /unknown protocol "ICMP"/,
    /clusterIP "999.1.1.1" is not a valid IP/,
    /no valid clusterIP; skipped/,
    /timeoutSeconds 999999 is not from 1 to 86400; using 10800/,
    /metadata.name is missing/,
    /metadata.name is missing/,
  ]);
  const ok = translateService(bad[2] as never, [], ctx);
  t.same(
    ok.ports.map((p) => p.key),
    ['default/p:a/TCP'],
    'the good port of a partly bad service is kept',
  );
});

t.test('change tracker: only changed services are retranslated and diffed', async (t) => {
  const tr = new ChangeTracker({ nodeName: 'node-a' });
  const a = service({ name: 'a', clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80 }] });
  const b = service({ name: 'b', clusterIP: '10.96.0.11', ports: [{ name: 'http', port: 80 }] });
  tr.replaceAll({
    services: [a, b],
    slices: [endpointSlice({ service: 'a', name: 'a1', ports: [{ name: 'http', port: 8080 }], endpoints: [{ ip: '10.0.0.1' }] })],
  });
  const first = tr.flush();
  t.same(first.diff.added.map((s) => s.key).sort(), ['default/a:http/TCP', 'default/b:http/TCP']);
  t.equal(first.servicesChanged, 2);

  // Same objects again: nothing pending.
  tr.replaceAll({
    services: [a, b],
    slices: [endpointSlice({ service: 'a', name: 'a1', ports: [{ name: 'http', port: 8080 }], endpoints: [{ ip: '10.0.0.1' }] })],
  });
  t.equal(tr.hasPending(), false, 'an identical reload changes nothing');

  tr.applySlice(
    endpointSlice({ service: 'a', name: 'a1', ports: [{ name: 'http', port: 8080 }], endpoints: [{ ip: '10.0.0.1' }, { ip: '10.0.0.2' }] }),
  );
  const second = tr.flush();
  t.equal(second.servicesChanged, 1, 'only service a was retranslated');
  t.same(
    second.diff.updated.map((u) => u.next.key),
    ['default/a:http/TCP'],
  );
  t.same(
    second.diff.updated[0]!.next.endpoints.map((e) => e.ip),
    ['10.0.0.1', '10.0.0.2'],
  );

  tr.deleteService('default', 'b');
  const third = tr.flush();
  t.same(
    third.diff.removed.map((s) => s.key),
    ['default/b:http/TCP'],
  );
  t.equal(tr.current().size, 1);

  // A slice that arrives before its service is applied once the service comes.
  tr.applySlice(endpointSlice({ service: 'c', name: 'c1', ports: [{ name: 'http', port: 9090 }], endpoints: [{ ip: '10.0.0.9' }] }));
  tr.flush();
  tr.applyService(service({ name: 'c', clusterIP: '10.96.0.12', ports: [{ name: 'http', port: 80 }] }));
  const fourth = tr.flush();
  t.same(
    fourth.diff.added[0]!.endpoints.map((e) => e.ip),
    ['10.0.0.9'],
  );
  // A slice whose Service does not exist is named once; a port name the slices lack is named too.
  tr.applySlice(
    endpointSlice({ service: 'ghost', name: 'ghost-1', ports: [{ name: 'http', port: 9090 }], endpoints: [{ ip: '10.0.0.5' }] }),
  );
  t.match(tr.flush().warnings, [/EndpointSlice default\/ghost-1: Service default\/ghost does not exist/]);
  tr.applySlice(
    endpointSlice({ service: 'ghost', name: 'ghost-1', ports: [{ name: 'http', port: 9091 }], endpoints: [{ ip: '10.0.0.5' }] }),
  );
  t.same(tr.flush().warnings, [], 'not repeated while it stays an orphan');
  tr.applyService(service({ name: 'ghost', clusterIP: '10.96.0.13', ports: [{ name: 'web', port: 80 }] }));
  const named = tr.flush();
  t.match(named.warnings, [/Service default\/ghost port "web": no TCP port named "web" in the Service's EndpointSlices/]);
  t.same(named.diff.added[0]!.endpoints, [], 'no endpoints for the unmatched port');
  t.equal(tr.counters.serviceChangesTotal - 1, 4, 'a, b, the deletion of b, c: the identical reload is not a change');
});

t.test('change tracker: objects from an API server are compared by resourceVersion', async (t) => {
  const tr = new ChangeTracker({ nodeName: 'node-a', sameObjectBy: 'resourceVersion' });
  const v = (rv: string, port: number) => {
    const s = service({ name: 'a', clusterIP: '10.96.0.10', ports: [{ name: 'http', port }] });
    (s.metadata as { resourceVersion?: string }).resourceVersion = rv;
    return s;
  };
  tr.applyService(v('10', 80));
  tr.flush();
  tr.applyService(v('10', 80));
  t.equal(tr.hasPending(), false, 'the same resourceVersion is the same object');
  tr.applyService(v('11', 81));
  t.equal(tr.hasPending(), true, 'a new resourceVersion is a change');
  t.same(
    tr.flush().diff.updated.map((u) => [u.prev.port, u.next.port]),
    [[80, 81]],
  );
  const byContent = new ChangeTracker({ nodeName: 'node-a' });
  byContent.applyService(v('10', 80));
  byContent.flush();
  byContent.applyService(v('10', 82));
  t.equal(byContent.hasPending(), true, 'a file edited without touching resourceVersion still counts (content mode)');
});
