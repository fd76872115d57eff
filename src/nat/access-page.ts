/**
 * Pages of a VIP's access table for the operator's console: sorted, filtered and cut in
 * the appliance from the 80-byte entry records of one kernel dump (entry-record.ts), so a
 * console never receives more than the rows it draws, whatever the table's size.
 *
 * Reading 100,000 entries and sorting them for the views being watched costs ~0.1–0.3 s of
 * CPU (a kernel dump, or a copy of the access table mirror and the sorts), so pages are
 * served from a snapshot of the table whose greatest age grows with what the last snapshot
 * cost, read and sorts together: the work a watching console causes stays near 2 % of a core
 * (SNAPSHOT_CPU_SHARE). Small tables are re-read every second. The page says how old its snapshot is; an expired snapshot is still
 * served while the next dump runs, so a page never waits for a dump but the first.
 */
import { TCP_CONNTRACK_NAMES } from '../netlink/ctnetlink.js';
import { RECORD_SIZE, rec } from '../netlink/entry-record.js';

export const SORT_KEYS = ['client', 'vip', 'inside', 'server', 'state', 'timeout'] as const;
export type SortKey = (typeof SORT_KEYS)[number];
export const FILTER_FIELDS = ['client', 'server', 'inside', 'state'] as const;
export const MAX_PAGE_ROWS = 1000;

/** One access-table entry as the console draws it. */
export interface AccessRow {
  client: string;
  vip: string;
  /** The fullnat SNAT source (inside address:port); absent in dnat. */
  inside?: string;
  server: string;
  /** conntrack's TCP state name (ESTABLISHED, TIME_WAIT...), or UDP. */
  tcpState: string;
  /** Seconds left. */
  timeout: number;
}

export interface PageQuery {
  offset: number;
  limit: number;
  /** A sort key, descending with a leading '-'. */
  sort: string;
  /** Space-separated terms, all of which must hold: `field:text` or bare text (any field). */
  filter: string;
}

export interface AccessPage {
  vip: string;
  /** Entries in the snapshot, and those the filter lets through. */
  total: number;
  matched: number;
  offset: number;
  limit: number;
  sort: string;
  filter: string;
  rows: AccessRow[];
  /** When the snapshot was dumped, and how long the dump took. */
  snapshotAt: string;
  snapshotAgeMs: number;
  dumpMs: number;
}

export class PageQueryError extends Error {
  constructor(
    message: string,
    readonly field: string,
  ) {
    super(message);
  }
}

/** '0'..'255': an address is written from four lookups, not four number conversions. */
const OCTETS = Array.from({ length: 256 }, (_, i) => String(i));
const endpoint = (address: number, port: number): string =>
  `${OCTETS[address >>> 24]}.${OCTETS[(address >>> 16) & 255]}.${OCTETS[(address >>> 8) & 255]}.${OCTETS[address & 255]}:${port}`;

function stateName(b: Buffer, r: number): string {
  if (rec.protocol(b, r) !== 6) return 'UDP';
  return TCP_CONNTRACK_NAMES[rec.tcpState(b, r)] ?? `STATE_${rec.tcpState(b, r)}`;
}

export function rowAt(b: Buffer, r: number): AccessRow {
  const inside = rec.insideAddress(b, r) !== 0;
  return {
    client: endpoint(rec.clientAddress(b, r), rec.clientPort(b, r)),
    vip: endpoint(rec.vipAddress(b, r), rec.vipPort(b, r)),
    ...(inside ? { inside: endpoint(rec.insideAddress(b, r), rec.insidePort(b, r)) } : {}),
    server: endpoint(rec.serverAddress(b, r), rec.serverPort(b, r)),
    tcpState: stateName(b, r),
    timeout: rec.timeout(b, r),
  };
}

type Predicate = (b: Buffer, r: number) => boolean;

/**
 * `client:198.51.100.10 state:est` → a test on a record; text matches case-insensitively as a
 * substring, every term must match. Each record's fields are written out once however many
 * terms there are (a bare term looks at them all, joined), and repeated terms count once: 100
 * terms on 100,000 entries must not stall the appliance's event loop.
 */
