/**
 * The access table's mirror: every VIP's conntrack entries kept in memory as entry records,
 * up to date from conntrack's events (as conntrackd keeps its internal cache). Step 3 of a
 * migration streams the VIP's entries from here instead of dumping the kernel's table: a
 * dump walks the whole hash table (~260 ms for 100,000 entries here, more while the target
 * creates on the same machine) and would sit on the migration's critical path; a copy of
 * the mirror takes a few milliseconds. The status's entry counts come from here too.
 *
 * It listens to updates and destroys only, never to conntrack's `new` group: while anyone
 * listens to that group the kernel builds an event for every entry created, which doubles
 * the cost of creating 100,000 entries (230 → 490 ms measured here) — exactly what the
 * target of a migration does in step 3. An entry is mirrored from its first update: a TCP
 * connection once the server answered (SYN_RECV), a UDP flow once it saw a reply. One that
 * never got that far is not moved, and the target treats its next packet as new (a SYN
 * retransmitted; a UDP packet), which is all it was. Entries this appliance creates itself
 * (a migration's import, a takeover's copies) are handed to the mirror by their creator.
 *
 * The mirror is trusted only while no event was lost. After an overrun (ENOBUFS) it is
 * rebuilt from one dump of the whole table, the events that arrive meanwhile applied on
 * top. A reader that comes during the rebuild waits for it as long as it may (`waitMs`):
 * a dump of its own would walk the same table beside the rebuild's and slow both (at
 * 1,000,000 entries, overlapping readers' dumps kept a rebuild from ending in 10 minutes).
 * One that may not wait that long (step 3 inside the hold) gets undefined and dumps.
 *
 * A snapshot first passes a barrier: it creates and deletes a sentinel entry and waits for
 * the sentinel's destroy event. Netlink delivers one socket's events in order, so every
 * change the kernel made before — to the entries of a VIP whose address has just left — is
 * in the mirror by then.
 *
 * A migration's pre-copy starts a change journal on the VIP with its snapshot (track()):
 * from that snapshot on, every entry created, changed or destroyed is noted by its tuple,
 * and changes() hands out the difference — behind the same barrier — as records, those that
 * ended marked IPS_DYING. A journal that lost events (an overrun, a rebuild) or outgrew its
 * bound cannot vouch for its difference any more: the migration copies the whole table.
 */
import type { Logger } from 'pino';
import type { Conntrack, ConntrackEvents, CreateFailure } from '../netlink/conntrack.js';
import { IPCTNL_MSG_CT_DELETE, IPPROTO_TCP, IPPROTO_UDP, IPS_ASSURED, IPS_DYING, ctnlType } from '../netlink/ctnetlink.js';
import { RECORD_SIZE, rec, applyRecordUpdate } from '../netlink/entry-record.js';
import { decodeEntryRecord } from '../netlink/entry-record-ctnetlink.js';
import { NetlinkParseError, type NetlinkMessage } from '../netlink/message.js';

export type MirroredTable = Pick<Conntrack, 'subscribe' | 'dumpAllRecords' | 'dumpRecords' | 'create' | 'delete'>;

/**
 * A VIP's entries are deleted this many at a time, the barrier after each chunk
 * (deletePaced): the kernel sends one destroy event per entry to every socket listening (this
 * mirror's and the replicator's, 32 and 8 MiB of receive buffer), and a whole VIP deleted in
 * one request outruns their reader. After a migration of 100,000 entries the source's clean-up
 * overran both every time: the mirror rebuilt itself from a dump and every keeper was
 * resynchronised; at 1,000,000 the busy appliance also let its peer's BFD session expire.
 */
export const DELETE_CHUNK = 2000;
/** deletePaced gives up pacing after this many barriers in a row did not pass. */
const DELETE_BARRIER_FAILURES = 3;

