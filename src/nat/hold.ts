/**
 * The hold: packets of a migrating VIP wait in the kernel's NFQUEUE (queued before conntrack,
 * so they are neither forwarded, nor rejected, nor registered) until the VIP is released
 * (accepted in arrival order: they re-enter at conntrack and find the entries imported
 * meanwhile) or discarded (dropped; clients retransmit).
 *
 * The ruleset marks each held packet with HOLD_MARK | VIP id, so the queue is bound in
 * NFQNL_COPY_META mode: the NFQA_MARK says whose packet it is, no packet bytes are copied.
 * FAIL_OPEN is explicitly off: a packet the kernel cannot queue is dropped (clients
 * retransmit), never let through unheld into a table without its entry (that would be reset).
 */
import {
  AF_INET,
  NFQA_CFG_F_FAIL_OPEN,
  NFQNL_CFG_CMD_BIND,
  NFQNL_CFG_CMD_UNBIND,
  NFQNL_COPY_META,
  NFQNL_MSG_PACKET,
  NF_ACCEPT,
  NF_DROP,
  decodePacket,
  encodeConfig,
  encodeVerdict,
  encodeVerdicts,
  queueMessageType,
  type QueuedPacket,
} from '../netlink/queue.js';
import { NETLINK_NETFILTER, NLMSG_ERROR, parseAck, type NetlinkMessage } from '../netlink/message.js';
import { NetlinkSocket } from '../netlink/socket.js';
import { HOLD_MARK, VIP_ID_MASK } from './ruleset.js';

/** What becomes of a VIP's packets as they arrive: held, or passed on at once after a release / discard. */
export type HoldState = 'holding' | 'accepting' | 'dropping';

export interface HoldCounters {
  /** Packets waiting now. */
  held: number;
  /** Accepted by a release (or on arrival after one). */
  released: number;
  /** Dropped on arrival because the VIP already had queueLength packets waiting. */
  overflowed: number;
  /** Dropped by a discard (or on arrival after one). */
  dropped: number;
}

interface VipHold {
  name: string;
  state: HoldState;
  ids: number[];
  released: number;
  overflowed: number;
  dropped: number;
}

/** Verdicts to send: per-id in this order, or one batch verdict covering every id ≤ batchUpTo. */
export interface VerdictPlan {
  verdict: number;
  ids: number[];
  batchUpTo?: number;
}

/**
 * The hold's bookkeeping, without I/O: which packet belongs to which VIP, in what order,
 * and which verdict each gets. Packet ids are per queue, and several VIPs may be held at
 * once, so a release names its own ids; only when the released VIP's packets are all the
 * queue holds can one batch verdict (ids ≤ N) stand for them.
 */
export class HoldBook {
  private readonly byId = new Map<number, VipHold>();
  private readonly byName = new Map<string, VipHold>();
  /** Queued packets whose mark names no VIP of ours. */
  unattributed = 0;

  constructor(
    vips: readonly { name: string; id: number }[],
    readonly queueLength: number,
  ) {
    for (const v of vips) {
      const h: VipHold = { name: v.name, state: 'accepting', ids: [], released: 0, overflowed: 0, dropped: 0 };
      this.byId.set(v.id, h);
      this.byName.set(v.name, h);
    }
  }

  /** A VIP added at run time (a reload): its packets are accepted until it is held. */
  add(vip: { name: string; id: number }): void {
    if (this.byName.has(vip.name)) return;
    const h: VipHold = { name: vip.name, state: 'accepting', ids: [], released: 0, overflowed: 0, dropped: 0 };
    this.byId.set(vip.id, h);
    this.byName.set(vip.name, h);
  }

  /** A VIP removed at run time; what it still holds is dropped (returned as a plan). */
  remove(vip: { name: string; id: number }): VerdictPlan | undefined {
    if (!this.byName.has(vip.name)) return undefined;
    const plan = this.discard(vip.name);
    this.byId.delete(vip.id);
    this.byName.delete(vip.name);
    return plan;
  }

