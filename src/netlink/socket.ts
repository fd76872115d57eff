/**
 * The one module that owns vipshift's netlink socket addon (native/netlink_socket.c).
 * It adds sequence numbers, acks and dumps on top of the raw datagrams; families
 * (conntrack.ts, queue.ts, route.ts) build and parse the messages.
 */
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import {
  NETLINK_CAP_ACK,
  NETLINK_EXT_ACK,
  NETLINK_NO_ENOBUFS,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_HDRLEN,
  NLMSG_NOOP,
  NLMSG_OVERRUN,
  NLM_F_DUMP_INTR,
  align4,
  SOL_NETLINK,
  SOL_SOCKET,
  SO_RCVBUFFORCE,
  SO_SNDBUFFORCE,
  parseAck,
  parseMessages,
  type NetlinkMessage,
} from './message.js';

interface NativeSocket {
  send(message: Buffer): number;
  setOption(level: number, name: number, value: number): void;
  getOption(level: number, name: number): number;
  start(onDatagram: (datagram: Buffer | null, errno: number) => void): void;
  stop(): void;
  close(): void;
  readonly portId: number;
}

const require = createRequire(import.meta.url);
// dist/netlink/socket.js and src/netlink/socket.ts both sit two levels below the package root.
const addon = require('../../src/netlink/native/build/Release/vipshift_netlink.node') as {
  NetlinkSocket: new (protocol: number, groups: number, netnsPath?: string) => NativeSocket;
};

const ENOBUFS = osConstants.errno.ENOBUFS;

export function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(osConstants.errno)) if (value === errno) return name;
  return `errno ${errno}`;
}

/** A request the kernel refused: which operation, which message of a batch, and why. */
export class NetlinkError extends Error {
  readonly code: string;
  constructor(
    readonly operation: string,
    readonly errno: number,
    readonly index?: number,
    readonly kernelMessage?: string,
  ) {
    const where = index === undefined ? '' : ` (message ${index} of the batch)`;
    const why = kernelMessage ? `: ${kernelMessage}` : '';
    super(`${operation}${where}: ${errnoName(errno)}${why}`);
    this.name = 'NetlinkError';
    this.code = errnoName(errno);
  }
}

export interface SocketOptions {
  /** Multicast groups to join at bind (a bit mask, as nl_groups). */
  groups?: number;
  /** SO_RCVBUFFORCE in bytes. */
  receiveBufferBytes?: number;
  sendBufferBytes?: number;
  /** NETLINK_NO_ENOBUFS: the kernel drops silently instead of reporting an overrun. */
  noEnobufs?: boolean;
  /** Open the socket in this network namespace: a name under /run/netns, or a path. */
  netns?: string;
}

export function netnsPath(netns: string): string {
  return netns.includes('/') ? netns : `/run/netns/${netns}`;
}

/** The outcome of a batch of acked requests: which of them failed, and how. */
export interface BatchResult {
  acked: number;
  failures: { index: number; errno: number; kernelMessage?: string }[];
}

interface Pending {
  firstSeq: number;
  count: number;
  dump: boolean;
  /** Only the last message asks for an ack: done when it answers (earlier errors arrive first). */
  lastOnly?: boolean;
  /**
   * An nfnetlink batch: the first seq is BATCH_BEGIN, which asks for no ack but is answered
   * with an error when the kernel refuses the whole batch; the others are all acked.
   */
  transaction?: boolean;
  /** Dump datagrams go whole to onDatagram instead of message by message. */
  onDatagram?: (datagram: Buffer) => void;
  /** The first exception a dump's callback threw: the dump is drained, then fails with it. */
  callbackError?: Error;
  acked: number;
  failures: BatchResult['failures'];
  onMessage?: (msg: NetlinkMessage) => void;
  resolve: (r: BatchResult) => void;
  reject: (e: Error) => void;
  operation: string;
}

/**
 * A netlink socket. Replies to our requests are matched by sequence number;
 * anything else (multicast events) is emitted as 'message'. A receive-buffer
 * overrun is emitted as 'overrun' and fails the request in flight, so the owner
 * can resynchronise by a dump; another receive error fails the request in flight
 * and is emitted as 'error' only to an owner that listens.
 */
export class NetlinkSocket extends EventEmitter {
  private readonly native: NativeSocket;
  private seq = Math.floor(Math.random() * 0x7fffffff) + 1;
  private pending: Pending | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  /** Datagrams that could not be parsed: counted and dropped. */
  malformed = 0;
  overruns = 0;
  /** Receive errors other than overruns (each failed the request in flight). */
  receiveErrors = 0;