/** The sentinel's ct mark: one past the largest VIP id (config.ts), so it is nobody's entry. */
export const BARRIER_MARK = 0x10000;
/** A barrier whose sentinel does not come back by then fails; the caller dumps instead. */
const BARRIER_TIMEOUT_MS = 250;
const RESYNC_RETRY_MS = 250;
/** Records handed over by added() are indexed this long after the last of them. */
const SETTLE_AFTER_MS = 1000;
const DELETE_TYPE = ctnlType(IPCTNL_MSG_CT_DELETE);
/**
 * A change journal noting more tuples than this stops (and frees them): a difference that
 * large is no cheaper to move during the hold than the table itself.
 */
export const MAX_JOURNAL_CHANGES = 250_000;
/**
 * An untouched TCP entry is in the difference (recreated on the target, its timeout whole
 * again) only when its pre-copied copy would have fewer than this many seconds left at the
 * cut-over: Linux's TCP_RTO_MAX. A connection with data unacknowledged sends at least that
 * often (a retransmission at worst), and that packet refreshes the target's entry. So a live
 * connection's copy (300 s from an event sent with data in flight, less the seconds since the
 * pre-copy) is left alone, and one in a short-timeout state (SYN_RECV, FIN_WAIT, CLOSE_WAIT,
 * TIME_WAIT...) is refreshed. UDP entries always are: nothing bounds a UDP flow's silence, and
 * every packet refreshes its timeout without an event (docs/migration.md, "Which entries").
 */
export const REFRESH_BELOW_S = 120;

/** What changes() hands out: the difference as records, or why the journal cannot vouch for it. */
export type Difference = { records: Buffer; upserts: number; ended: number } | { refused: string };

/**
 * One migration's change journal on one VIP: the tuples touched since its snapshot, each with
 * the record as last seen (for one that ended, all that is left of it).
 */
class ChangeJournal {
  readonly touched = new Map<string, Buffer>();
  refused: string | undefined;

  constructor(
    readonly migration: string,
    /** When the target got its first copy (the mirror's clock, ms): timeouts there age from then. */
    readonly copiedAt: number,
  ) {}

  note(b: Buffer, o: number): void {
    if (this.refused) return;
    if (this.touched.size >= MAX_JOURNAL_CHANGES) {
      this.refuse(`more than ${MAX_JOURNAL_CHANGES} entries changed since the pre-copy`);
      return;
    }
    this.touched.set(tupleKey(b, o), Buffer.from(b.subarray(o, o + RECORD_SIZE)));
  }

  refuse(why: string): void {
    this.refused ??= why;
    this.touched.clear();
  }
}

export interface MirrorStatus {
  /** The mirror holds every entry (no event lost since its last dump). */
  synced: boolean;
  entries: number;
  events: number;
  malformed: number;
  overruns: number;
  resyncs: number;
  /** Readers that came while the mirror could not vouch: they waited for the rebuild, or dumped the kernel's table (could not wait that long). */
  readersDuringRebuild: { waited: number; dumped: number };
  barriers: { passed: number; failed: number; lastMs: number };
}

/** The client side of a record's original tuple as one number (48 bits: exact in a double). */
const clientKey = (b: Buffer, o: number): number => rec.clientAddress(b, o) * 65536 + rec.clientPort(b, o);

/** The whole original tuple, for the rare client address and port with two entries in one VIP. */
const tupleKey = (b: Buffer, o: number): string =>
  `${clientKey(b, o)}>${rec.vipAddress(b, o)}:${rec.vipPort(b, o)}/${rec.protocol(b, o)}`;

/** Whether the records at a and b have the same original tuple. */
function sameTuple(a: Buffer, ao: number, b: Buffer, bo: number): boolean {
  return rec.clientAddress(a, ao) === rec.clientAddress(b, bo) && rec.vipAddress(a, ao) === rec.vipAddress(b, bo) && rec.clientPort(a, ao) === rec.clientPort(b, bo) && rec.protocol(a, ao) === rec.protocol(b, bo);
}

