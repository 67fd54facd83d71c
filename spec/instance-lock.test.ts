/**
 * The lock's hand-over protocol (issue 14) on a real Unix socket in a temp
 * state directory: a successor gets the holder's ports, a third kup is refused
 * while a hand-over runs, the holder is told to release only when asked, and a
 * holder that cannot hand over (an older kup) still refuses a second one.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { KupError } from '../lib/core/errors.js';
import { InstanceLock, LOCK_SOCKET, SUCCESSOR_SOCKET } from '../lib/runtime/instance-lock.js';

async function stateDir(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'kup-lock-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

t.test('a successor gets the ports, a third is refused meanwhile, release moves the lock', async (t) => {
  const dir = await stateDir(t);
  const first = await InstanceLock.acquire(dir, { handover: true });
  t.equal(first.predecessor, null, 'the first kup has no predecessor');
  let released = 0;
  first.lock.serveHandover({
    ports: () => new Map([['default/web:http/TCP|internal', 40001]]),
    release: async () => {
      released++;
      await first.lock.release();
    },
  });
  const second = await InstanceLock.acquire(dir, { handover: true });
  t.same([...(second.predecessor?.ports ?? [])], [['default/web:http/TCP|internal', 40001]], "the successor gets the holder's ports");
  t.equal(second.predecessor?.pid, process.pid);
  t.equal(second.lock.path, join(dir, SUCCESSOR_SOCKET), 'it holds kup.sock.next meanwhile');
  t.equal(released, 0, 'the holder is not told to release before the successor is ready');

  const third = await InstanceLock.acquire(dir, { handover: true }).catch((e: unknown) => e);
  t.ok(third instanceof KupError && third.code === 'KUP_ALREADY_RUNNING', 'a third kup is refused during the hand-over');
  t.match((third as Error).message, /another kup is already taking over from pid \d+; not touching iptables/);

  await second.predecessor!.release();
  t.equal(released, 1, 'RELEASE reached the holder once');
  t.equal(second.lock.path, join(dir, LOCK_SOCKET), 'the successor now holds kup.sock');
  t.notOk(existsSync(join(dir, SUCCESSOR_SOCKET)), 'and gave up kup.sock.next');
  await second.lock.release();
  t.notOk(existsSync(join(dir, LOCK_SOCKET)), 'releasing removes kup.sock');
});

t.test('no hand-over from a kup still starting, nor from one that cannot hand over', async (t) => {
  const dir = await stateDir(t);
  const first = await InstanceLock.acquire(dir, { handover: true });
  t.teardown(() => first.lock.release());
  const early = await InstanceLock.acquire(dir, { handover: true }).catch((e: unknown) => e);
  t.match(
    (early as Error).message,
    /refused to hand over \(ERR not ready\); not touching iptables/,
    'a holder still starting says not ready',
  );
  t.notOk(existsSync(join(dir, SUCCESSOR_SOCKET)), 'the refused successor left no kup.sock.next');

  const old = await stateDir(t);
  // A kup from before the hand-over: answers its pid and closes.
  const srv = net.createServer((c) => c.end(`${JSON.stringify({ pid: 4242 })}\n`));
  await new Promise<void>((r) => srv.listen(join(old, LOCK_SOCKET), r));
  t.teardown(() => srv.close());
  const refused = await InstanceLock.acquire(old, { handover: true }).catch((e: unknown) => e);
  t.ok(refused instanceof KupError && refused.code === 'KUP_ALREADY_RUNNING');
  t.match(
    (refused as Error).message,
    new RegExp(`another kup \\(pid 4242\\) is running with --state-dir ${old} and cannot hand over; not touching iptables`),
  );
});
