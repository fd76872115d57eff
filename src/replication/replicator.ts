/**
 * Replication of the access table to the keepers (the patent's embodiment 3):
 * the appliance listens to conntrack's events, keeps the ones of the VIPs that are `normal`
 * here (ct mark = VIP id), and pushes a copy of each connection to the keeper on that
 * connection's server — the entry's NAT'd destination — in batches per keeper.
 *
 * What is copied: a TCP connection once it is ESTABLISHED (what a takeover needs to carry it
 * on; an earlier state is re-learnt from the client's retransmitted SYN, a later one ends in a
 * destroy), a UDP flow on each update, and their destroys — only entries that carry a
 * connection (entry-record.ts, handshakeCompleted): a SYN flood's half-open entries, their
 * destroys included, never reach a keeper. The events come from a socket of
 * their own, read off the kernel as they arrive; nothing here waits on the data plane.
 *
 * Never lose track: a keeper that does not answer keeps a bounded backlog and gets it later;
 * beyond the bound the backlog is dropped and the keeper resynchronised. A resynchronisation
 * reads the keeper's copies, reads the VIP's entries (the appliance's mirror, or a dump), pushes
 * ours and deletes the copies of connections we no longer have. The event socket's overrun
 * (ENOBUFS: events were lost) resynchronises every keeper. A periodic refresh pushes every
 * entry again (fresh timeouts; anything missed), only where no newer change waits.
 */
import type { Logger } from 'pino';
import type { CopyBatch } from '../keeper/batch.js';
import { KEY_SIZE, MAX_BATCH_ITEMS, keysOfRecords } from '../keeper/batch.js';
import type { ApplianceConfig, VipConfig } from '../config/appliance.js';
import type { VipMode } from '../nat/ruleset.js';
import type { SubscribeOptions } from '../netlink/conntrack.js';
import {
  CTA_MARK,
  CTA_STATUS,
  CTA_PROTOINFO,
  CTA_PROTOINFO_TCP,
  CTA_PROTOINFO_TCP_STATE,
  IPCTNL_MSG_CT_DELETE,
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPS_ASSURED,
  IPS_SEEN_REPLY,
  NFGENMSG_LEN,
  TCP_CONNTRACK_ESTABLISHED,
  ctnlType,
  type ConntrackEntry,
  type ConntrackTuple,
} from '../netlink/ctnetlink.js';
import { NLA_HDRLEN, NLA_TYPE_MASK, type NetlinkMessage } from '../netlink/message.js';
import { RECORD_SIZE, handshakeCompleted, selectRecords, rec } from '../netlink/entry-record.js';
import { entryRecordOf } from '../netlink/entry-record-ctnetlink.js';
import { Backlog, recordKey, type TakenBatch } from './backlog.js';

/** What the replicator needs of a keeper (src/keeper/client.ts's KeeperClient). */
export interface KeeperSink {
  push(batch: CopyBatch): Promise<unknown>;
  /** The keeper's copies of a VIP (by address) as entry records. */
  copies(vip: string, source: 'copies'): Promise<Buffer>;
}

/**
 * What it needs of the access table: conntrack's events (src/netlink/conntrack.ts) and a
 * VIP's entries as record chunks (the appliance's reader, mirror or dump: src/appliance/appliance.ts).
 */