/**
 * One VIP's entries: records back to back in one buffer, so a snapshot is one copy; a
 * removed record's slot takes the last record. Found by the client's address and port (a
 * number key: string keys cost 1 µs an entry, 100 ms for a migration's 100,000); a second
 * entry of the same client address and port (another VIP port) goes by its whole tuple.
 */
class VipEntries {
  private records = Buffer.allocUnsafe(1024 * RECORD_SIZE);
  /** When each slot's record was last written (ms, the mirror's clock): half-open entries are aged by it. */
  private seen = new Float64Array(1024);
  private readonly byClient = new Map<number, number>();
  private readonly byTuple = new Map<string, number>();
  private count = 0;
  /** Records this appliance created, not yet indexed (see AccessTableMirror.added). */
  private pending: { records: Buffer; failed: ReadonlySet<number> }[] = [];
  /** The change journal of a migration pre-copying this VIP, if one runs. */
  journal: ChangeJournal | undefined;

  constructor(private readonly now: () => number) {}

  get size(): number {
    this.settle();
    return this.count;
  }

  later(records: Buffer, failed: ReadonlySet<number>): void {
    this.pending.push({ records, failed });
  }

  settle(): void {
    if (this.pending.length === 0) return;
    const pending = this.pending;
    this.pending = [];
    for (const { records, failed } of pending) {
      for (let i = 0, o = 0; o < records.length; i++, o += RECORD_SIZE) if (!failed.has(i)) this.upsert(records, o);
    }
  }

  private find(b: Buffer, o: number): number | undefined {
    const slot = this.byClient.get(clientKey(b, o));
    if (slot !== undefined && sameTuple(this.records, slot * RECORD_SIZE, b, o)) return slot;
    return this.byTuple.size > 0 ? this.byTuple.get(tupleKey(b, o)) : undefined;
  }

  /** Points the index of the record now at `slot` there. */
  private index(slot: number): void {
    const k = clientKey(this.records, slot * RECORD_SIZE);
    const holder = this.byClient.get(k);
    if (holder === undefined || holder === slot) this.byClient.set(k, slot);
    else this.byTuple.set(tupleKey(this.records, slot * RECORD_SIZE), slot);
  }

  upsert(src: Buffer, o: number): void {
    this.settle();
    this.journal?.note(src, o);
    let slot = this.find(src, o);
    if (slot === undefined) {
      slot = this.count++;
      if (this.count * RECORD_SIZE > this.records.length) this.grow();
      src.copy(this.records, slot * RECORD_SIZE, o, o + RECORD_SIZE);
      this.index(slot);
      this.seen[slot] = this.now();
      return;
    }
    this.seen[slot] = this.now();
    // An event carries what changed: no CTA_PROTOINFO keeps the TCP state and window, no
    // CTA_SEQ_ADJ_* / CTA_SYNPROXY keeps those.
    applyRecordUpdate(src, o, this.records, slot * RECORD_SIZE);
  }

  remove(src: Buffer, o: number): void {
    this.settle();
    const slot = this.find(src, o);
    if (slot === undefined) return;
    this.journal?.note(this.records, slot * RECORD_SIZE);
    this.unindex(slot);
    const last = --this.count;
    if (slot === last) return;
    this.unindex(last);
    this.records.copy(this.records, slot * RECORD_SIZE, last * RECORD_SIZE, (last + 1) * RECORD_SIZE);
    this.seen[slot] = this.seen[last]!;
    this.index(slot);
  }

  private unindex(slot: number): void {
    const k = clientKey(this.records, slot * RECORD_SIZE);
    if (this.byClient.get(k) === slot) this.byClient.delete(k);
    else this.byTuple.delete(tupleKey(this.records, slot * RECORD_SIZE));
  }

  /** A copy of the first `n` records (or all, if fewer), as stored: a delete needs their tuples only. */
  head(n: number): Buffer {
    this.settle();
    return Buffer.from(this.records.subarray(0, Math.min(n, this.count) * RECORD_SIZE));
  }