  private vip(name: string): VipHold {
    const h = this.byName.get(name);
    if (!h) throw new Error(`no VIP named '${name}' in the hold`);
    return h;
  }

  /** From now on the VIP's packets are held. */
  hold(name: string): void {
    this.vip(name).state = 'holding';
  }

  state(name: string): HoldState {
    return this.vip(name).state;
  }

  /** A packet arrived: returns its verdict now, or undefined when it is held. */
  arrive(packet: Pick<QueuedPacket, 'id' | 'mark'>): number | undefined {
    const h = packet.mark !== undefined && (packet.mark & HOLD_MARK) !== 0 ? this.byId.get(packet.mark & VIP_ID_MASK) : undefined;
    if (!h) {
      this.unattributed++;
      return NF_DROP;
    }
    if (h.state === 'accepting') {
      h.released++;
      return NF_ACCEPT;
    }
    if (h.state === 'dropping') {
      h.dropped++;
      return NF_DROP;
    }
    if (h.ids.length >= this.queueLength) {
      h.overflowed++;
      return NF_DROP;
    }
    h.ids.push(packet.id);
    return undefined;
  }

  private totalHeld(): number {
    let n = 0;
    for (const h of this.byName.values()) n += h.ids.length;
    return n;
  }

  private finish(name: string, state: HoldState, verdict: number): VerdictPlan {
    const h = this.vip(name);
    const ids = h.ids;
    const alone = ids.length > 0 && ids.length === this.totalHeld();
    h.ids = [];
    h.state = state;
    if (verdict === NF_ACCEPT) h.released += ids.length;
    else h.dropped += ids.length;
    return alone ? { verdict, ids, batchUpTo: ids[ids.length - 1]! } : { verdict, ids };
  }

  /** Accept the VIP's held packets in arrival order; later arrivals are accepted at once. */
  release(name: string): VerdictPlan {
    return this.finish(name, 'accepting', NF_ACCEPT);
  }

  /** Drop the VIP's held packets; later arrivals are dropped at once. */
  discard(name: string): VerdictPlan {
    return this.finish(name, 'dropping', NF_DROP);
  }

  counters(name: string): HoldCounters {
    const h = this.vip(name);
    return { held: h.ids.length, released: h.released, overflowed: h.overflowed, dropped: h.dropped };
  }
}

export interface HoldQueueOptions {
  queueNumber: number;
  /** Per VIP: packets waiting beyond this are dropped and counted as overflowed. */
  queueLength: number;
  vips: readonly { name: string; id: number }[];
}

/** Verdicts per sendmsg: well inside the default socket send buffer. */
const VERDICTS_PER_SEND = 2048;

/** The hold queue of one appliance: binds its NFQUEUE in the calling process's namespace. */
export class HoldQueue {
  readonly book: HoldBook;
  private socket: NetlinkSocket | undefined;
  /** Messages that could not be decoded (counted and dropped). */
  malformed = 0;
  /** Verdicts the kernel refused (e.g. an id it no longer holds). */
  verdictErrors = 0;
  /** Receive-buffer overruns: queued packets we never heard of (the kernel drops them at unbind). */
  overruns = 0;

  constructor(readonly options: HoldQueueOptions) {
    this.book = new HoldBook(options.vips, options.queueLength);
  }

