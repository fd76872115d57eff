/**
 * The conntrack table's fill, watched: entries against nf_conntrack_max, and what the kernel
 * refused. When the table is full the kernel first evicts an entry that never completed its
 * handshake (early drop: a SYN flood's leftovers go first); when there is none it drops the
 * new connection's packet (counter `drop`) — established connections go on. The appliance says
 * so: a log line when the table fills and when it has room again, the status and its metrics,
 * and the controller moves nothing onto an appliance without room.
 */
import type { Logger } from 'pino';
import type { Conntrack, TableStats } from '../netlink/conntrack.js';

/** Above this share of nf_conntrack_max the table counts as full (a migration's creates would fail). */
export const FULL_RATIO = 0.99;
const WATCH_INTERVAL_MS = 1000;

export interface TableStatus {
  entries: number;
  /** nf_conntrack_max (the limit applies to this namespace's count). */
  max: number;
  /** Entries still possible: max − entries. */
  headroom: number;
  /** At FULL_RATIO of max, or new connections refused since the last look. */
  full: boolean;
  /** New connections refused because the table was full (the kernel's `drop`, summed over CPUs). */
  refused: number;
  /** Entries evicted to make room (never ASSURED ones). */
  earlyDropped: number;
  /** Entries a migration or takeover could not create here (a full table among the causes). */
  createsFailed: number;
}

export class TableWatch {
  private last: TableStats | undefined;
  private full = false;
  private timer: NodeJS.Timeout | undefined;
  private createsFailed = 0;

  constructor(
    private readonly conntrack: Pick<Conntrack, 'tableStats'>,
    private readonly log: Logger,
  ) {}

  start(): void {
    const tick = () => {
      this.look().catch((err: Error) => this.log.warn({ err: err.message }, 'conntrack table stats unreadable'));
    };
    tick();
    this.timer = setInterval(tick, WATCH_INTERVAL_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Creates of a migration's import or a takeover that failed (counted in the status). */
  failedCreates(n: number): void {
    if (n > 0) this.createsFailed += n;
  }

  /** Reads the kernel's counters now, logs a change between full and not, and returns the status. */
  async look(): Promise<TableStatus> {
    const now = await this.conntrack.tableStats();
    const refusedSince = this.last ? now.drop - this.last.drop : 0;
    const full = now.entries >= now.max * FULL_RATIO || refusedSince > 0;
    if (full && !this.full) {
      this.log.error({ entries: now.entries, max: now.max, refused: now.drop, earlyDropped: now.earlyDrop }, 'conntrack table full: new connections are refused, established ones go on');
    } else if (!full && this.full) {
      this.log.info({ entries: now.entries, max: now.max, refused: now.drop }, 'conntrack table has room again');
    }
    this.full = full;
    this.last = now;
    return this.status(now);
  }

  private status(s: TableStats): TableStatus {
    return {
      entries: s.entries,
      max: s.max,
      headroom: Math.max(0, s.max - s.entries),
      full: this.full,
      refused: s.drop,
      earlyDropped: s.earlyDrop,
      createsFailed: this.createsFailed,
    };
  }
}
