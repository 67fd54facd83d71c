/**
 * `kup run --config FILE` with kube-proxy's KubeProxyConfiguration, as an
 * operator swapping kube-proxy for kup would pass it: kubeadm's document is
 * accepted as is, every field kup reads takes effect (seen in the
 * `--write-config-to` output and in a running kup), unknown fields only warn,
 * another proxy mode is one line and exit 2, and flags win over the file.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { parse } from 'yaml';
import { finished, runKup, startKup, waitForOutput } from './support/cli.js';
import { loopbackRunArgs, writeObjectsFile } from './support/kup-process.js';
import { service, slicesFor } from './support/objects.js';
import { nameServer, whoAnswers } from './support/net.js';

/**
 * /var/lib/kube-proxy/config.conf as kubeadm v1.33 writes it into the
 * kube-proxy ConfigMap (podSubnet 10.244.0.0/16): every field, mostly zero
 * values that upstream's defaulting fills in.
 */
const KUBEADM_CONFIG = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: ""
mode: ""
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
`;

/** Every field kup reads, set to something other than its default. */
const EVERY_FIELD = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10356
metricsBindAddress: 127.0.0.1:10349
clientConnection:
  kubeconfig: /etc/kup/kubeconfig.conf
  qps: 20
  burst: 40
hostnameOverride: Worker-7
nodePortAddresses: [10.0.0.0/8, primary]
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
detectLocalMode: InterfaceNamePrefix
detectLocal:
  interfaceNamePrefix: veth
iptables:
  syncPeriod: 45s
  minSyncPeriod: 2s
  localhostNodePorts: false
conntrack:
  udpTimeout: 1m30s
portRange: 30000-30009
mode: userspace
showHiddenMetricsForVersion: "1.32"
featureGates:
  SomeGate: true
`;

interface LogLine {
  level: string;
  msg: string;
}

const isWarning = (l: LogLine): boolean => ['warn', 'error', 'fatal'].includes(l.level);

function logLines(text: string): LogLine[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);
}

async function tempDir(t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'kup-kpconfig-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** `kup run --config FILE [flags] --write-config-to OUT`: the run's output and the document written. */
async function effective(t: Test, config: string, flags: string[] = []): Promise<{ doc: Record<string, unknown>; logs: LogLine[] }> {
  const dir = await tempDir(t);
  const file = join(dir, 'config.conf');
  const out = join(dir, 'effective.yaml');
  await writeFile(file, config);
  const r = await runKup(['run', '--config', file, ...flags, '--write-config-to', out]);
  t.equal(r.code, 0, `exit 0 (stderr: ${r.stderr.trim()})`);
  return { doc: parse(await readFile(out, 'utf8')) as Record<string, unknown>, logs: logLines(r.stdout + r.stderr) };
}

t.test("kubeadm's config.conf: accepted with no warning; its values and upstream's defaults take effect", async (t) => {
  const { doc, logs } = await effective(t, KUBEADM_CONFIG, ['--hostname-override', 'Node-1']);
  t.same(logs.filter(isWarning), [], 'no warnings or errors');
  t.match(doc, {
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    bindAddress: '0.0.0.0',
    healthzBindAddress: '0.0.0.0:10256',
    metricsBindAddress: '127.0.0.1:10249',
    clientConnection: { kubeconfig: '/var/lib/kube-proxy/kubeconfig.conf', qps: 5, burst: 10 },
    hostnameOverride: 'node-1',
    clusterCIDR: '10.244.0.0/16',
    mode: 'userspace',
    iptables: { syncPeriod: '30s', minSyncPeriod: '1s' },
    conntrack: { udpTimeout: '30s' },
    portRange: '',
    nodePortAddresses: [],
  });
});

t.test('every field kup reads takes effect; the accepted-and-ignored ones are logged once', async (t) => {
  const { doc, logs } = await effective(t, EVERY_FIELD);
  t.same(doc, {
    apiVersion: 'kubeproxy.config.k8s.io/v1alpha1',
    kind: 'KubeProxyConfiguration',
    bindAddress: '127.0.0.1',
    healthzBindAddress: '127.0.0.1:10356',
    metricsBindAddress: '127.0.0.1:10349',
    clientConnection: { kubeconfig: '/etc/kup/kubeconfig.conf', qps: 20, burst: 40 },
    hostnameOverride: 'worker-7',
    mode: 'userspace',
    clusterCIDR: '10.244.0.0/16,fd00:10:244::/56',
    detectLocalMode: 'InterfaceNamePrefix',
    detectLocal: { bridgeInterface: '', interfaceNamePrefix: 'veth' },
    nodePortAddresses: ['10.0.0.0/8', 'primary'],
    iptables: { syncPeriod: '45s', minSyncPeriod: '2s', localhostNodePorts: false },
    conntrack: { udpTimeout: '1m30s' },
    portRange: '30000-30009',
  });
  const ignored = logs.filter((l) => /not used by a userspace proxy/.test(l.msg));
  t.equal(ignored.length, 1, 'one line for the ignored fields');
  t.match(ignored[0]?.msg, /featureGates, showHiddenMetricsForVersion|showHiddenMetricsForVersion, featureGates/);
  t.equal(logs.filter((l) => /qps\/burst accepted/.test(l.msg)).length, 1, 'qps/burst: one line saying where they go');
  t.equal(logs.filter((l) => /does not restrict NodePorts/.test(l.msg)).length, 0, 'nodePortAddresses is used, not just stored');
  t.same(logs.filter(isWarning), [], 'no warnings');
});

t.test('newer top-level syncPeriod/minSyncPeriod win over iptables.*', async (t) => {
  const { doc } = await effective(t, `${EVERY_FIELD}syncPeriod: 20s\nminSyncPeriod: 500ms\n`);
  t.match(doc, { iptables: { syncPeriod: '20s', minSyncPeriod: '500ms' } });
});

t.test('flags given on the command line override the file; the others keep its values', async (t) => {
  const { doc } = await effective(t, EVERY_FIELD, [
    '--sync-period',
    '1m',
    '--iptables-min-sync-period',
    '3s',
    '--udp-timeout',
    '10s',
    '--hostname-override',
    'other',
    '--kube-api-qps',
    '7',
    '--metrics-bind-address',
    '127.0.0.1:9999',
  ]);
  t.match(doc, {
    iptables: { syncPeriod: '1m0s', minSyncPeriod: '3s' },
    conntrack: { udpTimeout: '10s' },
    hostnameOverride: 'other',
    clientConnection: { kubeconfig: '/etc/kup/kubeconfig.conf', qps: 7, burst: 40 },
    metricsBindAddress: '127.0.0.1:9999',
    healthzBindAddress: '127.0.0.1:10356',
    portRange: '30000-30009',
  });
});

t.test('unknown fields: one warning each, and kup runs, serving with the flags that override the file', async (t) => {
  const dir = await tempDir(t);
  const config = join(dir, 'config.conf');
  // The file's addresses are not this machine's: the run only works because the flags win.
  await writeFile(
    config,
    KUBEADM_CONFIG.replace('bindAddress: 0.0.0.0', 'bindAddress: 192.0.2.7')
      .replace('iptables:\n', 'iptables:\n  futureKnob: true\n')
      .concat('udpIdleTimeout: 250ms\n'),
  );
  const backend = await nameServer('b1');
  t.teardown(() => backend.close());
  const objects = await writeObjectsFile(t, [
    service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ name: 'p', port: 80 }] }),
    ...slicesFor('web', 'p', [backend.port]),
  ]);
  const child = startKup([...loopbackRunArgs(objects), '--config', config, '--hostname-override', 'node-a']);
  const done = finished(child, 30_000);
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const proxyPort = Number((await waitForOutput(child, /"proxyPort":(\d+)/))[1]);
  t.equal(await whoAnswers(proxyPort), 'b1', 'serves through the proxy');
  child.kill('SIGTERM');
  const r = await done;
  t.equal(r.code, 0);
  const warnings = logLines(r.stdout + r.stderr).filter((l) => l.level === 'warn' && /unknown field/.test(l.msg));
  t.same(
    warnings.map((w) => w.msg.replace(/^.*unknown field /, '')).sort(),
    ['iptables.futureKnob; ignored', 'udpIdleTimeout; ignored'],
    'one warning per unknown field',
  );
});

