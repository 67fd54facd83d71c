/**
 * Runs the API server double on its own, for trying `kup run` by hand:
 *
 *   node dist/spec/support/start-apiserver-double.js --kubeconfig /tmp/k [--objects objs.yaml] [--port 6443]
 *   kup run --kubeconfig /tmp/k --no-iptables
 *
 * Objects come from a YAML file (several documents, or kind: List). It
 * prints the URL once ready and stops on SIGINT/SIGTERM.
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { ApiServerDouble, type KubeJson } from './apiserver-double.js';

function objectsOf(doc: unknown): KubeJson[] {
  if (doc === null || doc === undefined) return [];
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new Error('each YAML document must be a Kubernetes object');
  const obj = doc as KubeJson;
  if (obj.kind === 'List' || (typeof obj.kind === 'string' && obj.kind.endsWith('List') && Array.isArray(obj.items))) {
    return (obj.items as unknown[]).flatMap(objectsOf);
  }
  return [obj];
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      kubeconfig: { type: 'string' },
      objects: { type: 'string' },
      port: { type: 'string' },
      token: { type: 'string' },
    },
  });
  if (!values.kubeconfig) throw new Error('usage: start-apiserver-double --kubeconfig OUT [--objects FILE.yaml] [--port N]');
  const api = new ApiServerDouble({
    ...(values.port !== undefined ? { port: Number(values.port) } : {}),
    ...(values.token !== undefined ? { token: values.token } : {}),
  });
  if (values.objects !== undefined) {
    const text = await readFile(values.objects, 'utf8');
    for (const doc of parseAllDocuments(text)) {
      if (doc.errors.length > 0) throw new Error(`${values.objects}: ${doc.errors[0]!.message}`);
      for (const obj of objectsOf(doc.toJS())) api.upsert(obj);
    }
  }
  await api.start();
  await api.writeKubeconfig(values.kubeconfig);
  const counts = (['Service', 'EndpointSlice', 'Node'] as const).map((k) => `${api.list(k).length} ${k}`).join(', ');
  process.stdout.write(`${api.url}\nkubeconfig: ${values.kubeconfig} (${counts})\n`);
  const stop = (): void => {
    void api.stop().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`start-apiserver-double: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