  /**
   * A copy of every record. Timeouts are the ones the kernel last reported, never aged: a
   * live connection's packets refresh its timeout without an event, so an aged timeout
   * could end it on the target; one too long only keeps a dead entry there a while. The
   * exception is a TCP entry whose handshake has not completed (not ASSURED): its timeout is
   * aged by the time since its last event, so that its age says whether it is a handshake in
   * flight or a SYN flood's leftover (entry-record.ts, handshakeInFlight).
   */
  snapshot(): Buffer {
    this.settle();
    const out = Buffer.from(this.records.subarray(0, this.count * RECORD_SIZE));
    const now = this.now();
    for (let i = 0, o = 0; i < this.count; i++, o += RECORD_SIZE) this.age(out, o, i, now);
    return out;
  }

  /** Ages the timeout of a half-open TCP entry's record (at `o` of `out`, from `slot`), as snapshot() says. */
  private age(out: Buffer, o: number, slot: number, now: number): void {
    if (rec.protocol(out, o) !== IPPROTO_TCP || (rec.status(out, o) & IPS_ASSURED) !== 0) return;
    const elapsed = Math.floor((now - this.seen[slot]!) / 1000);
    if (elapsed > 0) rec.setTimeout(out, o, Math.max(0, rec.timeout(out, o) - elapsed));
  }

  /**
   * The journal's difference: every touched tuple as it is now (an upsert) or, gone, as last
   * seen with IPS_DYING (ended); then every entry whose timeout the target must have refreshed.
   */
  difference(journal: ChangeJournal): { records: Buffer; upserts: number; ended: number } {
    this.settle();
    const now = this.now();
    const ageS = (now - journal.copiedAt) / 1000;
    const out: Buffer[] = [];
    const included = new Set<number>();
    const current = (slot: number): Buffer => {
      included.add(slot);
      const r = Buffer.from(this.records.subarray(slot * RECORD_SIZE, (slot + 1) * RECORD_SIZE));
      this.age(r, 0, slot, now);
      return r;
    };
    let ended = 0;
    for (const last of journal.touched.values()) {
      const slot = this.find(last, 0);
      if (slot === undefined) {
        const r = Buffer.from(last);
        rec.setStatus(r, 0, rec.status(r, 0) | IPS_DYING);
        out.push(r);
        ended++;
      } else if (!included.has(slot)) {
        out.push(current(slot));
      }
    }
    for (let slot = 0, o = 0; slot < this.count; slot++, o += RECORD_SIZE) {
      if (included.has(slot)) continue;
      if (rec.protocol(this.records, o) === IPPROTO_UDP || rec.timeout(this.records, o) - ageS < REFRESH_BELOW_S) out.push(current(slot));
    }
    // Ended first: the target deletes before it creates, so a fullnat inside port an ended
    // entry held and a new one took is free again when the new one arrives.
    out.sort((a, b) => (rec.status(b, 0) & IPS_DYING) - (rec.status(a, 0) & IPS_DYING));
    return { records: Buffer.concat(out), upserts: out.length - ended, ended };
  }

  private grow(): void {
    const records = Buffer.allocUnsafe(this.records.length * 2);
    this.records.copy(records);
    this.records = records;
    const seen = new Float64Array(this.seen.length * 2);
    seen.set(this.seen);
    this.seen = seen;
  }
}

