/**
 * The packet-flow harness's verdicts (spec/support/packet-flows.ts judge):
 * each kind of expectation fails on the outcomes that would hide a
 * difference from upstream, so a passing table means what it says.
 */
import t from 'tap';
import { judge, WORLD, type Flow } from './support/packet-flows.js';

const flow = (expect: Flow['expect'], to = '172.30.0.41'): Flow => ({ name: 'f', from: '10.0.0.2', to, port: 80, expect });
const r = (reply: string) => ({ reply, ms: 1 });
const e = (error: string, ms = 1) => ({ error, ms });

t.test('endpoints: only the expected ones, and every one of them', async (t) => {
  const want = flow(['10.180.0.1:80', '10.180.2.1:80']);
  t.ok(judge(want, [r('10.180.0.1:80'), r('10.180.2.1:80'), r('10.180.0.1:80')]).ok);
  t.notOk(judge(want, [r('10.180.0.1:80'), r('10.180.0.1:80')]).ok, 'one endpoint never answered');
  t.notOk(judge(want, [r('10.180.0.1:80'), r('10.180.2.1:80'), r('10.180.9.9:80')]).ok, 'an endpoint not expected answered');
  t.notOk(judge(want, [r('10.180.0.1:80'), r('10.180.2.1:80'), e('ECONNRESET')]).ok, 'one try failed');
  t.notOk(judge(want, []).ok, 'nothing ran');
});

t.test('REJECT: refused at once, not accepted-then-reset, not silence', async (t) => {
  t.ok(judge(flow('REJECT'), [e('ECONNREFUSED'), e('ECONNREFUSED')]).ok);
  t.notOk(judge(flow('REJECT'), [e('ECONNRESET')]).ok, 'accepted then reset');
  t.notOk(judge(flow('REJECT'), [e('TIMEOUT', 1500)]).ok, 'dropped');
  t.notOk(judge(flow('REJECT'), [e('ECONNREFUSED', 1200)]).ok, 'refused only after a second');
});

t.test('DROP: silence only', async (t) => {
  t.ok(judge(flow('DROP'), [e('TIMEOUT', 1500)]).ok);
  t.notOk(judge(flow('DROP'), [e('ECONNREFUSED')]).ok, 'rejected');
  t.notOk(judge(flow('DROP'), [e('ECONNRESET')]).ok, 'accepted then reset');
  t.notOk(judge(flow('DROP'), [r(WORLD)]).ok, 'passed through untouched');
});

t.test('NONE: passed through untouched (the world answers), or refused by the node itself for its own address', async (t) => {
  t.ok(judge(flow('NONE'), [r(WORLD)]).ok);
  t.notOk(judge(flow('NONE'), [r('10.180.0.1:80')]).ok, 'proxied');
  t.notOk(judge(flow('NONE'), [e('TIMEOUT', 1500)]).ok, 'dropped');
  t.ok(judge(flow('NONE', '192.168.0.2'), [e('ECONNREFUSED')]).ok);
  t.notOk(judge(flow('NONE', '192.168.0.2'), [r('10.180.0.1:80')]).ok, 'a NodePort rule caught it');
});

t.test('ACCEPT: the node answered over HTTP', async (t) => {
  t.ok(judge(flow('ACCEPT', '192.168.0.2'), [r('HTTP/1.1 503 Service Unavailable')]).ok);
  t.notOk(judge(flow('ACCEPT', '192.168.0.2'), [e('ECONNREFUSED')]).ok);
});
