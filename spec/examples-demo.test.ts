import { readFile } from 'node:fs/promises';
import t from 'tap';
import { DEMO_FILE } from '../lib/cli/demo.js';
import { ChangeTracker } from '../lib/core/change-tracker.js';
import { parseKubeObjects } from '../lib/sources/kube-yaml.js';

t.test('examples/demo.yaml describes the demo the README promises', async (t) => {
  const parsed = parseKubeObjects(await readFile(DEMO_FILE, 'utf8'), DEMO_FILE);
  t.same(parsed.warnings, [], 'no warnings');
  const tracker = new ChangeTracker({ nodeName: 'demo-node' });
  tracker.replaceAll(parsed);
  const { warnings } = tracker.flush();
  t.same(warnings, []);
  const summary = Object.fromEntries(
    [...tracker.current().values()].map((sp) => [
      sp.key,
      { endpoints: sp.clusterEndpoints.map((e) => `${e.ip}:${e.port}`), affinity: sp.affinityTimeoutSeconds },
    ]),
  );
  t.same(summary, {
    'demo/web:http/TCP': { endpoints: ['127.0.0.1:38081', '127.0.0.1:38082', '127.0.0.1:38083'], affinity: 0 },
    'demo/web-sticky:http/TCP': { endpoints: ['127.0.0.1:38081', '127.0.0.1:38082'], affinity: 60 },
    'demo/echo:echo/UDP': { endpoints: ['127.0.0.1:38091', '127.0.0.1:38092'], affinity: 0 },
    'demo/empty:http/TCP': { endpoints: [], affinity: 0 },
  });
});