export class AccessTableMirror {
  private vips: Map<number, VipEntries>;
  private events: ConntrackEvents | undefined;
  private synced = false;
  private resyncing: Promise<void> | undefined;
  /** Set when events were lost since the dump under way began: it must be redone. */
  private lost = false;
  /** Events that arrive during a resynchronisation's dump, applied after it. */
  private queued: NetlinkMessage[] | undefined;
  private closed = false;
  private readonly scratch = Buffer.alloc(RECORD_SIZE);
  private readonly barrierWaiters = new Map<number, () => void>();
  private nextBarrierPort = 1;
  private readonly counters = { events: 0, malformed: 0, overruns: 0, resyncs: 0 };
  private readonly barriers = { passed: 0, failed: 0, lastMs: 0 };
  private readonly readersDuringRebuild = { waited: 0, dumped: 0 };
  private settleTimer: NodeJS.Timeout | undefined;
  /** Change journals by VIP mark (one migration per VIP at a time). */
  private readonly journals = new Map<number, ChangeJournal>();
  /** VIPs added at run time whose table is filled from a dump of their mark; their events wait meanwhile. */
  private readonly filling = new Map<number, { table: VipEntries; queued: NetlinkMessage[] }>();

  constructor(
    private readonly table: MirroredTable,
    private marks: readonly number[],
    private readonly log: Logger,
    private readonly options: { eventBufferBytes?: number; now?: () => number } = {},
  ) {
    this.vips = this.emptyTables();
  }

  /** Listens to the events, then fills the mirror from one dump. */
  start(): Promise<void> {
    // 32 MiB: ~100,000 destroy events of a bulk delete without an overrun.
    this.events = this.table.subscribe({ groups: ['update', 'destroy'], raw: true, receiveBufferBytes: this.options.eventBufferBytes ?? 32 << 20 });
    this.events.on('message', (msg: NetlinkMessage) => {
      if (this.queued) this.queued.push(msg);
      else this.apply(msg);
    });
    this.events.on('overrun', () => {
      this.counters.overruns++;
      this.log.warn({ overruns: this.counters.overruns }, 'conntrack events lost (ENOBUFS): rebuilding the access table mirror');
      void this.resync();
    });
    this.events.on('error', (err: Error) => this.log.error({ err: err.message }, 'access table mirror: event socket error'));
    return this.resync();
  }

  /**
   * A copy of the VIP's entries as the mirror holds them now, without the barrier: for counts
   * a status shows, which need no guarantee about changes of the last milliseconds (a barrier
   * per VIP per status is a kernel round trip each, and one that times out under load would
   * make the reader dump). Undefined while the mirror cannot vouch.
   */
  current(mark: number): Buffer | undefined {
    return this.complete(mark) ? this.vips.get(mark)!.snapshot() : undefined;
  }

  /**
   * A copy of the VIP's entries as records, once every change the kernel made before this
   * call is in the mirror; undefined if the mirror cannot vouch for that (then dump). During a
   * rebuild it waits up to `waitMs` for the rebuild to end.
   */
  async snapshot(mark: number, waitMs = 0): Promise<Buffer | undefined> {
    if (!this.vips.has(mark) || !(await this.rebuilt(waitMs)) || !(await this.barrier()) || !this.complete(mark)) return undefined;
    return this.vips.get(mark)!.snapshot();
  }

  /**
   * Deletes the VIP's entries through `remove` (by tuple), DELETE_CHUNK at a time: each
   * chunk is the first of the table as the mirror lists it then, sent once the destroy events
   * of the one before were read (the barrier) and had taken those entries out of the list. So
   * no copy of a whole table is made (80 MB at 1,000,000 entries), only of a chunk. Does
   * nothing for a table of one chunk or less, or when the mirror cannot vouch. A barrier that
   * does not pass (its events still being read, under load) only delays the next chunk by its
   * timeout (the chunk after may repeat entries already deleted: the kernel says they are gone);
   * it stops after DELETE_BARRIER_FAILURES of them in a row, once the mirror lost events anyway,
   * or when a chunk took nothing out of the list. Either way the caller deletes by mark after
   * it: entries created meanwhile, or the rest at once.
   */
  async deletePaced(mark: number, remove: (records: Buffer) => Promise<unknown>): Promise<void> {
    for (let failed = 0; failed < DELETE_BARRIER_FAILURES && this.complete(mark); ) {
      const vip = this.vips.get(mark)!;
      const before = vip.size;
      if (before <= DELETE_CHUNK) return;
      await remove(vip.head(DELETE_CHUNK));
      const passed = await this.barrier();
      if (passed && vip.size >= before) return;
      failed = passed ? 0 : failed + 1;
    }
  }

