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
    template?: {
      metadata?: { labels?: Record<string, string> };
      spec?: {
        serviceAccountName?: string;
        hostNetwork?: boolean;
        containers?: {
          image?: string;
          command?: string[];
          args?: string[];
          env?: { name: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
          securityContext?: { capabilities?: { add?: string[] } };
        }[];
      };
    };
  };
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
  const run = buildProgram().commands.find((cmd) => cmd.name() === 'run');
  const known = new Set(run?.options.map((o) => o.long));
  for (const arg of c?.args?.slice(1) ?? []) {
    t.ok(known.has(arg.split('=')[0]), `kup run accepts ${arg}`);
  }
});