t.test('mode ipvs (or any but userspace): one line saying kup is a userspace proxy, exit 2', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'config.conf');
  await writeFile(file, KUBEADM_CONFIG.replace('mode: ""', 'mode: ipvs'));
  const r = await runKup(['run', '--config', file, '--no-iptables']);
  t.equal(r.code, 2);
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  t.match(r.stderr, /^kup: --config .*config\.conf: mode "ipvs": kup is a userspace proxy/);
  t.equal(r.stdout, '', 'nothing started');
});

t.test('wrong kind or apiVersion, or a bad value: one line naming it, exit 2', async (t) => {
  const dir = await tempDir(t);
  const cases: [string, RegExp][] = [
    [
      KUBEADM_CONFIG.replace('kind: KubeProxyConfiguration', 'kind: KubeletConfiguration'),
      /kind "KubeletConfiguration".*expected kind KubeProxyConfiguration/,
    ],
    [
      KUBEADM_CONFIG.replace('kubeproxy.config.k8s.io/v1alpha1', 'kubeproxy.config.k8s.io/v1alpha2'),
      /apiVersion "kubeproxy.config.k8s.io\/v1alpha2"/,
    ],
    [
      KUBEADM_CONFIG.replace('healthzBindAddress: ""', 'healthzBindAddress: nowhere'),
      /config\.conf: healthzBindAddress: "nowhere" is not IP:PORT/,
    ],
    [
      KUBEADM_CONFIG.replace('detectLocalMode: ""', 'detectLocalMode: Magic'),
      /config\.conf: detectLocalMode: "Magic" is not one of ClusterCIDR, NodeCIDR/,
    ],
    [
      KUBEADM_CONFIG.replace('syncPeriod: 0s\nipvs', 'syncPeriod: often\nipvs'),
      /config\.conf: iptables\.syncPeriod: "often" is not a duration/,
    ],
  ];
  for (const [text, re] of cases) {
    const file = join(dir, 'config.conf');
    await writeFile(file, text);
    const r = await runKup(['run', '--config', file, '--no-iptables']);
    t.equal(r.code, 2, `exit 2 for ${re}`);
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    t.match(r.stderr, re);
  }
});

t.test("kube-proxy's flags are there, and --bind-address says it keeps the userspace meaning", async (t) => {
  const r = await runKup(['run', '--help']);
  for (const flag of [
    '--config',
    '--write-config-to',
    '--cleanup',
    '--kube-api-qps',
    '--kube-api-burst',
    '--iptables-sync-period',
    '--iptables-min-sync-period',
    '--cluster-cidr',
    '--nodeport-addresses',
    '--detect-local-mode',
  ]) {
    t.match(r.stdout, flag);
  }
  t.match(r.stdout.replace(/\s+/g, ' '), /--bind-address <ip> address the proxy listeners bind to \(the legacy userspace meaning/);
  const bad = await runKup(['run', '--detect-local-mode', 'Magic']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--detect-local-mode.*Magic/);
});
