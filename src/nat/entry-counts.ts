/**
 * Entries per VIP for the status the controller polls and the console shows. Counting
 * means a kernel dump of the VIP's entries (~0.2 s of CPU for 100,000), so a count is
 * reused until it is older than max(1 s, its cost / COUNT_CPU_SHARE); the appliance
 * forgets a VIP's count whenever it changes that VIP's table in bulk (import, delete).
 */
const MIN_AGE_MS = 1000;
/** At most this share of a core goes to counting while something polls the status. */
const COUNT_CPU_SHARE = 0.02;

interface Count {
  value: number;
  at: number;
  costMs: number;
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
    if (have && this.now() - have.at < Math.max(MIN_AGE_MS, have.costMs / COUNT_CPU_SHARE)) return Promise.resolve(have.value);
    let p = this.pending.get(mark);
    if (!p) {
      const t0 = this.now();
      p = this.count(mark)
        .then((value) => {
          const at = this.now();
          this.counts.set(mark, { value, at, costMs: at - t0 });
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