/** The event stream it listens to (src/netlink/conntrack.ts's ConntrackEvents). */
export interface AccessTableEvents {
  on(event: 'update' | 'destroy', listener: (e: ConntrackEntry) => void): unknown;
  on(event: 'overrun', listener: () => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  close(): void;
  /** Messages that did not decode. */
  readonly dropped: number;
}

export interface AccessTable {
  subscribe(options: SubscribeOptions): AccessTableEvents;
  readRecords(mark: number, onChunk: (records: Buffer) => void): Promise<unknown>;
  /** One entry, whole, from the kernel (Conntrack.get); without it a missed sequence offset waits for the next refresh. */
  get?(orig: ConntrackTuple): Promise<ConntrackEntry | undefined>;
}

export interface ReplicatorOptions {
  config: ApplianceConfig;
  table: AccessTable;
  /** One sink per keeper of config.keepers, by name. */
  sinks: Map<string, KeeperSink>;
  /** The mode table (NatEngine.modeTable): the VIPs `normal` here are replicated... */
  modes: () => Map<string, VipMode>;
  /** ...while this appliance serves their address (VRRP master); default: always. */
  serving?: (vip: VipConfig) => boolean;
  logger: Logger;
  now?: () => number;
}

/** The largest batch sent in one request, whatever accumulated (bounds a request's size). */
const MAX_PUSH = Math.min(50_000, MAX_BATCH_ITEMS);
const EMPTY = Buffer.alloc(0);
const RETRY_MIN_MS = 250;
const RETRY_MAX_MS = 5000;
/** How often the mode table is read for VIPs that became `normal` or left. */
const MODE_POLL_MS = 200;

export type KeeperLinkState = 'up' | 'down';

export interface KeeperReplicationStatus {
  name: string;
  server: string;
  state: KeeperLinkState;
  /** Changes waiting (not yet acknowledged by the keeper). */
  backlog: number;
  /** ms: age of the oldest waiting change; the last batch's oldest change to its ack; the worst such. */
  lagMs: { current: number; lastBatch: number; max: number };
  pushed: { batches: number; upserts: number; deletes: number };
  failures: number;
  /** Changes dropped because the backlog reached its bound (then resynchronised). */
  dropped: number;
  resyncs: number;
  resyncPending: boolean;
  lastError?: string;
}

export interface ReplicationStatus {
  enabled: boolean;
  /** VIPs replicated now (`normal` here). */
  vips: string[];
  events: { received: number; copied: number; ignored: number; unrouted: number; malformed: number };
  /** Event socket overruns (ENOBUFS), each answered by a resynchronisation. */
  overruns: number;
  refreshes: number;
  keepers: KeeperReplicationStatus[];
}

/** One keeper: its backlog and the one request in flight to it. */
class KeeperLink {
  readonly backlog: Backlog;
  state: KeeperLinkState = 'up';
  resyncPending = false;
  private busy = false;
  private timer: NodeJS.Timeout | undefined;
  private retryMs = RETRY_MIN_MS;
  private closed = false;
  readonly serverU32: number;
  pushed = { batches: 0, upserts: 0, deletes: 0 };
  failures = 0;
  resyncs = 0;
  lastBatchLag = 0;
  maxLag = 0;
  lastError: string | undefined;

  constructor(
    readonly name: string,
    readonly server: string,
    readonly sink: KeeperSink,
    private readonly owner: Replicator,
  ) {
    this.backlog = new Backlog(owner.settings.backlog);
    this.serverU32 = server.split('.').reduce((a, o) => a * 256 + Number(o), 0);
  }

  change(record: Buffer, deleted: boolean, at: number): void {
    if (!this.backlog.put(record, deleted, at)) this.overflowed();
    this.kick();
  }

  refresh(record: Buffer, at: number): void {
    if (!this.backlog.refresh(record, at)) this.overflowed();
  }

  /** An update of the connection's waiting copy; false if none waits. */
  amend(update: Buffer): boolean {
    return this.backlog.amend(update);
  }

  private overflowed(): void {
    this.resyncPending = true;
    this.owner.log.warn({ keeper: this.name, bound: this.owner.settings.backlog }, 'backlog over its bound: dropped, the keeper will be resynchronised');
  }

  requestResync(): void {
    this.resyncPending = true;
    this.kick();
  }