  constructor(
    readonly protocol: number,
    options: SocketOptions = {},
  ) {
    super();
    this.native = new addon.NetlinkSocket(protocol, options.groups ?? 0, options.netns === undefined ? undefined : netnsPath(options.netns));
    this.native.setOption(SOL_NETLINK, NETLINK_EXT_ACK, 1);
    this.native.setOption(SOL_NETLINK, NETLINK_CAP_ACK, 1);
    if (options.receiveBufferBytes) this.native.setOption(SOL_SOCKET, SO_RCVBUFFORCE, options.receiveBufferBytes);
    if (options.sendBufferBytes) this.native.setOption(SOL_SOCKET, SO_SNDBUFFORCE, options.sendBufferBytes);
    if (options.noEnobufs) this.native.setOption(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1);
    this.native.start((datagram, errno) => this.onDatagram(datagram, errno));
  }

  get portId(): number {
    return this.native.portId;
  }

  setOption(level: number, name: number, value: number): void {
    this.native.setOption(level, name, value);
  }

  /** Reserves `count` consecutive sequence numbers and returns the first. */
  reserveSeq(count = 1): number {
    if (this.seq + count >= 0x7fffffff) this.seq = 1;
    const first = this.seq;
    this.seq += count;
    return first;
  }

  /** Sends a buffer without waiting for anything (verdicts, fire-and-forget). */
  sendRaw(buffer: Buffer): void {
    this.native.send(buffer);
  }

  /**
   * Sends `count` acked requests (seq firstSeq..firstSeq+count-1) in one sendmsg and
   * waits for every ack. Failures are reported per message, not thrown: a batch of
   * creates where one entry already exists is still a batch that mostly worked.
   */
  batch(operation: string, buffer: Buffer, firstSeq: number, count: number): Promise<BatchResult> {
    return this.enqueue({ operation, firstSeq, count, dump: false }, buffer);
  }

  /**
   * Like batch(), for a batch where only the LAST message carries NLM_F_ACK: the
   * kernel still answers every failure, in order, so the batch is complete when
   * the last message answers. Saves the kernel one ack per message.
   */
  batchLastAcked(operation: string, buffer: Buffer, firstSeq: number, count: number): Promise<BatchResult> {
    return this.enqueue({ operation, firstSeq, count, dump: false, lastOnly: true }, buffer);
  }

  /**
   * An nfnetlink transaction (BATCH_BEGIN at headerSeq, `count` acked messages after it,
   * BATCH_END unacked) in one sendmsg. Failures are per message, index 0 being the batch
   * itself (refused as a whole) and 1..count the messages. Any failure means the kernel
   * aborted the transaction: the acks of the other messages then do not mean committed.
   */
  transaction(operation: string, buffer: Buffer, headerSeq: number, count: number): Promise<BatchResult> {
    return this.enqueue({ operation, firstSeq: headerSeq, count: count + 1, dump: false, transaction: true }, buffer);
  }

  /** Sends a request that answers with many messages, ending with NLMSG_DONE. */
  dump(operation: string, buffer: Buffer, seq: number, onMessage: (msg: NetlinkMessage) => void): Promise<void> {
    return this.enqueue({ operation, firstSeq: seq, count: 1, dump: true, onMessage }, buffer).then((r) => {
      const failure = r.failures[0];
      if (failure) throw new NetlinkError(operation, failure.errno, undefined, failure.kernelMessage);
    });
  }

  /**
   * A dump whose datagrams go whole to `onDatagram`, for families that decode
   * entries in place. The datagram may also hold the final NLMSG_DONE or
   * NLMSG_ERROR: the family skips message types it does not know.
   */
  dumpDatagrams(operation: string, buffer: Buffer, seq: number, onDatagram: (datagram: Buffer) => void): Promise<void> {
    return this.enqueue({ operation, firstSeq: seq, count: 1, dump: true, onDatagram }, buffer).then((r) => {
      const failure = r.failures[0];
      if (failure) throw new NetlinkError(operation, failure.errno, undefined, failure.kernelMessage);
    });
  }

  /** One acked request; a refusal throws NetlinkError. */
  async request(operation: string, buffer: Buffer, seq: number): Promise<void> {
    const r = await this.enqueue({ operation, firstSeq: seq, count: 1, dump: false }, buffer);
    const failure = r.failures[0];
    if (failure) throw new NetlinkError(operation, failure.errno, undefined, failure.kernelMessage);
  }

