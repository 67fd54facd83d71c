import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';

/**
 * How many descriptors the data plane may hold (listeners, both sockets of
 * each TCP connection, one per UDP session), so that running out is a state
 * the proxy manages rather than an error thrown at random places: at the
 * limit new clients are shed at once (reset, or datagram dropped), established
 * connections carry on, and accepting resumes as connections close. The
 * legacy proxier panicked here (kubernetes#5461).
 */
export class FdBudget {
  readonly limit: number;
  private used = 0;
  private readonly log: Logger | null;
  private shedding = false;
  private shedCount = 0;
  private lastLog = 0;

  constructor(limit: number, logger: Logger | null = null) {
    this.limit = limit;
    this.log = logger;
  }

  get inUse(): number {
    return this.used;
  }

  /** Total clients shed because the budget was spent. */
  get shed(): number {
    return this.shedCount;
  }

  take(n: number): boolean {
    if (this.used + n > this.limit) {
      this.noteShed();
      return false;
    }
    this.used += n;
    return true;
  }

  give(n: number): void {
    this.used -= n;
    // Some headroom before saying so, so a busy proxy at the edge does not log on every connection.
    if (this.shedding && this.used + Math.min(64, Math.ceil(this.limit / 10)) <= this.limit) {
      this.shedding = false;
      this.log?.info(
        { inUse: this.used, limit: this.limit, shed: this.shedCount },
        'descriptors available again: accepting new connections',
      );
    }
  }

  /** A socket call failed for want of descriptors or buffers (the budget's estimate was off): counted the same. */
  noteShed(): void {
    this.shedCount++;
    const now = Date.now();
    if (!this.shedding || now - this.lastLog >= 5000) {
      this.shedding = true;
      this.lastLog = now;
      this.log?.warn(
        { inUse: this.used, limit: this.limit, shed: this.shedCount },
        'out of file descriptors: shedding new connections while established ones carry on',
      );
    }
  }
}

/** Errors that say this host is out of something, not that the endpoint is bad. */
export function isLocalResourceError(err: NodeJS.ErrnoException): boolean {
  return err.code === 'EMFILE' || err.code === 'ENFILE' || err.code === 'ENOBUFS' || err.code === 'ENOMEM';
}

/** The soft RLIMIT_NOFILE of this process, from /proc; null where it cannot be read. */
export function openFileLimit(): number | null {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (m === null || m[1] === 'unlimited') return null;
    return Number(m[1]);
  } catch {
    return null;
  }
}

/**
 * The data plane's share of the open-files limit: all of it but a reserve for
 * the rest of the process (logs, admin servers, API connections, iptables
 * children).
 */
export function dataPlaneBudget(logger: Logger | null, limit = openFileLimit()): FdBudget {
  if (limit === null) return new FdBudget(Number.MAX_SAFE_INTEGER, logger);
  const reserve = Math.min(256, Math.floor(limit / 4));
  return new FdBudget(limit - reserve, logger);
}
