import type { PortRange } from '../core/port-range.js';

/**
 * How long a closed listener's port stays kept for the service port that had
 * it: a service that vanishes from a file for a moment (a rewrite, a typo
 * fixed) comes back on the same proxy port, so its iptables rules and the
 * UDP flows they carry do not change.
 */
export const PORT_MEMORY_MS = 10 * 60_000;

/**
 * Hands out proxy ports from --proxy-port-range, or 0 (kernel's choice) when no
 * range is set. A port the kernel refuses (in use by another process) is
 * skipped by the caller asking again; the allocator remembers what it lent,
 * and for a while which owner (service port and scope) had a released port.
 */
export class PortAllocator {
  private readonly range: PortRange | null;
  private readonly used = new Set<number>();
  /** owner -> the port it released and until when it is kept for it. */
  private readonly recent = new Map<string, { port: number; until: number }>();
  private readonly kept = new Map<number, string>();
  private readonly now: () => number;
  private cursor = 0;

  constructor(range: PortRange | null, now: () => number = Date.now) {
    this.range = range;
    this.now = now;
  }

  /**
   * A port to try, or undefined when every port in the range is lent out or was
   * refused. `owner` gets back the port it released lately, when that is free.
   */
  allocate(refused: ReadonlySet<number> = new Set(), owner?: string): number | undefined {
    this.forgetExpired();
    const mine = owner === undefined ? undefined : this.recent.get(owner);
    if (mine !== undefined && !refused.has(mine.port) && !this.used.has(mine.port)) {
      this.forget(owner!);
      if (this.range !== null) this.used.add(mine.port);
      return mine.port;
    }
    if (this.range === null) return 0;
    // Ports kept for other owners are lent only when nothing else is left.
    return this.scan(refused, true) ?? this.scan(refused, false);
  }

  /**
   * Keeps `port` for `owner` as if it had just released it: the port it had
   * before a restart (state file) or in the predecessor kup. A port outside
   * the range (the range changed) is ignored.
   */
  prefer(owner: string, port: number): void {
    if (this.range !== null && (port < this.range.base || port >= this.range.base + this.range.size)) return;
    if (this.kept.has(port)) return;
    this.recent.set(owner, { port, until: this.now() + PORT_MEMORY_MS });
    this.kept.set(port, owner);
  }

  release(port: number, owner?: string): void {
    this.used.delete(port);
    if (owner === undefined || port === 0) return;
    this.forget(owner);
    const prevOwner = this.kept.get(port);
    if (prevOwner !== undefined) this.recent.delete(prevOwner);
    this.recent.set(owner, { port, until: this.now() + PORT_MEMORY_MS });
    this.kept.set(port, owner);
  }

  private scan(refused: ReadonlySet<number>, skipKept: boolean): number | undefined {
    const { base, size } = this.range!;
    for (let i = 0; i < size; i++) {
      const port = base + ((this.cursor + i) % size);
      if (!this.used.has(port) && !refused.has(port) && !(skipKept && this.kept.has(port))) {
        this.cursor = (this.cursor + i + 1) % size;
        this.used.add(port);
        const owner = this.kept.get(port);
        if (owner !== undefined) this.forget(owner);
        return port;
      }
    }
    return undefined;
  }

  private forget(owner: string): void {
    const r = this.recent.get(owner);
    if (r === undefined) return;
    this.recent.delete(owner);
    if (this.kept.get(r.port) === owner) this.kept.delete(r.port);
  }

  private forgetExpired(): void {
    const now = this.now();
    for (const [owner, r] of this.recent) if (r.until <= now) this.forget(owner);
  }
}
