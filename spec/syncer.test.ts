/**
 * The syncer as the one owner of retries, stepped with an injected clock: a
 * failed sync is retried with backoff as a full sync, one retry is pending at
 * most, and a success ends the retrying. The target is a stand-in that fails
 * on command (what IptablesApplier.apply does when iptables-restore fails).
 */
import t from 'tap';
import { KupError } from '../lib/core/errors.js';
import { isEmptyDiff, type TableDiff } from '../lib/core/table-diff.js';
import type { ServiceTable } from '../lib/core/types.js';
import { Syncer, type SyncChange, type SyncRecord } from '../lib/sync/syncer.js';
import { FakeClock } from './support/fake-clock.js';
import { LogCapture } from './support/harness.js';
import { endpoint, servicePort, tableOf } from './support/service-fixtures.js';
import { sleep, waitFor } from './support/wait.js';

const EMPTY: TableDiff = { added: [], updated: [], removed: [] };

function harness(failures: number) {
  const clock = new FakeClock();
  const log = new LogCapture();
  const logger = log.logger;
  let pending: TableDiff = EMPTY;
  let table: ServiceTable = new Map();
  const tracker = {
    flush() {
      const diff = pending;
      pending = EMPTY;
      return { diff, warnings: [], servicesChanged: diff.added.length, triggerTimes: [] };
    },
    current: () => table,
  };
  const calls: { full: boolean; at: number; diffEmpty: boolean }[] = [];
  const target = {
    name: 'iptables',
    failuresLeft: failures,
    async sync(c: SyncChange): Promise<void> {
      calls.push({ full: c.full, at: clock.now(), diffEmpty: isEmptyDiff(c.diff) });
      if (this.failuresLeft-- > 0) throw new KupError('KUP_IPTABLES', 'iptables-restore -w 5 --noflush: exit 1: injected fault');
    },
  };
  const syncer = new Syncer({ tracker, targets: [target], minSyncPeriodMs: 0, syncPeriodMs: 600_000, logger, clock });
  const records: SyncRecord[] = [];
  syncer.onSync((r) => records.push(r));
  const change = (): void => {
    const sp = servicePort({ name: `svc-${calls.length}`, port: 80 });
    table = tableOf([...table.values(), sp]);
    pending = { added: [sp], updated: [], removed: [] };
    syncer.request();
  };
  const syncs = (n: number): Promise<number> => waitFor(`sync #${n}`, () => records.length >= n, 5000);
  return { clock, log, calls, target, syncer, records, change, syncs };
}

t.test('fails twice, then succeeds: retried with backoff as full syncs, by one loop', async (t) => {
  const h = harness(2);
  await h.syncer.start();
  t.teardown(() => h.syncer.stop());
  t.equal(h.records.length, 1, 'the first sync ran');
  t.equal(h.records[0]!.ok, false, 'and failed');
  t.equal(h.syncer.state.consecutiveFailures, 1);
  t.match(h.syncer.state.lastError, /^iptables: .*injected fault/, 'health sees the target and its stderr');
  t.same(h.clock.pendingOnce(), [1000], 'exactly one retry pending, after 1 s');

  h.clock.advance(999);
  await sleep(30);
  t.equal(h.calls.length, 1, 'nothing runs before the backoff is over');
  h.clock.advance(1);
  await h.syncs(2);
  t.same(h.calls[1], { full: true, at: h.calls[0]!.at + 1000, diffEmpty: true }, 'retried after 1 s as a full sync');
  t.equal(h.records[1]!.ok, false, 'the retry failed too');
  t.same(h.clock.pendingOnce(), [2000], 'one retry pending, the backoff doubled to 2 s');

  h.clock.advance(2000);
  await h.syncs(3);
  t.same(h.calls[2], { full: true, at: h.calls[1]!.at + 2000, diffEmpty: true }, 'retried after 2 s as a full sync');
  t.equal(h.records[2]!.ok, true, 'and it succeeded');
  t.same(h.clock.pendingOnce(), [], 'no retry pending once it succeeds');
  t.equal(h.syncer.state.consecutiveFailures, 0);
  t.equal(h.syncer.state.lastError, null);
  t.equal(h.syncer.state.failures, 2);

  h.clock.advance(120_000);
  await sleep(30);
  t.equal(h.calls.length, 3, 'no further retries: the loop ended');

  h.change();
  await h.syncs(4);
  t.same(h.calls[3], { full: false, at: h.clock.now(), diffEmpty: false }, 'the next change is a diff sync again');

  const failed = h.log.lines.filter((l) => /sync failed/.test(String(l['msg'])));
  t.same(
    failed.map((l) => [l['msg'], l['retryMs'], l['code']]),
    [
      ['iptables sync failed; retrying', 1000, 'KUP_IPTABLES'],
      ['iptables sync failed; retrying', 2000, 'KUP_IPTABLES'],
    ],
    'one log line per failure, naming the target, the retry delay and the error code',
  );
  t.match(failed[0]!['err'], /injected fault/, "the failure's stderr is in the log line");
});