export function parseFilter(filter: string): Predicate | undefined {
  const terms = [...new Set(filter.trim().toLowerCase().split(/\s+/).filter(Boolean))];
  if (terms.length === 0) return undefined;
  const tests = terms.map((term): { field: (typeof FILTER_FIELDS)[number] | undefined; text: string } => {
    const colon = term.indexOf(':');
    const field = colon > 0 ? term.slice(0, colon) : '';
    // A bare address:port ("198.51.100.10:4000") is text, not a field.
    const named = (FILTER_FIELDS as readonly string[]).includes(field);
    return named ? { field: field as (typeof FILTER_FIELDS)[number], text: term.slice(colon + 1) } : { field: undefined, text: term };
  });
  return (b, r) => {
    // Each field written out at most once per record, only if a term asks for it.
    let client: string | undefined;
    let server: string | undefined;
    let inside: string | undefined;
    let state: string | undefined;
    let all: string | undefined;
    for (const t of tests) {
      let haystack: string;
      switch (t.field) {
        case 'client':
          haystack = client ??= endpoint(rec.clientAddress(b, r), rec.clientPort(b, r));
          break;
        case 'server':
          haystack = server ??= endpoint(rec.serverAddress(b, r), rec.serverPort(b, r));
          break;
        case 'inside':
          haystack = inside ??= rec.insideAddress(b, r) === 0 ? '' : endpoint(rec.insideAddress(b, r), rec.insidePort(b, r));
          break;
        case 'state':
          haystack = state ??= stateName(b, r).toLowerCase();
          break;
        default:
          // Fields joined by a newline, which no term contains: a match never spans two.
          client ??= endpoint(rec.clientAddress(b, r), rec.clientPort(b, r));
          server ??= endpoint(rec.serverAddress(b, r), rec.serverPort(b, r));
          inside ??= rec.insideAddress(b, r) === 0 ? '' : endpoint(rec.insideAddress(b, r), rec.insidePort(b, r));
          state ??= stateName(b, r).toLowerCase();
          haystack = all ??= `${client}\n${server}\n${inside}\n${state}`;
      }
      if (!haystack.includes(t.text)) return false;
    }
    return true;
  };
}

function parseSort(sort: string): { key: SortKey; descending: boolean } {
  const descending = sort.startsWith('-');
  const key = (descending ? sort.slice(1) : sort) as SortKey;
  if (!SORT_KEYS.includes(key)) throw new PageQueryError(`sort must be one of ${SORT_KEYS.join(', ')} (with '-' for descending), not '${sort}'`, 'query.sort');
  return { key, descending };
}

/** The sort key of a record as one number: address and port for endpoints (48 bits, exact in a double). */
function keyOf(key: SortKey): (b: Buffer, r: number) => number {
  switch (key) {
    case 'client':
      return (b, r) => rec.clientAddress(b, r) * 65536 + rec.clientPort(b, r);
    case 'vip':
      return (b, r) => rec.vipAddress(b, r) * 65536 + rec.vipPort(b, r);
    case 'inside':
      return (b, r) => rec.insideAddress(b, r) * 65536 + rec.insidePort(b, r);
    case 'server':
      return (b, r) => rec.serverAddress(b, r) * 65536 + rec.serverPort(b, r);
    case 'state':
      return (b, r) => (rec.protocol(b, r) === 6 ? rec.tcpState(b, r) : 255);
    case 'timeout':
      return (b, r) => rec.timeout(b, r);
  }
}

/**
 * The order of the records that pass `filter`, sorted by `sort` (ties by client, so pages
 * are stable): record indices.
 */
export function orderRecords(records: Buffer, sort: string, filter: string): Uint32Array {
  const { key, descending } = parseSort(sort);
  const test = parseFilter(filter);
  const n = Math.floor(records.length / RECORD_SIZE);
  let order = new Uint32Array(n);
  let m = 0;
  for (let i = 0; i < n; i++) if (!test || test(records, i * RECORD_SIZE)) order[m++] = i;
  order = order.subarray(0, m);
  const primary = keyOf(key);
  const tie = keyOf('client');
  const k1 = new Float64Array(n);
  const k2 = new Float64Array(n);
  for (const i of order) {
    k1[i] = primary(records, i * RECORD_SIZE);
    k2[i] = tie(records, i * RECORD_SIZE);
  }
  const sign = descending ? -1 : 1;
  order.sort((a, b) => sign * (k1[a]! - k1[b]! || k2[a]! - k2[b]!));
  return order;
}

