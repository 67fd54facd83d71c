import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import t, { type Test } from 'tap';
import { parseAllDocuments } from 'yaml';
import { buildProgram } from '../lib/cli/main.js';

/** The deployment examples must be objects Kubernetes accepts and must ask for what kup needs, no more. */

const dir = resolve(import.meta.dirname, '../../examples/kubernetes');

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}
interface Doc {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string };
  rules?: Rule[];
  roleRef?: { name: string };
  subjects?: { kind: string; name: string; namespace: string }[];
  spec?: {
    selector?: { matchLabels?: Record<string, string> };
    updateStrategy?: { type?: string; rollingUpdate?: { maxSurge?: number | string; maxUnavailable?: number | string } };
    template?: {
      metadata?: { labels?: Record<string, string> };
      spec?: {
        serviceAccountName?: string;
        hostNetwork?: boolean;
        terminationGracePeriodSeconds?: number;
        volumes?: { name: string; configMap?: { name: string }; hostPath?: { path: string } }[];
        initContainers?: Container[];
        containers?: Container[];
      };
    };
  };
}

interface Container {
  image?: string;
  command?: string[];
  args?: string[];
  env?: { name: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  securityContext?: { capabilities?: { add?: string[] } };
  volumeMounts?: { name: string; mountPath: string }[];
}

function load(t: Test, file: string): Doc[] {
  return parseAllDocuments(readFileSync(resolve(dir, file), 'utf8')).map((d) => {
    t.same(d.errors, [], `${file} parses`);
    return d.toJS() as Doc;
  });
}

t.test('RBAC: read services, endpointslices, nodes; write events; bound to the service account', async (t) => {
  const docs = load(t, 'rbac.yaml');
  t.same(
    docs.map((d) => `${d.apiVersion} ${d.kind}`),
    ['v1 ServiceAccount', 'rbac.authorization.k8s.io/v1 ClusterRole', 'rbac.authorization.k8s.io/v1 ClusterRoleBinding'],
  );
  const [sa, role, binding] = docs as [Doc, Doc, Doc];
  const grants = new Set<string>();
  for (const r of role.rules ?? []) {
    for (const g of r.apiGroups) for (const res of r.resources) for (const v of r.verbs) grants.add(`${g}/${res}:${v}`);
  }
  for (const v of ['get', 'list', 'watch']) {
    t.ok(grants.has(`/services:${v}`), `services ${v}`);
    t.ok(grants.has(`/nodes:${v}`), `nodes ${v}`);
    t.ok(grants.has(`discovery.k8s.io/endpointslices:${v}`), `endpointslices ${v}`);
  }
  t.ok(grants.has('/events:create') && grants.has('events.k8s.io/events:patch'));
  t.notOk(
    [...grants].some((g) => /:(update|delete|deletecollection|\*)$/.test(g) || g.includes('*')),
    'nothing beyond that',
  );
  t.equal(binding.roleRef?.name, role.metadata?.name);
  t.same(binding.subjects, [{ kind: 'ServiceAccount', name: sa.metadata?.name, namespace: sa.metadata?.namespace }]);
});

t.test('DaemonSet: host network, NET_ADMIN, node name from the downward API, flags kup knows', async (t) => {
  const [ds] = load(t, 'daemonset.yaml') as [Doc];
  t.equal(ds.kind, 'DaemonSet');
  t.equal(ds.apiVersion, 'apps/v1');
  const pod = ds.spec?.template?.spec;
  t.same(ds.spec?.selector?.matchLabels, ds.spec?.template?.metadata?.labels, 'the selector matches the pod labels');
  t.equal(pod?.hostNetwork, true);
  t.equal(pod?.serviceAccountName, load(t, 'rbac.yaml')[0]?.metadata?.name);
  const c = pod?.containers?.[0];
  t.equal(c?.image, 'kube-userspace-proxy:latest');
  t.same(c?.securityContext?.capabilities?.add, ['NET_ADMIN']);
  t.equal(c?.env?.find((e) => e.name === 'NODE_NAME')?.valueFrom?.fieldRef?.fieldPath, 'spec.nodeName');
  t.same(c?.command, ['kup']);
  t.equal(c?.args?.[0], 'run');
  t.ok(c?.args?.includes('--hostname-override=$(NODE_NAME)'));
  const flagsOf = (name: string): Set<string | undefined> =>
    new Set(
      buildProgram()
        .commands.find((cmd) => cmd.name() === name)
        ?.options.map((o) => o.long),
    );
  const known = flagsOf('run');
  t.ok(known.has('--config'), 'the check itself sees `kup run --config`');
  for (const arg of c?.args?.slice(1) ?? []) {
    t.ok(arg.startsWith('--') && known.has(arg.split('=')[0]), `kup run accepts ${arg}`);
  }

  // kube-proxy's configuration, where kubeadm puts it.
  t.ok(c?.args?.includes('--config=/var/lib/kube-proxy/config.conf'), 'reads config.conf with --config');
  const cm = pod?.volumes?.find((v) => v.configMap?.name === 'kube-proxy');
  t.ok(cm, "kube-proxy's ConfigMap is a volume");
  t.same(
    c?.volumeMounts?.filter((m) => m.name === cm?.name).map((m) => m.mountPath),
    ['/var/lib/kube-proxy'],
    'mounted at /var/lib/kube-proxy',
  );

  // Surge: the new pod takes over from the old one (hand-over over the state dir's kup.sock), so it must share the state dir.
  t.equal(ds.spec?.updateStrategy?.type, 'RollingUpdate');
  const state = pod?.volumes?.find((v) => v.hostPath?.path === '/var/lib/kup');
  t.ok(state, 'the state directory is a hostPath, shared by the old and the new pod');
  t.ok(
    c?.volumeMounts?.some((m) => m.name === state?.name && m.mountPath === '/var/lib/kup'),
    'mounted at --state-dir',
  );
  const grace = Number(/--shutdown-grace-period=(\d+)s/.exec(c?.args?.join(' ') ?? '')?.[1]);
  t.ok((pod?.terminationGracePeriodSeconds ?? 0) > grace, `terminationGracePeriodSeconds covers --shutdown-grace-period (${grace}s)`);
  t.same(ds.spec?.updateStrategy?.rollingUpdate, { maxSurge: 1, maxUnavailable: 0 }, 'the new pod takes over before the old one goes');

  // kube-proxy's leftovers are removed before kup starts, with a flag `kup cleanup` has.
  const init = pod?.initContainers?.[0];
  t.same(init?.command, ['kup']);
  t.same(init?.args, ['cleanup', '--kube-proxy-rules']);
  const cleanupFlags = flagsOf('cleanup');
  for (const arg of init?.args?.slice(1) ?? []) t.ok(cleanupFlags.has(arg.split('=')[0]), `kup cleanup accepts ${arg}`);
  t.same(init?.securityContext?.capabilities?.add, ['NET_ADMIN']);
  t.ok(
    init?.volumeMounts?.some((m) => m.mountPath === '/run/xtables.lock'),
    "shares the host's xtables lock",
  );
});