t.test('a change during backoff syncs in full; its failure keeps the one pending retry', async (t) => {
  const h = harness(2);
  await h.syncer.start();
  t.teardown(() => h.syncer.stop());
  h.clock.advance(400);
  h.change();
  await h.syncs(2);
  t.same(
    h.calls[1],
    { full: true, at: h.calls[0]!.at + 400, diffEmpty: false },
    'the change ran at once, as a full sync (the failed diff is gone)',
  );
  t.equal(h.records[1]!.ok, false);
  t.same(h.clock.pendingOnce(), [600], 'still the one retry, at its first moment');

  h.change();
  await h.syncs(3);
  t.equal(h.records[2]!.ok, true, 'a later change succeeds');
  t.equal(h.calls[2]!.full, true, 'as a full sync: the previous one failed');
  t.same(h.clock.pendingOnce(), [], 'and the pending retry is cancelled');
  h.clock.advance(60_000);
  await sleep(30);
  t.equal(h.calls.length, 3, 'no retry runs after the success');
});

t.test('an endpoint change inside the rate-limit window reaches the immediate target at once; the rule write waits', async (t) => {
  const clock = new FakeClock();
  const log = new LogCapture();
  let pending: TableDiff = EMPTY;
  let table: ServiceTable = new Map();
  const tracker = {
    flush() {
      const diff = pending;
      pending = EMPTY;
      return { diff, warnings: [], servicesChanged: isEmptyDiff(diff) ? 0 : 1, triggerTimes: [] };
    },
    current: () => table,
  };
  const seen: { target: string; endpoints: string[]; full: boolean }[] = [];
  const record = (target: string) => async (c: SyncChange) => {
    const eps = c.diff.updated.map((u) => u.next.endpoints.map((e) => e.ip).join(','));
    seen.push({ target, endpoints: eps, full: c.full });
  };
  const balancers = { name: 'endpoints', immediate: true, sync: record('endpoints') };
  const rules = { name: 'iptables', sync: record('iptables') };
  // Real min-sync-period of 60 s: p-queue's window runs on real timers, which this test never waits out.
  const syncer = new Syncer({
    tracker,
    targets: [balancers, rules],
    minSyncPeriodMs: 60_000,
    syncPeriodMs: 600_000,
    logger: log.logger,
    clock,
  });
  const records: SyncRecord[] = [];
  syncer.onSync((r) => records.push(r));
  const sp0 = servicePort({ name: 'web', port: 80, endpoints: [endpoint('10.0.0.1', 8080)] });
  table = tableOf([sp0]);
  await syncer.start();
  t.teardown(() => syncer.stop());
  t.equal(records.length, 1, 'the first (full) sync ran');

  let prev = sp0;
  const change = (ip: string): void => {
    const next = servicePort({ name: 'web', port: 80, endpoints: [endpoint(ip, 8080)] });
    table = tableOf([next]);
    pending = { added: [], updated: [{ prev, next }], removed: [] };
    prev = next;
    syncer.request();
  };
  change('10.0.0.2');
  await waitFor('the burst sync', () => records.length === 2, 2000);
  t.same(
    seen.filter((s) => s.target === 'iptables').map((s) => s.endpoints),
    [[], ['10.0.0.2']],
    'the second sync (the burst of two) wrote the rules',
  );

  // The window is spent: a change now waits 60 s for the rules, but not for the balancers.
  const before = seen.length;
  change('10.0.0.3');
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  t.same(seen.slice(before), [{ target: 'endpoints', endpoints: ['10.0.0.3'], full: false }], 'the balancers got the change within a turn');
  t.same(clock.pendingOnce(), [], 'no timer was involved');
  await sleep(200);
  t.equal(seen.filter((s) => s.target === 'iptables').length, 2, 'the rule write is still held by min-sync-period');
  t.equal(records.length, 2, 'no sync record until the rules are written');
});
