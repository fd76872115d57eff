/**
 * Entries per VIP for the status the controller polls and the console shows. Counting
 * means a kernel dump, and a dump walks the whole conntrack hash table whatever it
 * filters (~10 ms here even when nothing matches) plus ~2 µs per entry it returns, so all
 * VIPs are counted from one dump, counted by ct mark. The counts are reused while younger
 * than what they cost at COUNT_CPU_SHARE of a core — 0.1 ms per entry counted (10 s for
 * 100,000, nothing for a small table): the age follows the count, not the measured time,
 * so a loaded machine does not make small tables stale. The appliance forgets the counts
 * whenever it changes a VIP's table in bulk (import, delete).
 */
const CPU_MS_PER_ENTRY = 0.002;
/** At most this share of a core goes to counting while something polls the status. */
const COUNT_CPU_SHARE = 0.02;

interface Counts {
  byMark: Map<number, number>;
  total: number;
  at: number;
}

export class EntryCounts {
  private counts: Counts | undefined;
  private pending: Promise<Counts> | undefined;

  constructor(
    private readonly countByMark: () => Promise<Map<number, number>>,
    private readonly now: () => number = () => performance.now(),
  ) {}

  async get(mark: number): Promise<number> {
    return (await this.all()).byMark.get(mark) ?? 0;
  }

  private all(): Promise<Counts> {
    const have = this.counts;
    if (have && this.now() - have.at < (have.total * CPU_MS_PER_ENTRY) / COUNT_CPU_SHARE) return Promise.resolve(have);
    this.pending ??= this.countByMark()
      .then((byMark) => {
        let total = 0;
        for (const n of byMark.values()) total += n;
        this.counts = { byMark, total, at: this.now() };
        return this.counts;
      })
      .finally(() => {
        this.pending = undefined;
      });
    return this.pending;
  }

  invalidate(): void {
    this.counts = undefined;
  }
}
