import type { PortRange } from '../core/port-range.js';

/**
 * Hands out proxy ports from --proxy-port-range, or 0 (kernel's choice) when no
 * range is set. A port the kernel refuses (in use by another process) is
 * skipped by the caller asking again; the allocator remembers what it lent.
 */
export class PortAllocator {
  private readonly range: PortRange | null;
  private readonly used = new Set<number>();
  private cursor = 0;

  constructor(range: PortRange | null) {
    this.range = range;
  }

  /** A port to try, or undefined when every port in the range is lent out or was refused. */
  allocate(refused: ReadonlySet<number> = new Set()): number | undefined {
    if (this.range === null) return 0;
    const { base, size } = this.range;
    for (let i = 0; i < size; i++) {
      const port = base + ((this.cursor + i) % size);
      if (!this.used.has(port) && !refused.has(port)) {
        this.cursor = (this.cursor + i + 1) % size;
        this.used.add(port);
        return port;
      }
    }
    return undefined;
  }

  release(port: number): void {
    this.used.delete(port);
  }
}