export function validateQuery(q: Partial<PageQuery>): PageQuery {
  const offset = q.offset ?? 0;
  const limit = q.limit ?? 50;
  if (!Number.isInteger(offset) || offset < 0) throw new PageQueryError('offset must be an integer ≥ 0', 'query.offset');
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE_ROWS) throw new PageQueryError(`limit must be an integer from 1 to ${MAX_PAGE_ROWS}`, 'query.limit');
  const sort = q.sort ?? 'client';
  parseSort(sort);
  return { offset, limit, sort, filter: q.filter ?? '' };
}

interface Snapshot {
  records: Buffer;
  takenAt: number;
  takenAtIso: string;
  dumpMs: number;
  /** What the snapshot cost: its read and every order sorted on it. */
  costMs: number;
  /** Orders already computed on this snapshot, by `sort filter` (a few: the console's views). */
  orders: Map<string, Uint32Array>;
}

/** Of one core, what snapshots taken for watching a table may take on average. */
export const SNAPSHOT_CPU_SHARE = 0.02;
const MIN_SNAPSHOT_AGE_MS = 1000;
const ORDERS_KEPT = 8;

/**
 * The appliance's page server: one snapshot per VIP, read again when a page is asked of
 * a snapshot older than max(1 s, its cost / SNAPSHOT_CPU_SHARE). `dump` returns the
 * VIP's records; `now` is injected for tests.
 */
export class AccessPages {
  private readonly snapshots = new Map<string, Snapshot>();
  private readonly pending = new Map<string, Promise<Snapshot>>();

  constructor(
    private readonly dump: (vip: string) => Promise<Buffer>,
    private readonly now: () => number = () => performance.now(),
    private readonly wallClock: () => Date = () => new Date(),
  ) {}

  /** How old a snapshot may be before a page asks for a new one, by what the last one cost. */
  static maxAgeMs(costMs: number): number {
    return Math.max(MIN_SNAPSHOT_AGE_MS, costMs / SNAPSHOT_CPU_SHARE);
  }

  async page(vip: string, query: Partial<PageQuery>): Promise<AccessPage> {
    const q = validateQuery(query);
    const snap = await this.snapshot(vip);
    const orderKey = `${q.sort} ${q.filter}`;
    let order = snap.orders.get(orderKey);
    if (!order) {
      const t0 = this.now();
      order = orderRecords(snap.records, q.sort, q.filter);
      snap.costMs += this.now() - t0;
      if (snap.orders.size >= ORDERS_KEPT) snap.orders.delete(snap.orders.keys().next().value!);
      snap.orders.set(orderKey, order);
    }
    const rows: AccessRow[] = [];
    for (let i = q.offset; i < Math.min(order.length, q.offset + q.limit); i++) rows.push(rowAt(snap.records, order[i]! * RECORD_SIZE));
    return {
      vip,
      total: snap.records.length / RECORD_SIZE,
      matched: order.length,
      ...q,
      rows,
      snapshotAt: snap.takenAtIso,
      snapshotAgeMs: Math.round(this.now() - snap.takenAt),
      dumpMs: Math.round(snap.dumpMs * 10) / 10,
    };
  }

  /** Drops a VIP's snapshot (it moved away, or its entries were deleted). */
  invalidate(vip: string): void {
    this.snapshots.delete(vip);
  }

  /**
   * The VIP's snapshot. An old one is still served while the next dump runs (stale while
   * revalidating), so only a VIP's very first page waits for a dump; the orders the old
   * snapshot had are sorted again on the new one as soon as it lands.
   */
  private async snapshot(vip: string): Promise<Snapshot> {
    const have = this.snapshots.get(vip);
    if (have && this.now() - have.takenAt < AccessPages.maxAgeMs(have.costMs)) return have;
    const next = this.pending.get(vip) ?? this.redump(vip, have);
    if (have) {
      next.catch(() => undefined); // the next page asks again
      return have;
    }
    return next;
  }

  private redump(vip: string, previous: Snapshot | undefined): Promise<Snapshot> {
    const t0 = this.now();
    const p = this.dump(vip)
      .then((records) => {
        const takenAt = this.now();
        const snap: Snapshot = { records, takenAt, takenAtIso: this.wallClock().toISOString(), dumpMs: takenAt - t0, costMs: 0, orders: new Map() };
        for (const key of previous?.orders.keys() ?? []) {
          const space = key.indexOf(' ');
          snap.orders.set(key, orderRecords(records, key.slice(0, space), key.slice(space + 1)));
        }
        snap.costMs = this.now() - t0;
        this.snapshots.set(vip, snap);
        return snap;
      })
      .finally(() => this.pending.delete(vip));
    this.pending.set(vip, p);
    return p;
  }
}