  /** Sends what is due: a resynchronisation, a full batch now, or a batch when the interval ends. */
  kick(): void {
    if (this.busy || this.closed || this.state === 'down') return;
    if (this.resyncPending) {
      this.clearTimer();
      void this.run(() => this.resync());
      return;
    }
    const size = this.backlog.size;
    if (size === 0) return;
    if (size >= this.owner.settings.batchEntries) {
      this.clearTimer();
      void this.run(() => this.flush());
    } else if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        if (!this.busy && this.state === 'up') void this.run(() => this.flush());
      }, this.owner.settings.batchIntervalMs);
    }
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async run(work: () => Promise<void>): Promise<void> {
    this.busy = true;
    try {
      await work();
      if (this.state === 'down') this.owner.log.info({ keeper: this.name }, 'keeper answers again');
      this.state = 'up';
      this.retryMs = RETRY_MIN_MS;
      this.lastError = undefined;
    } catch (err) {
      this.failures++;
      this.lastError = (err as Error).message;
      if (this.state === 'up') this.owner.log.warn({ keeper: this.name, err: this.lastError }, 'keeper unreachable: keeping a backlog');
      this.state = 'down';
      // Try again later; meanwhile changes accumulate up to the bound.
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.state = 'up';
        this.kick();
      }, this.retryMs);
      this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
    } finally {
      this.busy = false;
    }
    if (this.state === 'up') this.kick();
  }

  private async flush(): Promise<void> {
    const taken = this.backlog.take(MAX_PUSH);
    if (!taken) return;
    try {
      await this.sink.push(taken.batch);
    } catch (err) {
      if (!this.backlog.putBack(taken)) this.overflowed();
      throw err;
    }
    this.delivered(taken);
  }

  private delivered(taken: TakenBatch): void {
    this.pushed.batches++;
    this.pushed.upserts += taken.upserts;
    this.pushed.deletes += taken.deletes;
    this.lastBatchLag = Math.max(0, this.owner.now() - taken.oldestAt);
    if (this.lastBatchLag > this.maxLag) this.maxLag = this.lastBatchLag;
  }

  /**
   * Makes the keeper's copies of our VIPs (on its server) equal to our entries: ours are
   * pushed, its copies we do not have are deleted. Changes that arrive meanwhile wait in the
   * backlog and go after, so they win over the read.
   */
  private async resync(): Promise<void> {
    this.resyncPending = false;
    // What waits is older than the read that follows: the read covers it.
    this.backlog.clear();
    const vips = this.owner.vipsOnServer(this.server);
    try {
      for (const vip of vips) {
        const theirs = await this.sink.copies(vip.address, 'copies');
        const ours = await this.owner.entriesOnServer(vip, this.serverU32);
        const have = new Set<string>();
        for (const chunk of ours) for (let o = 0; o < chunk.length; o += RECORD_SIZE) have.add(recordKey(chunk, o));
        const stale: Buffer[] = [];
        for (let o = 0; o < theirs.length; o += RECORD_SIZE) if (!have.has(recordKey(theirs, o))) stale.push(theirs.subarray(o, o + RECORD_SIZE));
        const upserts = Buffer.concat(ours);
        const deletes = keysOfRecords(Buffer.concat(stale));
        for (let o = 0; o < upserts.length; o += MAX_PUSH * RECORD_SIZE) {
          const up = upserts.subarray(o, o + MAX_PUSH * RECORD_SIZE);
          await this.sink.push({ upserts: up, deletes: EMPTY });
          this.pushed.batches++;
          this.pushed.upserts += up.length / RECORD_SIZE;
        }
        for (let o = 0; o < deletes.length; o += MAX_PUSH * KEY_SIZE) {
          const gone = deletes.subarray(o, o + MAX_PUSH * KEY_SIZE);
          await this.sink.push({ upserts: EMPTY, deletes: gone });
          this.pushed.batches++;
          this.pushed.deletes += gone.length / KEY_SIZE;
        }
        this.owner.log.info({ keeper: this.name, vip: vip.name, copies: upserts.length / RECORD_SIZE, staleDeleted: stale.length }, 'keeper resynchronised');
      }
      this.resyncs++;
    } catch (err) {
      this.resyncPending = true;
      throw err;
    }
  }

  status(now: number): KeeperReplicationStatus {
    const oldest = this.backlog.oldestAt;
    return {
      name: this.name,
      server: this.server,
      state: this.state,
      backlog: this.backlog.size,
      lagMs: { current: oldest === undefined ? 0 : Math.max(0, now - oldest), lastBatch: round(this.lastBatchLag), max: round(this.maxLag) },
      pushed: { ...this.pushed },
      failures: this.failures,
      dropped: this.backlog.dropped,
      resyncs: this.resyncs,
      resyncPending: this.resyncPending,
      ...(this.lastError ? { lastError: this.lastError } : {}),
    };
  }

  close(): void {
    this.closed = true;
    this.clearTimer();
  }
}

const round = (x: number) => Math.round(x * 10) / 10;