  /** Whether the mirror vouches for the VIP's table: no event lost, not being filled. */
  private complete(mark: number): boolean {
    return this.synced && this.vips.has(mark) && !this.filling.has(mark);
  }

  /**
   * The VIPs mirrored from now on (a reload added or removed some). A VIP gone loses its table
   * and its journal; a VIP added is filled from a dump of its mark (entries a VIP with the same
   * id left behind), the events of its entries applied after, while every other VIP's table,
   * journal and migration go on untouched: no whole rebuild. The fill runs on its own (a
   * reload does not wait on a dump); until it ends the VIP's reads dump. Resolves with it.
   */
  setMarks(marks: readonly number[]): Promise<void> {
    const next = new Set(marks);
    for (const mark of this.marks) {
      if (next.has(mark)) continue;
      this.endTracking(mark);
      this.vips.delete(mark);
      this.filling.delete(mark);
    }
    const added = marks.filter((m) => !this.marks.includes(m));
    this.marks = [...marks];
    return Promise.all(added.map((m) => this.fill(m))).then(() => undefined);
  }

  private async fill(mark: number): Promise<void> {
    const table = new VipEntries(this.clock);
    const filling = { table, queued: [] as NetlinkMessage[] };
    this.filling.set(mark, filling);
    this.vips.set(mark, table);
    try {
      await this.table.dumpRecords(mark, (records) => {
        for (let o = 0; o < records.length; o += RECORD_SIZE) table.upsert(records, o);
      });
    } catch (err) {
      this.log.warn({ mark, err: (err as Error).message }, 'access table mirror: dump of an added VIP failed, rebuilding');
      void this.resync();
    } finally {
      if (this.filling.get(mark) === filling) {
        this.filling.delete(mark);
        // A rebuild meanwhile replaced the table with its own, which needs none of these.
        if (this.vips.get(mark) === table) for (const msg of filling.queued) this.apply(msg);
      }
    }
  }

