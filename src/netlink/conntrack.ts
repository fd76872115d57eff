/**
 * The access table: the kernel's conntrack entries, read and written over ctnetlink.
 * I/O only; messages are built and parsed by ctnetlink.ts and entry-record.ts.
 */
import { EventEmitter } from 'node:events';
import { constants as osConstants } from 'node:os';
import {
  NFNLGRP_CONNTRACK_DESTROY,
  NFNLGRP_CONNTRACK_NEW,
  NFNLGRP_CONNTRACK_UPDATE,
  IPCTNL_MSG_CT_GET_STATS,
  IPCTNL_MSG_CT_GET_STATS_CPU,
  IPCTNL_MSG_CT_NEW,
  ctnlType,
  decodeEntry,
  decodeStatsCpu,
  decodeStatsEntries,
  decodeStatsGlobal,
  encodeCreate,
  encodeDelete,
  encodeDeleteByMark,
  type StatusFilter,
  encodeDump,
  encodeFlush,
  encodeGet,
  encodeGetStats,
  encodeGetStatsCpu,
  eventType,
  isEntryMessage,
  nfnlGroupBit,
  type ConntrackCreate,
  type ConntrackEntry,
  type ConntrackEventType,
  type ConntrackTuple,
} from './ctnetlink.js';
import { CreateEncoder, RecordCollector, encodeDeletes } from './entry-record-ctnetlink.js';
import { RECORD_SIZE, RecordFormatError, rec } from './entry-record.js';
import { NETLINK_NETFILTER, NLMSG_HDRLEN, NetlinkParseError, align4, type NetlinkMessage } from './message.js';
import { NetlinkError, NetlinkSocket, errnoName } from './socket.js';

const { EEXIST, ENOENT } = osConstants.errno;

export interface ConntrackOptions {
  /** Network namespace (name under /run/netns or a path); default: the process's own. */
  netns?: string;
  /** SO_RCVBUFFORCE of the request socket: dumps and acks of large batches land here. */
  receiveBufferBytes?: number;
  /**
   * Records per create or delete batch (one sendmsg). The kernel runs a batch without a
   * preemption point, so a smaller one bounds how long it holds a CPU.
   */
  batchRecords?: number;
  /** NLM_F_ACK on every create, or only on the last of each batch (failures come back either way). */
  ackEach?: boolean;
}

/** Conntrack.tableStats(). */
export interface TableStats {
  entries: number;
  max: number;
  drop: number;
  earlyDrop: number;
  insertFailed: number;
}

export interface CreateFailure {
  /** Index of the record (or entry) in the input. */
  index: number;
  errno: number;
  code: string;
  kernelMessage?: string;
}

export interface CreateResult {
  created: number;
  /** Entries that were there already (EEXIST): a repeated step, not a failure. */
  existing: number;
  failures: CreateFailure[];
}

export interface DumpRecordsResult {
  records: number;
  /** Entries of the mark that are not IPv4 TCP/UDP and so have no record. */
  skipped: number;
}

export interface SubscribeOptions {
  /** Default: all three. */
  groups?: ConntrackEventType[];
  /** SO_RCVBUFFORCE of the event socket. */
  receiveBufferBytes?: number;
  /**
   * A cheap test of the raw message before it is decoded (the replicator reads the mark and
   * the TCP state in place): refused messages cost no decoding and are counted in `filtered`.
   */
  accept?: (msg: NetlinkMessage) => boolean;
  /**
   * Hand each entry message over undecoded, as 'message' (NetlinkMessage): for an owner
   * that decodes in place (entry-record.ts) rather than into objects.
   */
  raw?: boolean;
}

/**
 * Conntrack events: 'new' | 'update' | 'destroy' (entry: ConntrackEntry) — or, subscribed
 * raw, 'message' (the undecoded NetlinkMessage, see eventType) — and 'overrun' when the
 * kernel dropped events (ENOBUFS): the owner must resynchronise by a dump.
 * Messages that do not decode are counted in `malformed` and dropped.
 */
export class ConntrackEvents extends EventEmitter {
  malformed = 0;
  overruns = 0;
  filtered = 0;

  constructor(
    private readonly socket: NetlinkSocket,
    private readonly accept?: (msg: NetlinkMessage) => boolean,
    private readonly raw = false,
  ) {
    super();
    socket.on('message', (msg: NetlinkMessage) => this.onMessage(msg));
    socket.on('overrun', () => {
      this.overruns++;
      this.emit('overrun');
    });
    socket.on('error', (e: Error) => this.emit('error', e));
  }