export class Replicator {
  readonly settings: ApplianceConfig['replication'];
  readonly log: Logger;
  readonly now: () => number;
  private links: KeeperLink[] = [];
  private readonly linkByServer = new Map<number, KeeperLink>();
  private vipsByName: Map<string, VipConfig>;
  /** ct mark → VIP, for the VIPs `normal` here. */
  private readonly replicated = new Map<number, VipConfig>();
  private events: AccessTableEvents | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private readonly counts = { received: 0, copied: 0, ignored: 0, unrouted: 0 };
  private overruns = 0;
  private refreshes = 0;
  private refreshRun: Promise<void> | undefined;

  constructor(private readonly options: ReplicatorOptions) {
    this.settings = options.config.replication;
    this.log = options.logger;
    this.now = options.now ?? (() => performance.now());
    this.vipsByName = new Map(options.config.vips.map((v) => [v.name, v]));
    this.setKeepers(options.config.keepers, options.sinks);
  }

  /** One link per keeper; a keeper kept (same name, server and client) keeps its link and backlog. */
  private setKeepers(keepers: ApplianceConfig['keepers'], sinks: Map<string, KeeperSink>): KeeperLink[] {
    const old = new Map(this.links.map((l) => [`${l.name}\0${l.server}`, l]));
    const links: KeeperLink[] = [];
    const fresh: KeeperLink[] = [];
    for (const k of keepers) {
      const sink = sinks.get(k.name);
      if (!sink) throw new Error(`replication: no client for keeper ${k.name}`);
      let link = old.get(`${k.name}\0${k.server}`);
      if (link?.sink === sink) old.delete(`${k.name}\0${k.server}`);
      else {
        link = new KeeperLink(k.name, k.server, sink, this);
        fresh.push(link);
      }
      links.push(link);
    }
    for (const gone of old.values()) gone.close();
    this.links = links;
    this.linkByServer.clear();
    for (const link of links) this.linkByServer.set(link.serverU32, link);
    return fresh;
  }

  /**
   * A reload: the VIPs (added, removed, their backends changed) and the keepers copies go to
   * (`sinks`: a client for each; a keeper whose client is the same keeps its link and backlog). A VIP kept goes on being replicated
   * with its new backends; one removed stops; one added starts once it is `normal` here
   * (syncModes). A new keeper, and the keepers of a VIP's new backends, are resynchronised.
   */
  reconfigure(config: ApplianceConfig, sinks: Map<string, KeeperSink>): void {
    const before = this.vipsByName;
    this.vipsByName = new Map(config.vips.map((v) => [v.name, v]));
    const fresh = new Set(this.setKeepers(config.keepers, sinks));
    const servers = new Set<string>();
    for (const [id, vip] of [...this.replicated]) {
      const now = this.vipsByName.get(vip.name);
      if (!now || now.id !== id) {
        this.replicated.delete(id);
        this.log.info({ vip: vip.name }, 'no longer replicating: removed from the configuration');
        continue;
      }
      this.replicated.set(id, now);
      const had = new Set(before.get(vip.name)?.backends.map((b) => b.address));
      for (const b of now.backends) if (!had.has(b.address)) servers.add(b.address);
    }
    if (this.events) {
      for (const link of this.links) if (fresh.has(link) || servers.has(link.server)) link.requestResync();
      this.syncModes();
    }
  }

  /**
   * Subscribes before anything else (conntrack only reports entries created while someone
   * listens), then resynchronises every keeper for the VIPs `normal` here.
   */
  start(): void {
    if (!this.settings.enabled || this.events) return;
    const events = this.options.table.subscribe({
      groups: ['update', 'destroy'],
      receiveBufferBytes: this.settings.receiveBufferBytes,
      accept: (msg) => this.worthDecoding(msg),
    });
    events.on('update', (e: ConntrackEntry) => this.onEvent(e, false));
    events.on('destroy', (e: ConntrackEntry) => this.onEvent(e, true));
    events.on('overrun', () => this.onOverrun());
    events.on('error', (err: Error) => this.log.error({ err: err.message }, 'conntrack event socket'));
    this.events = events;
    this.syncModes();
    this.pollTimer = setInterval(() => this.syncModes(), MODE_POLL_MS);
    if (this.settings.refreshIntervalSeconds > 0) this.refreshTimer = setInterval(() => void this.refresh(), this.settings.refreshIntervalSeconds * 1000);
  }