  async open(): Promise<void> {
    const { queueNumber, queueLength, vips } = this.options;
    // Room for every VIP's queueLength packets in the kernel queue and in our receive buffer
    // (a copy-meta message takes well under 2 KiB of buffer).
    const kernelLength = Math.min(queueLength * Math.max(vips.length, 1) + 1024, 4_000_000);
    const socket = new NetlinkSocket(NETLINK_NETFILTER, { receiveBufferBytes: Math.min(Math.max(kernelLength * 2048, 4 << 20), 256 << 20) });
    socket.on('message', (msg: NetlinkMessage) => this.onMessage(msg));
    socket.on('overrun', () => this.overruns++);
    this.socket = socket;
    const bindSeq = socket.reserveSeq();
    const configSeq = socket.reserveSeq();
    try {
      await socket.request(
        `bind NFQUEUE ${queueNumber}`,
        encodeConfig({ queue: queueNumber, command: { command: NFQNL_CFG_CMD_BIND, pf: AF_INET } }, bindSeq),
        bindSeq,
      );
      await socket.request(
        `configure NFQUEUE ${queueNumber}`,
        encodeConfig(
          {
            queue: queueNumber,
            params: { copyMode: NFQNL_COPY_META, copyRange: 0 },
            maxLength: kernelLength,
            flags: { mask: NFQA_CFG_F_FAIL_OPEN, value: 0 },
          },
          configSeq,
        ),
        configSeq,
      );
    } catch (e) {
      socket.close();
      this.socket = undefined;
      throw e;
    }
  }

  private onMessage(msg: NetlinkMessage): void {
    if (msg.type === NLMSG_ERROR) {
      try {
        if (parseAck(msg).errno !== 0) this.verdictErrors++;
      } catch {
        this.malformed++;
      }
      return;
    }
    if (msg.type !== queueMessageType(NFQNL_MSG_PACKET)) {
      this.malformed++;
      return;
    }
    let packet: QueuedPacket;
    try {
      packet = decodePacket(msg);
    } catch {
      // Without a packet id no verdict can name it; the kernel drops it at unbind.
      this.malformed++;
      return;
    }
    const verdict = this.book.arrive(packet);
    if (verdict !== undefined) this.send(encodeVerdict({ queue: this.options.queueNumber, id: packet.id, verdict }));
  }

  private send(buffer: Buffer): void {
    if (!this.socket) throw new Error('the hold queue is not open');
    this.socket.sendRaw(buffer);
  }

  private apply(plan: VerdictPlan): number {
    const queue = this.options.queueNumber;
    if (plan.batchUpTo !== undefined) {
      this.send(encodeVerdict({ queue, id: plan.batchUpTo, verdict: plan.verdict, batch: true }));
    } else {
      for (let i = 0; i < plan.ids.length; i += VERDICTS_PER_SEND) {
        this.send(encodeVerdicts(queue, plan.ids.slice(i, i + VERDICTS_PER_SEND), plan.verdict));
      }
    }
    return plan.ids.length;
  }

  /** Starts holding a VIP's packets (call before its mode becomes migrating). */
  hold(vip: string): void {
    this.book.hold(vip);
  }

  /** Accepts the VIP's held packets in arrival order; returns how many. */
  release(vip: string): number {
    return this.apply(this.book.release(vip));
  }

  /** Drops the VIP's held packets; returns how many. */
  discard(vip: string): number {
    return this.apply(this.book.discard(vip));
  }

  counters(vip: string): HoldCounters {
    return this.book.counters(vip);
  }

  /** A VIP added at run time. */
  add(vip: { name: string; id: number }): void {
    this.book.add(vip);
  }

  /** A VIP removed at run time: what it still holds is dropped. */
  remove(vip: { name: string; id: number }): void {
    const plan = this.book.remove(vip);
    if (plan) this.apply(plan);
  }

  /** Unbinds the queue; packets still held are dropped by the kernel. */
  async close(): Promise<void> {
    const socket = this.socket;
    if (!socket) return;
    this.socket = undefined;
    const seq = socket.reserveSeq();
    try {
      await socket.request(`unbind NFQUEUE ${this.options.queueNumber}`, encodeConfig({ queue: this.options.queueNumber, command: { command: NFQNL_CFG_CMD_UNBIND, pf: AF_INET } }, seq), seq);
    } finally {
      socket.close();
    }
  }
}
