/**
 * The parsers behind `kup run`'s duration and port-range flags (pure, in
 * lib/core): what a user may write, and the one-line KUP_BAD_FLAG for the rest.
 */
import t from 'tap';
import { parseDuration } from '../lib/core/duration.js';
import { parsePortRange } from '../lib/core/port-range.js';

t.test('durations: Go-style units, bare numbers are seconds', async (t) => {
  t.equal(parseDuration('--x', '250ms'), 250);
  t.equal(parseDuration('--x', '1m30s'), 90_000);
  t.equal(parseDuration('--x', '0'), 0);
  t.equal(parseDuration('--x', '2'), 2000);
  t.throws(() => parseDuration('--udp-timeout', 'soon'), { code: 'KUP_BAD_FLAG', message: /--udp-timeout: "soon" is not a duration/ });
});

t.test('--proxy-port-range: BEGIN-END, BEGIN+OFFSET, one port, or empty / 0-0 for the kernel', async (t) => {
  t.same(parsePortRange('30000-30010'), { base: 30000, size: 11 });
  t.same(parsePortRange('30000+5'), { base: 30000, size: 6 });
  t.same(parsePortRange('8080'), { base: 8080, size: 1 });
  t.equal(parsePortRange(''), null);
  t.equal(parsePortRange('0-0'), null);
  t.throws(() => parsePortRange('9-1'), { code: 'KUP_BAD_FLAG' });
  t.throws(() => parsePortRange('1-70000'), { code: 'KUP_BAD_FLAG' });
});