  private enqueue(
    p: Omit<Pending, 'acked' | 'failures' | 'resolve' | 'reject'>,
    buffer?: Buffer,
  ): Promise<BatchResult> {
    const run = (): Promise<BatchResult> =>
      new Promise<BatchResult>((resolve, reject) => {
        this.pending = { ...p, acked: 0, failures: [], resolve, reject };
        try {
          this.native.send(buffer ?? Buffer.alloc(0));
        } catch (e) {
          this.pending = undefined;
          reject(e as Error);
        }
      });
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private finish(err?: Error): void {
    const p = this.pending;
    if (!p) return;
    this.pending = undefined;
    if (err ?? p.callbackError) p.reject((err ?? p.callbackError)!);
    else p.resolve({ acked: p.acked, failures: p.failures });
  }

  private onDatagram(datagram: Buffer | null, errno: number): void {
    if (!datagram) {
      if (errno === ENOBUFS) {
        this.overruns++;
        this.emit('overrun');
        this.finish(new NetlinkError(this.pending?.operation ?? 'receive', errno));
      } else {
        // Fails the request in flight; an owner that listens for 'error' hears it too. Never
        // an unhandled 'error' event: that would end the process.
        this.receiveErrors++;
        const err = new NetlinkError(this.pending?.operation ?? 'receive', errno);
        this.finish(err);
        if (this.listenerCount('error') > 0) this.emit('error', err);
      }
      return;
    }
    if (this.pending?.onDatagram && this.rawDumpDatagram(this.pending, datagram)) return;
    let messages: NetlinkMessage[];
    try {
      messages = parseMessages(datagram);
    } catch {
      this.malformed++;
      return;
    }
    for (const msg of messages) this.onMessage(msg);
  }

  /**
   * Hands a datagram of a raw dump to its owner and ends the dump on NLMSG_DONE or
   * NLMSG_ERROR, reading only message headers. False if the datagram is not the dump's.
   */
  private rawDumpDatagram(p: Pending, datagram: Buffer): boolean {
    if (datagram.length < NLMSG_HDRLEN || datagram.readUInt32LE(8) !== p.firstSeq) return false;
    let end: NetlinkMessage | undefined;
    for (let offset = 0; offset + NLMSG_HDRLEN <= datagram.length; ) {
      const length = datagram.readUInt32LE(offset);
      if (length < NLMSG_HDRLEN || offset + length > datagram.length) {
        this.malformed++;
        return true;
      }
      const type = datagram.readUInt16LE(offset + 4);
      if (type === NLMSG_DONE || type === NLMSG_ERROR) {
        end = {
          length,
          type,
          flags: datagram.readUInt16LE(offset + 6),
          seq: datagram.readUInt32LE(offset + 8),
          pid: datagram.readUInt32LE(offset + 12),
          payload: datagram.subarray(offset + NLMSG_HDRLEN, offset + length),
        };
        break;
      }
      offset += align4(length);
    }
    this.callBack(p, () => p.onDatagram?.(datagram));
    if (end) this.onMessage(end);
    return true;
  }

  /** Runs a family's callback; what it throws fails the request instead of the process. */
  private callBack(p: Pending, fn: () => void): void {
    if (p.callbackError) return;
    try {
      fn();
    } catch (e) {
      p.callbackError = e instanceof Error ? e : new Error(String(e));
    }
  }

  private onMessage(msg: NetlinkMessage): void {
    const p = this.pending;
    const ours = p !== undefined && msg.seq >= p.firstSeq && msg.seq < p.firstSeq + p.count && msg.seq !== 0;
    if (!ours || !p) {
      if (msg.type !== NLMSG_NOOP) this.emit('message', msg);
      return;
    }
    if (msg.type === NLMSG_ERROR) {
      let ack;
      try {
        ack = parseAck(msg);
      } catch {
        this.malformed++;
        return;
      }
      const header = p.transaction === true && msg.seq === p.firstSeq;
      if (header && ack.errno === 0) return; // a kernel that acknowledges BATCH_BEGIN anyway
      if (ack.errno !== 0) {
        p.failures.push({ index: msg.seq - p.firstSeq, errno: ack.errno, ...(ack.extAckMessage ? { kernelMessage: ack.extAckMessage } : {}) });
      } else {
        p.acked++;
      }
      const last = msg.seq === p.firstSeq + p.count - 1;
      if (p.transaction) {
        if (header || p.acked + p.failures.length >= p.count - 1) this.finish();
        return;
      }
      if (p.dump || (p.lastOnly ? last : p.acked + p.failures.length >= p.count)) this.finish();
      return;
    }
    if (p.dump) {
      if (msg.type === NLMSG_DONE) {
        if (msg.flags & NLM_F_DUMP_INTR) p.failures.push({ index: 0, errno: osConstants.errno.EINTR, kernelMessage: 'dump interrupted by a concurrent change' });
        this.finish();
      } else if (msg.type !== NLMSG_OVERRUN) {
        this.callBack(p, () => p.onMessage?.(msg));
      }
    }
  }

  close(): void {
    this.finish(new Error('netlink socket closed'));
    this.native.close();
  }
}