  /**
   * Whether the mirror is complete, after waiting up to `waitMs` for a rebuild under way (or
   * the rebuilds that follow it while events keep being lost). The barrier comes after this:
   * what the kernel changed before the reader's call is in the rebuilt mirror all the same.
   */
  private async rebuilt(waitMs: number): Promise<boolean> {
    if (this.synced) return true;
    const t0 = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, waitMs)));
    try {
      while (!this.synced && this.resyncing && !this.closed && performance.now() - t0 < waitMs) await Promise.race([this.resyncing, late]);
    } finally {
      clearTimeout(timer);
    }
    this.readersDuringRebuild[this.synced ? 'waited' : 'dumped']++;
    return this.synced;
  }

  /**
   * A migration's pre-copy: the VIP's entries as snapshot() gives them, and from that very
   * moment a change journal for `migration` (replacing any older one of the VIP). Undefined
   * if the mirror cannot vouch for being complete (after waiting up to `waitMs` for a rebuild).
   */
  async track(mark: number, migration: string, waitMs = 0): Promise<Buffer | undefined> {
    if (!this.vips.has(mark) || !(await this.rebuilt(waitMs)) || !(await this.barrier()) || !this.complete(mark)) return undefined;
    // The journal starts and the snapshot is taken in one synchronous run: no event between.
    const vip = this.vips.get(mark)!;
    const journal = new ChangeJournal(migration, this.clock());
    this.journals.set(mark, journal);
    vip.journal = journal;
    return vip.snapshot();
  }

  /**
   * What changed on the VIP since `migration`'s snapshot (or its last restart), once every
   * change the kernel made before this call is in: created and changed entries as they are
   * now, ended ones marked IPS_DYING, and those whose timeout the target must refresh.
   * `restart`: a new journal begins at this difference (a further pre-copy round).
   */
  async changes(mark: number, migration: string, restart: boolean): Promise<Difference> {
    const why = this.journalRefused(mark, migration);
    if (why) return { refused: why };
    if (!(await this.barrier())) return { refused: 'the mirror\'s barrier did not pass' };
    const journal = this.journals.get(mark);
    const again = this.journalRefused(mark, migration);
    if (again || !journal) return { refused: again ?? 'the change journal ended' };
    const vip = this.vips.get(mark)!;
    const diff = vip.difference(journal);
    if (restart) {
      const next = new ChangeJournal(migration, journal.copiedAt);
      this.journals.set(mark, next);
      vip.journal = next;
    }
    return diff;
  }

  /** Ends the VIP's change journal (the migration took its difference, or gave up). */
  endTracking(mark: number, migration?: string): void {
    const journal = this.journals.get(mark);
    if (!journal || (migration !== undefined && journal.migration !== migration)) return;
    this.journals.delete(mark);
    const vip = this.vips.get(mark);
    if (vip?.journal === journal) vip.journal = undefined;
  }

  private journalRefused(mark: number, migration: string): string | undefined {
    const journal = this.journals.get(mark);
    if (!journal || journal.migration !== migration) return `no change journal of migration ${migration} on this VIP (never started, ended, or replaced by a newer pre-copy)`;
    if (!this.synced) return 'the mirror lost events and is rebuilding';
    return journal.refused;
  }

  /** Rebuilds the mirror from one dump (entries made behind the appliance's back); resolves once complete. */
  rebuild(): Promise<void> {
    return this.resync();
  }

  /**
   * Entries this appliance has just created from records (no event tells of them): all of
   * `records` but the failed ones; one that existed already is replaced by its record. A
   * migration's import hands over 100,000 at once: they are indexed a second later (~40 ms
   * of JavaScript, off the migration's critical path), or as soon as anything reads or
   * changes that VIP's table, so the order of changes holds.
   */
  added(records: Buffer, failures: readonly CreateFailure[] = []): void {
    // During a rebuild's dump the tables are about to be replaced by the dump's, which may
    // have passed these entries already: dump again once this one ends.
    if (this.queued) this.lost = true;
    const failed = new Set(failures.map((f) => f.index));
    const marks = new Set<number>();
    for (let o = 0; o < records.length; o += RECORD_SIZE) marks.add(rec.mark(records, o));
    if (marks.size === 1) {
      this.vips.get([...marks][0]!)?.later(records, failed);
    } else {
      for (let i = 0, o = 0; o < records.length; i++, o += RECORD_SIZE) if (!failed.has(i)) this.vips.get(rec.mark(records, o))?.upsert(records, o);
    }
    clearTimeout(this.settleTimer);
    this.settleTimer = setTimeout(() => {
      for (const v of this.vips.values()) v.settle();
    }, SETTLE_AFTER_MS).unref();
  }

  /**
   * Indexes now what added() handed over for the VIP. A pre-copy ends with this: its records
   * (100,000: tens of ms of JavaScript) are indexed before the hold rather than inside it,
   * where the first event of the VIP or the timer would otherwise do it.
   */
  index(mark: number): void {
    this.vips.get(mark)?.settle();
  }

  /** Whether a rebuild is under way (the mirror cannot vouch until it ends). */
  get rebuilding(): boolean {
    return !this.synced && this.resyncing !== undefined;
  }

  /** The VIP's entry count, or undefined while the mirror is not complete. */
  count(mark: number): number | undefined {
    return this.complete(mark) ? this.vips.get(mark)?.size : undefined;
  }

  status(): MirrorStatus {
    let entries = 0;
    for (const v of this.vips.values()) entries += v.size;
    return { synced: this.synced, entries, ...this.counters, readersDuringRebuild: { ...this.readersDuringRebuild }, barriers: { ...this.barriers } };
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.settleTimer);
    this.events?.close();
  }

  private emptyTables(): Map<number, VipEntries> {
    return new Map(this.marks.map((m) => [m, new VipEntries(this.clock)]));
  }

  /** The mirror's clock (ms): entries' last events, journals' copies. */
  private readonly clock = (): number => (this.options.now ?? performance.now.bind(performance))();

  private apply(msg: NetlinkMessage): void {
    this.counters.events++;
    const r = this.scratch;
    try {
      if (!decodeEntryRecord(msg.payload, r)) return;
    } catch (e) {
      if (!(e instanceof NetlinkParseError)) throw e;
      this.counters.malformed++;
      return;
    }
    const mark = rec.mark(r, 0);
    if (mark === BARRIER_MARK) {
      if (msg.type === DELETE_TYPE) this.barrierWaiters.get(rec.clientPort(r, 0))?.();
      return;
    }
    const vip = this.vips.get(mark);
    if (!vip) return;
    const filling = this.filling.get(mark);
    if (filling?.table === vip) {
      filling.queued.push(msg);
      return;
    }
    if (msg.type === DELETE_TYPE) vip.remove(r, 0);
    else vip.upsert(r, 0);
  }

  /** Rebuilds every VIP's table from one dump; events lost during it start it over. */
  private resync(): Promise<void> {
    this.synced = false;
    this.lost = true;
    // Changes may have gone unseen: no difference can be vouched for any more.
    for (const j of this.journals.values()) j.refuse('the mirror lost events (or was rebuilt) since the pre-copy');
    this.resyncing ??= (async () => {
      while (this.lost && !this.closed) {
        this.lost = false;
        this.queued = [];
        const fresh = this.emptyTables();
        try {
          await this.table.dumpAllRecords((records) => {
            for (let o = 0; o < records.length; o += RECORD_SIZE) fresh.get(rec.mark(records, o))?.upsert(records, o);
          });
        } catch (err) {
          this.log.warn({ err: (err as Error).message }, 'access table mirror: dump failed, retrying');
          this.lost = true;
          this.queued = undefined;
          await new Promise((r) => setTimeout(r, RESYNC_RETRY_MS));
          continue;
        }
        this.vips = fresh;
        const queued = this.queued;
        this.queued = undefined;
        for (const msg of queued) this.apply(msg);
      }
      if (!this.closed) {
        this.synced = true;
        this.counters.resyncs++;
      }
    })().finally(() => {
      this.resyncing = undefined;
    });
    return this.resyncing;
  }

  /** Creates and deletes a sentinel entry and waits for its destroy event (see the module's comment). */
  async barrier(): Promise<boolean> {
    const t0 = performance.now();
    const port = this.nextBarrierPort;
    this.nextBarrierPort = (port % 65535) + 1;
    const orig = { src: '0.0.0.0', dst: '0.0.0.0', sport: port, dport: 9, proto: IPPROTO_UDP };
    let timer: NodeJS.Timeout | undefined;
    const seen = new Promise<boolean>((resolve) => {
      this.barrierWaiters.set(port, () => resolve(true));
      timer = setTimeout(() => resolve(false), BARRIER_TIMEOUT_MS);
    });
    let passed = false;
    try {
      const created = await this.table.create([{ orig, timeout: 1, mark: BARRIER_MARK }]);
      passed = created.created === 1 && (await this.table.delete(orig)) && (await seen);
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'access table mirror: barrier entry failed');
    } finally {
      clearTimeout(timer);
      this.barrierWaiters.delete(port);
    }
    if (passed) this.barriers.passed++;
    else this.barriers.failed++;
    this.barriers.lastMs = Math.round((performance.now() - t0) * 100) / 100;
    return passed;
  }
}
