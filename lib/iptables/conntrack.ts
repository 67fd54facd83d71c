/**
 * Runs the `conntrack` tool (Debian package conntrack) to delete the UDP
 * entries a sync made stale (see core/conntrack-plan.ts). Best effort, as in
 * kube-proxy: the rules are right either way, a stale entry only delays a
 * client until it changes source port or the entry times out, so nothing
 * here throws. A missing binary is said once.
 */
import type { Logger } from 'pino';
import { conntrackDeleteArgs, type ConntrackFilter } from '../core/conntrack-plan.js';
import { findBinary } from './backend.js';
import { describeFailure, runCommand } from './command.js';

/** conntrack prints how many entries went on stderr, and exits 1 when that is 0: "nothing to delete" is no failure. */
const DELETED = /(\d+) flow entries have been deleted/;

export class ConntrackCleaner {
  private readonly log: Logger;
  private readonly timeoutMs: number;
  /** undefined until looked up; null when missing (warned once). */
  private binary: string | null | undefined;

  constructor(logger: Logger, timeoutMs: number) {
    this.log = logger;
    this.timeoutMs = timeoutMs;
  }

  /** Deletes what every filter names, one after another; logs failures and returns how many entries went. */
  async clear(filters: readonly ConntrackFilter[]): Promise<number> {
    if (filters.length === 0) return 0;
    if (this.binary === undefined) {
      this.binary = await findBinary('conntrack');
      if (this.binary === null) {
        this.log.warn(
          'conntrack binary not found (apt-get install conntrack): stale UDP conntrack entries are not cleared, so a client reusing its source port may keep reaching an old proxy port until its entry times out',
        );
      }
    }
    const bin = this.binary;
    if (bin === null) return 0;
    const started = Date.now();
    let deleted = 0;
    let failed = 0;
    for (const f of filters) {
      const args = conntrackDeleteArgs(f);
      const r = await runCommand(bin, args, { timeoutMs: this.timeoutMs });
      const m = DELETED.exec(r.stderr);
      if ((r.code === 0 || r.code === 1) && m !== null) {
        deleted += Number(m[1]);
      } else {
        failed++;
        this.log.warn({ err: describeFailure(bin, args, r) }, 'conntrack cleanup failed');
      }
    }
    const summary = { filters: filters.length, deleted, failed, ms: Date.now() - started };
    if (deleted > 0) this.log.info(summary, `cleared ${deleted} stale UDP conntrack entr${deleted === 1 ? 'y' : 'ies'}`);
    else this.log.debug(summary, 'no stale UDP conntrack entries');
    return deleted;
  }
}
