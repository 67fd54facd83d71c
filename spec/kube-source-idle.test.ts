import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import { KubeSource } from '../lib/sources/kube-source.js';
import { ApiServerDouble } from './support/apiserver-double.js';
import { service } from './support/objects.js';
import { RecordingStore } from './support/recording-store.js';
import { sleep, waitFor } from './support/wait.js';

/**
 * client-node 2.x gives up on a watch that carried nothing for 30 s and opens
 * a new one. On an idle cluster (no events, bookmarks too rare to help) that
 * must be a quiet, immediate re-watch: no relist, no error, no pause.
 */
t.test('an idle cluster: the 30 s watch timeout re-watches at once and changes still arrive', async (t) => {
  // Bookmarks at the real server's pace would come after the client's 30 s timeout.
  const api = new ApiServerDouble({ bookmarkIntervalMs: 60_000 });
  await api.start();
  t.teardown(() => api.stop());
  const dir = await mkdtemp(join(tmpdir(), 'kup-idle-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const kubeconfig = join(dir, 'kubeconfig');
  await api.writeKubeconfig(kubeconfig);
  api.upsert(service({ name: 'web', clusterIP: '10.96.0.10', ports: [{ port: 80 }] }));

  const logs: string[] = [];
  const source = new KubeSource({
    kubeconfig,
    nodeName: 'node-a',
    logger: pino({ level: 'debug' }, { write: (l: string) => void logs.push(l) }),
  });
  t.teardown(() => source.stop());
  const store = new RecordingStore();
  await source.start(store);
  const watchesAtStart = api.counters.watches.Service;

  await sleep(33_000);
  t.ok(api.counters.watches.Service > watchesAtStart, 'the idle watch was replaced');
  t.equal(api.openWatchesOf('Service'), 1, 'and one is open now');
  t.equal(api.counters.lists.Service, 1, 'without a relist');
  t.equal(source.state().lastError, null, 'a timeout is not an error');
  t.notOk(
    logs.some((l) => l.includes('restarting in')),
    'no restart was needed',
  );

  const before = Date.now();
  api.upsert(service({ name: 'after-idle', clusterIP: '10.96.0.11', ports: [{ port: 80 }] }));
  await waitFor('the change after the idle period', () => store.services.has('default/after-idle'), 5000);
  t.ok(Date.now() - before < 5000);
  t.same(store.deletions(), []);
});
