import { Writable } from 'node:stream';
import t from 'tap';
import { createLogger } from '../lib/log.js';

t.test('each log line names its component once', async (t) => {
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      raw.push(
        ...chunk
          .toString()
          .split('\n')
          .filter((l) => l !== ''),
      );
      cb();
    },
  });
  const log = createLogger('info', stream);
  log.info('from the root');
  log.child({ component: 'iptables' }).info('from a component');
  log.child({ servicePort: 'default/web:http/TCP' }).info('from a child without one');
  t.equal(raw.length, 3);
  for (const line of raw) t.equal(line.match(/"component"/g)?.length, 1, `one "component" in ${line}`);
  t.same(
    raw.map((l) => (JSON.parse(l) as { component: string }).component),
    ['kup', 'iptables', 'kup'],
  );
});