  private onMessage(msg: NetlinkMessage): void {
    if (!isEntryMessage(msg)) return;
    if (this.accept && !this.accept(msg)) {
      this.filtered++;
      return;
    }
    if (this.raw) {
      this.emit('message', msg);
      return;
    }
    let entry: ConntrackEntry | undefined;
    try {
      entry = decodeEntry(msg);
    } catch (e) {
      if (!(e instanceof NetlinkParseError)) throw e;
      this.malformed++;
      return;
    }
    if (entry) this.emit(eventType(msg), entry);
  }

  /** The socket's parse failures count too. */
  get dropped(): number {
    return this.malformed + this.socket.malformed;
  }

  close(): void {
    this.socket.close();
    this.removeAllListeners();
  }
}

const GROUPS: Record<ConntrackEventType, number> = {
  new: NFNLGRP_CONNTRACK_NEW,
  update: NFNLGRP_CONNTRACK_UPDATE,
  destroy: NFNLGRP_CONNTRACK_DESTROY,
};

export class Conntrack {
  private readonly socket: NetlinkSocket;
  private readonly encoder: CreateEncoder;
  private creating: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: ConntrackOptions = {}) {
    const batchRecords = options.batchRecords ?? 1000;
    this.encoder = new CreateEncoder(batchRecords, options.ackEach ?? false);
    this.socket = new NetlinkSocket(NETLINK_NETFILTER, {
      receiveBufferBytes: options.receiveBufferBytes ?? 16 << 20,
      // A batch goes in one sendmsg; the kernel refuses one larger than the send buffer.
      sendBufferBytes: Math.max(1 << 20, this.encoder.bufferBytes * 2),
      ...(options.netns === undefined ? {} : { netns: options.netns }),
    });
  }

  /** Every IPv4 entry, or those of one ct mark (filtered in the kernel). */
  async dump(filter?: { mark: number; mask?: number }): Promise<ConntrackEntry[]> {
    const out: ConntrackEntry[] = [];
    const seq = this.socket.reserveSeq();
    const what = filter ? `dump of ct mark ${filter.mark}` : 'dump';
    await this.socket.dump(what, encodeDump(seq, filter), seq, (msg) => {
      if (!isEntryMessage(msg)) return;
      const e = decodeEntry(msg);
      if (e) out.push(e);
    });
    return out;
  }

  /**
   * The entries of ct mark `mark` as records, decoded in place from the kernel's
   * datagrams and handed out in chunks of `chunkRecords` (each a Buffer the receiver keeps).
   */
  dumpRecords(mark: number, onChunk: (records: Buffer) => void, chunkRecords = 1000): Promise<DumpRecordsResult> {
    return this.dumpToRecords(`dump of ct mark ${mark} to records`, { mark }, onChunk, chunkRecords);
  }

  /** Every IPv4 TCP/UDP entry of the namespace as records, whatever its mark. */
  dumpAllRecords(onChunk: (records: Buffer) => void, chunkRecords = 1000): Promise<DumpRecordsResult> {
    return this.dumpToRecords('dump to records', undefined, onChunk, chunkRecords);
  }

  private async dumpToRecords(what: string, filter: { mark: number } | undefined, onChunk: (records: Buffer) => void, chunkRecords: number): Promise<DumpRecordsResult> {
    const collector = new RecordCollector(chunkRecords, onChunk);
    const seq = this.socket.reserveSeq();
    await this.socket.dumpDatagrams(what, encodeDump(seq, filter), seq, (d) => collector.addDatagram(d));
    collector.flush();
    return { records: collector.records, skipped: collector.skipped };
  }

  /**
   * Creates an entry per record (see entry-record.ts), in batches of one sendmsg each.
   * Calls run one after the other: they share the encoder's one preallocated buffer.
   */
  createFromRecords(records: Buffer): Promise<CreateResult> {
    const run = () => this.createNow(records);
    const result = this.creating.then(run, run);
    this.creating = result.catch(() => undefined);
    return result;
  }

  private async createNow(records: Buffer): Promise<CreateResult> {
    if (records.length % RECORD_SIZE !== 0) {
      throw new RecordFormatError(`record buffer of ${records.length} bytes is not a whole number of ${RECORD_SIZE}-byte records`);
    }
    const total = records.length / RECORD_SIZE;
    const result: CreateResult = { created: 0, existing: 0, failures: [] };
    for (let first = 0; first < total; first += this.encoder.batchRecords) {
      const count = Math.min(this.encoder.batchRecords, total - first);
      const seq = this.socket.reserveSeq(count);
      const buf = this.encoder.encode(records, first, count, seq);
      const what = `create of records ${first}..${first + count - 1}`;
      const r = this.encoder.ackEach ? await this.socket.batch(what, buf, seq, count) : await this.socket.batchLastAcked(what, buf, seq, count);
      this.tally(result, r.failures, first, count);
    }
    return result;
  }

  /** Creates entries from objects (NAT bindings as conntrackd writes them), acked one by one. */
  async create(entries: ConntrackCreate[]): Promise<CreateResult> {
    const result: CreateResult = { created: 0, existing: 0, failures: [] };
    if (entries.length === 0) return result;
    const seq = this.socket.reserveSeq(entries.length);
    const buf = Buffer.concat(entries.map((e, i) => encodeCreate(e, seq + i)));
    const r = await this.socket.batch(`create of ${entries.length} entries`, buf, seq, entries.length);
    this.tally(result, r.failures, 0, entries.length);
    return result;
  }

  private tally(result: CreateResult, failures: { index: number; errno: number; kernelMessage?: string }[], first: number, count: number): void {
    let existing = 0;
    for (const f of failures) {
      if (f.errno === EEXIST) existing++;
      else result.failures.push({ index: first + f.index, errno: f.errno, code: errnoName(f.errno), ...(f.kernelMessage ? { kernelMessage: f.kernelMessage } : {}) });
    }
    result.existing += existing;
    result.created += count - failures.length;
  }

  /** One entry by its original tuple, or undefined. */
  async get(orig: ConntrackTuple): Promise<ConntrackEntry | undefined> {
    const seq = this.socket.reserveSeq();
    let entry: ConntrackEntry | undefined;
    try {
      await this.socket.dump('get', encodeGet(orig, seq), seq, (msg) => {
        if (isEntryMessage(msg)) entry = decodeEntry(msg);
      });
    } catch (e) {
      if (e instanceof NetlinkError && e.errno === ENOENT) return undefined;
      throw e;
    }
    return entry;
  }

  /** Deletes one entry by its original tuple; false if there was none. */
  async delete(orig: ConntrackTuple): Promise<boolean> {
    const seq = this.socket.reserveSeq();
    try {
      await this.socket.request(`delete of ${orig.src}:${orig.sport} > ${orig.dst}:${orig.dport}`, encodeDelete(orig, seq), seq);
      return true;
    } catch (e) {
      if (e instanceof NetlinkError && e.errno === ENOENT) return false;
      throw e;
    }
  }

  /**
   * Deletes the entry of each record's original tuple, a batch to a sendmsg; how many
   * there were (a tuple without an entry is skipped). A migration's difference is a few thousand.
   */
  async deleteRecords(records: Buffer): Promise<{ deleted: number; failures: CreateFailure[] }> {
    if (records.length % RECORD_SIZE !== 0) {
      throw new RecordFormatError(`record buffer of ${records.length} bytes is not a whole number of ${RECORD_SIZE}-byte records`);
    }
    const total = records.length / RECORD_SIZE;
    const result = { deleted: 0, failures: [] as CreateFailure[] };
    for (let first = 0; first < total; first += this.encoder.batchRecords) {
      const count = Math.min(this.encoder.batchRecords, total - first);
      const seq = this.socket.reserveSeq(count);
      const { failures } = await this.socket.batchLastAcked(`delete of records ${first}..${first + count - 1}`, encodeDeletes(records, first, count, seq, false), seq, count);
      for (const f of failures) {
        if (f.errno !== ENOENT) result.failures.push({ index: first + f.index, errno: f.errno, code: errnoName(f.errno), ...(f.kernelMessage ? { kernelMessage: f.kernelMessage } : {}) });
      }
      result.deleted += count - failures.length;
    }
    return result;
  }

  /**
   * Deletes every entry of a ct mark inside the kernel, in one request; other marks stay.
   * With `status`, only those whose status bits match (e.g. never answered: SEEN_REPLY clear).
   */
  async deleteByMark(mark: number, mask = 0xffffffff, status?: StatusFilter): Promise<void> {
    // Acked with 0 also when nothing matched (measured on 6.x), so a repeated step is fine.
    const seq = this.socket.reserveSeq();
    await this.socket.request(`delete of ct mark ${mark}${status ? ` with status & ${status.mask} = ${status.value}` : ''}`, encodeDeleteByMark(mark, seq, mask, status), seq);
  }

  /** Deletes every entry in the namespace. */
  async flush(): Promise<void> {
    const seq = this.socket.reserveSeq();
    await this.socket.request('flush', encodeFlush(seq), seq);
  }

  /** Entries of a ct mark (counted from a kernel-filtered dump), or of the whole namespace. */
  async count(mark?: number): Promise<number> {
    const seq = this.socket.reserveSeq();
    let n = 0;
    if (mark === undefined) {
      await this.socket.dump('count', encodeGetStats(seq), seq, (msg) => {
        if (msg.type === ctnlType(IPCTNL_MSG_CT_GET_STATS)) n = decodeStatsEntries(msg);
      });
      return n;
    }
    await this.socket.dumpDatagrams(`count of ct mark ${mark}`, encodeDump(seq, { mark }), seq, (d) => {
      n += countEntryMessages(d);
    });
    return n;
  }

  /**
   * The table's fill and what it refused: entries and nf_conntrack_max (the limit applies to
   * each namespace's count), and the per-CPU counters summed (ctnetlink.ts, decodeStatsCpu).
   */
  async tableStats(): Promise<TableStats> {
    let seq = this.socket.reserveSeq();
    let global = { entries: 0, max: 0 };
    await this.socket.dump('table stats', encodeGetStats(seq), seq, (msg) => {
      if (msg.type === ctnlType(IPCTNL_MSG_CT_GET_STATS)) global = decodeStatsGlobal(msg);
    });
    const sum = { drop: 0, earlyDrop: 0, insertFailed: 0 };
    seq = this.socket.reserveSeq();
    await this.socket.dump('per-CPU stats', encodeGetStatsCpu(seq), seq, (msg) => {
      if (msg.type !== ctnlType(IPCTNL_MSG_CT_GET_STATS_CPU)) return;
      const c = decodeStatsCpu(msg);
      sum.drop += c.drop;
      sum.earlyDrop += c.earlyDrop;
      sum.insertFailed += c.insertFailed;
    });
    return { ...global, ...sum };
  }

  /**
   * Entries per ct mark, from one dump of the namespace's table. A dump walks the whole
   * (kernel-wide) hash table whatever its filter — ~10 ms here even when nothing matches —
   * so one dump counted by mark is much cheaper than a filtered dump per mark.
   */
  async countByMark(): Promise<Map<number, number>> {
    const counts = new Map<number, number>();
    await this.dumpAllRecords((records) => {
      for (let at = 0; at < records.length; at += RECORD_SIZE) {
        const mark = rec.mark(records, at);
        counts.set(mark, (counts.get(mark) ?? 0) + 1);
      }
    });
    return counts;
  }

  /** A separate socket joined to conntrack's event groups. */
  subscribe(options: SubscribeOptions = {}): ConntrackEvents {
    const groups = (options.groups ?? ['new', 'update', 'destroy']).reduce((bits, g) => bits | nfnlGroupBit(GROUPS[g]), 0);
    const socket = new NetlinkSocket(NETLINK_NETFILTER, {
      groups,
      receiveBufferBytes: options.receiveBufferBytes ?? 8 << 20,
      ...(this.options.netns === undefined ? {} : { netns: this.options.netns }),
    });
    return new ConntrackEvents(socket, options.accept, options.raw);
  }

  close(): void {
    this.socket.close();
  }
}

/** Entry messages in a dump datagram, reading headers only. */
function countEntryMessages(d: Buffer): number {
  let n = 0;
  for (let p = 0; p + NLMSG_HDRLEN <= d.length; ) {
    const len = d.readUInt32LE(p);
    if (len < NLMSG_HDRLEN || p + len > d.length) throw new NetlinkParseError(`netlink message length ${len} does not fit the datagram`, p);
    if (d.readUInt16LE(p + 4) === ctnlType(IPCTNL_MSG_CT_NEW)) n++;
    p += align4(len);
  }
  return n;
}