  /**
   * Follows the mode table: a VIP that became `normal` here (start, migration, takeover), and
   * whose address this appliance serves, is replicated from now on and its keepers
   * resynchronised; one that left is no longer.
   */
  syncModes(): void {
    const modes = this.options.modes();
    const fresh = new Set<string>();
    for (const vip of this.vipsByName.values()) {
      const normal = modes.get(vip.name) === 'normal' && (this.options.serving?.(vip) ?? true);
      if (normal && !this.replicated.has(vip.id)) {
        this.replicated.set(vip.id, vip);
        for (const s of vip.backends) fresh.add(s.address);
        this.log.info({ vip: vip.name }, 'replicating');
      } else if (!normal && this.replicated.delete(vip.id)) {
        this.log.info({ vip: vip.name }, 'no longer replicating');
      }
    }
    for (const link of this.links) if (fresh.has(link.server)) link.requestResync();
  }

  /**
   * Most events are TCP state changes of no interest (SYN_RECV, FIN_WAIT...), of VIPs not
   * replicated here, or of entries that never carried a connection (a SYN flood's): read the
   * mark, the status and the TCP state in place and decode only the others.
   */
  private worthDecoding(msg: NetlinkMessage): boolean {
    this.counts.received++;
    const p = msg.payload;
    let mark = 0;
    let status = 0;
    let state = -1;
    for (let o = NFGENMSG_LEN; o + NLA_HDRLEN <= p.length; ) {
      const len = p.readUInt16LE(o);
      if (len < NLA_HDRLEN) break;
      const type = p.readUInt16LE(o + 2) & NLA_TYPE_MASK;
      if (type === CTA_MARK && len >= NLA_HDRLEN + 4) mark = p.readUInt32BE(o + NLA_HDRLEN);
      else if (type === CTA_STATUS && len >= NLA_HDRLEN + 4) status = p.readUInt32BE(o + NLA_HDRLEN);
      else if (type === CTA_PROTOINFO) state = tcpStateIn(p, o + NLA_HDRLEN, Math.min(p.length, o + len));
      o += (len + 3) & ~3;
    }
    const wanted =
      this.replicated.has(mark) &&
      (status & (IPS_ASSURED | IPS_SEEN_REPLY)) !== 0 &&
      (msg.type === CT_DELETE || state === -1 || state === TCP_CONNTRACK_ESTABLISHED);
    if (!wanted) this.counts.ignored++;
    return wanted;
  }

  private onEvent(e: ConntrackEntry, destroyed: boolean): void {
    const vip = this.replicated.get(e.mark);
    const proto = e.orig.proto;
    if (vip && !destroyed && proto === IPPROTO_TCP && e.tcpState === undefined && (e.seqAdj || e.synproxy)) {
      this.onExtensions(e);
      return;
    }
    // An update of a TCP entry matters when it reaches ESTABLISHED (updates without
    // CTA_PROTOINFO carry no state and are skipped too).
    if (!vip || (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP) || (!destroyed && proto === IPPROTO_TCP && e.tcpState !== TCP_CONNTRACK_ESTABLISHED)) {
      this.counts.ignored++;
      return;
    }
    const record = entryRecordOf(e, destroyed);
    if (!handshakeCompleted(record)) {
      this.counts.ignored++;
      return;
    }
    const link = this.linkByServer.get(rec.serverAddress(record, 0));
    if (!link) {
      this.counts.unrouted++;
      return;
    }
    this.counts.copied++;
    link.change(record, destroyed, this.now());
  }

  /**
   * An update that carries conntrack's seqadj or synproxy extension and no TCP state: SYNPROXY
   * sets the sequence offset of a connection it opened just after the event that made it
   * ESTABLISHED (and copied it). A takeover needs the offset, so it joins that copy while it
   * waits for its batch (nearly always: the two events are microseconds apart, a batch waits
   * batchInterval); if the copy went out already, the entry is read whole from the kernel.
   */
  private onExtensions(e: ConntrackEntry): void {
    const update = entryRecordOf(e, false);
    if (rec.extensions(update) === 0 || !handshakeCompleted(update)) {
      this.counts.ignored++;
      return;
    }
    const link = this.linkByServer.get(rec.serverAddress(update, 0));
    if (!link) {
      this.counts.unrouted++;
      return;
    }
    this.counts.copied++;
    if (link.amend(update)) return;
    void this.options.table.get?.(e.orig).then(
      (whole) => {
        const record = whole && entryRecordOf(whole, false);
        // Only where no newer change waits (a destroy meanwhile wins).
        if (record && handshakeCompleted(record)) link.refresh(record, this.now());
      },
      (err: Error) => this.log.warn({ err: err.message }, 'reading an entry whose sequence offset changed failed: the next refresh copies it'),
    );
  }

