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
  NLMSG_NOOP,
  NLMSG_OVERRUN,
  NLM_F_DUMP_INTR,
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
  NetlinkSocket: new (protocol: number, groups: number) => NativeSocket;
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
 * can resynchronise by a dump.
 */
export class NetlinkSocket extends EventEmitter {
  private readonly native: NativeSocket;
  private seq = Math.floor(Math.random() * 0x7fffffff) + 1;
  private pending: Pending | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  /** Datagrams that could not be parsed: counted and dropped. */
  malformed = 0;
  overruns = 0;

  constructor(
    readonly protocol: number,
    options: SocketOptions = {},
  ) {
    super();
    this.native = new addon.NetlinkSocket(protocol, options.groups ?? 0);
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

  /** Sends a request that answers with many messages, ending with NLMSG_DONE. */
  dump(operation: string, buffer: Buffer, seq: number, onMessage: (msg: NetlinkMessage) => void): Promise<void> {
    return this.enqueue({ operation, firstSeq: seq, count: 1, dump: true, onMessage }, buffer).then((r) => {
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
    if (err) p.reject(err);
    else p.resolve({ acked: p.acked, failures: p.failures });
  }

  private onDatagram(datagram: Buffer | null, errno: number): void {
    if (!datagram) {
      if (errno === ENOBUFS) {
        this.overruns++;
        this.emit('overrun');
        this.finish(new NetlinkError(this.pending?.operation ?? 'receive', errno));
      } else {
        this.emit('error', new NetlinkError('receive', errno));
      }
      return;
    }
    let messages: NetlinkMessage[];
    try {
      messages = parseMessages(datagram);
    } catch {
      this.malformed++;
      return;
    }
    for (const msg of messages) this.onMessage(msg);
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
      if (ack.errno !== 0) {
        p.failures.push({ index: msg.seq - p.firstSeq, errno: ack.errno, ...(ack.extAckMessage ? { kernelMessage: ack.extAckMessage } : {}) });
      } else {
        p.acked++;
      }
      if (p.dump || p.acked + p.failures.length >= p.count) this.finish();
      return;
    }
    if (p.dump) {
      if (msg.type === NLMSG_DONE) {
        if (msg.flags & NLM_F_DUMP_INTR) p.failures.push({ index: 0, errno: osConstants.errno.EINTR, kernelMessage: 'dump interrupted by a concurrent change' });
        this.finish();
      } else if (msg.type !== NLMSG_OVERRUN) {
        p.onMessage?.(msg);
      }
    }
  }

  close(): void {
    this.finish(new Error('netlink socket closed'));
    this.native.close();
  }
}
