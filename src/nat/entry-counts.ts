/**
 * Entries per VIP for the status the controller polls and the console shows. Counting
 * means a kernel dump of the VIP's entries, ~2 µs of CPU per entry (0.2 s for 100,000),
 * so a count is reused while it is younger than what it cost at COUNT_CPU_SHARE of a
 * core: 0.1 ms per entry counted (10 s for 100,000, nothing for a small table). The age
 * follows the count, not the measured time, so a loaded machine does not make small
 * tables stale. The appliance forgets a VIP's count whenever it changes that VIP's table
 * in bulk (import, delete).
 */
const CPU_MS_PER_ENTRY = 0.002;
/** At most this share of a core goes to counting while something polls the status. */
const COUNT_CPU_SHARE = 0.02;

interface Count {
  value: number;
  at: number;
}

export class EntryCounts {
  private readonly counts = new Map<number, Count>();
  private readonly pending = new Map<number, Promise<number>>();

  constructor(
    private readonly count: (mark: number) => Promise<number>,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get(mark: number): Promise<number> {
    const have = this.counts.get(mark);
    if (have && this.now() - have.at < (have.value * CPU_MS_PER_ENTRY) / COUNT_CPU_SHARE) return Promise.resolve(have.value);
    let p = this.pending.get(mark);
    if (!p) {
      p = this.count(mark)
        .then((value) => {
          this.counts.set(mark, { value, at: this.now() });
          return value;
        })
        .finally(() => this.pending.delete(mark));
      this.pending.set(mark, p);
    }
    return p;
  }

  invalidate(mark: number): void {
    this.counts.delete(mark);
  }
}