  private onOverrun(): void {
    this.overruns++;
    this.log.warn({ overruns: this.overruns }, 'conntrack events lost (ENOBUFS): resynchronising every keeper');
    for (const link of this.links) link.requestResync();
  }

  /**
   * Pushes every entry of the replicated VIPs again, where no newer change waits. A refresh
   * still running (a large table, or one waiting for the mirror's rebuild) is the one a
   * caller gets: refreshes never pile up, each holding its copy of the table.
   */
  refresh(): Promise<void> {
    this.refreshRun ??= this.refreshOnce().finally(() => {
      this.refreshRun = undefined;
    });
    return this.refreshRun;
  }

  private async refreshOnce(): Promise<void> {
    this.refreshes++;
    const at = this.now();
    for (const vip of [...this.replicated.values()]) {
      try {
        await this.options.table.readRecords(vip.id, (chunk) => {
          for (let o = 0; o < chunk.length; o += RECORD_SIZE) {
            if (!handshakeCompleted(chunk, o)) continue;
            const link = this.linkByServer.get(rec.serverAddress(chunk, o));
            if (link) link.refresh(chunk.subarray(o, o + RECORD_SIZE), at);
          }
        });
      } catch (err) {
        this.log.error({ vip: vip.name, err: (err as Error).message }, 'refresh read failed');
      }
    }
    for (const link of this.links) link.kick();
  }

  /** The replicated VIPs with a server behind `server`. */
  vipsOnServer(server: string): VipConfig[] {
    return [...this.replicated.values()].filter((v) => v.backends.some((s) => s.address === server));
  }

  /** The VIP's connections whose server is `serverU32`, as record chunks. */
  async entriesOnServer(vip: VipConfig, serverU32: number): Promise<Buffer[]> {
    const out: Buffer[] = [];
    const mine = (b: Buffer, o: number): boolean => rec.serverAddress(b, o) === serverU32 && handshakeCompleted(b, o);
    await this.options.table.readRecords(vip.id, (chunk) => {
      out.push(selectRecords(chunk, mine));
    });
    return out;
  }

  status(): ReplicationStatus {
    const now = this.now();
    return {
      enabled: this.settings.enabled,
      vips: [...this.replicated.values()].map((v) => v.name),
      events: { ...this.counts, malformed: this.events?.dropped ?? 0 },
      overruns: this.overruns,
      refreshes: this.refreshes,
      keepers: this.links.map((l) => l.status(now)),
    };
  }

  stop(): void {
    if (this.pollTimer) clearInterval(this.pollTimer);
    if (this.refreshTimer) clearInterval(this.refreshTimer);
    this.events?.close();
    this.events = undefined;
    for (const link of this.links) link.close();
  }
}

const CT_DELETE = ctnlType(IPCTNL_MSG_CT_DELETE);

/** CTA_PROTOINFO_TCP_STATE inside the CTA_PROTOINFO nest at [start, end), or -1. */
function tcpStateIn(p: Buffer, start: number, end: number): number {
  for (let o = start; o + NLA_HDRLEN <= end; ) {
    const len = p.readUInt16LE(o);
    if (len < NLA_HDRLEN) return -1;
    if ((p.readUInt16LE(o + 2) & NLA_TYPE_MASK) === CTA_PROTOINFO_TCP) {
      const inner = Math.min(end, o + len);
      for (let q = o + NLA_HDRLEN; q + NLA_HDRLEN <= inner; ) {
        const ilen = p.readUInt16LE(q);
        if (ilen < NLA_HDRLEN) return -1;
        if ((p.readUInt16LE(q + 2) & NLA_TYPE_MASK) === CTA_PROTOINFO_TCP_STATE && ilen > NLA_HDRLEN) return p[q + NLA_HDRLEN]!;
        q += (ilen + 3) & ~3;
      }
      return -1;
    }
    o += (len + 3) & ~3;
  }
  return -1;
}

