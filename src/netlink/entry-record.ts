/**
 * The entry record: one access-table entry in 40 fixed bytes, the unit a migration
 * moves. A dump decodes straight from the kernel's datagrams into records (no object
 * per entry) and creates are built by copying a preallocated ctnetlink template and
 * patching fixed offsets, so 100,000 entries cost tens of milliseconds of JavaScript
 * instead of a second (docs/architecture.md: the kernel's own floor is ~180–270 ms).
 *
 * Records travel between appliances and keepers as they are: this is a wire format.
 *
 * Stream: an 8-byte header, then records back to back.
 *   0  4  magic "VSCT"
 *   4  u16 version (1)
 *   6  u16 record size in bytes (40); a reader refuses other versions and sizes
 *
 * Record, version 1 (every multi-byte field big-endian, as ctnetlink carries them):
 *   0  u32 client address      original source
 *   4  u32 VIP address         original destination
 *   8  u32 server address      the NAT'd destination (reply source); = VIP if not DNAT'd
 *  12  u32 inside address      fullnat SNAT source (reply destination); 0 if none
 *  16  u16 client port
 *  18  u16 VIP port
 *  20  u16 server port
 *  22  u16 inside port         0 if none
 *  24  u8  protocol            6 TCP, 17 UDP
 *  25  u8  TCP state           TCP_CONNTRACK_*; 0 for UDP
 *  26  u8  TCP window scale, original direction
 *  27  u8  TCP window scale, reply direction
 *  28  u8  TCP flags, original (IP_CT_TCP_FLAG_*)
 *  29  u8  TCP flags, reply
 *  30  u16 status              IPS_* bits 0..15
 *  32  u32 timeout             seconds left
 *  36  u32 mark                ct mark: the VIP's id
 */
import {
  AF_INET,
  CTA_IP_V4_DST,
  CTA_IP_V4_SRC,
  CTA_MARK,
  CTA_NAT_DST,
  CTA_NAT_PROTO,
  CTA_NAT_SRC,
  CTA_NAT_V4_MAXIP,
  CTA_NAT_V4_MINIP,
  CTA_PROTOINFO,
  CTA_PROTOINFO_TCP,
  CTA_PROTOINFO_TCP_FLAGS_ORIGINAL,
  CTA_PROTOINFO_TCP_FLAGS_REPLY,
  CTA_PROTOINFO_TCP_STATE,
  CTA_PROTOINFO_TCP_WSCALE_ORIGINAL,
  CTA_PROTOINFO_TCP_WSCALE_REPLY,
  CTA_PROTONAT_PORT_MAX,
  CTA_PROTONAT_PORT_MIN,
  CTA_PROTO_DST_PORT,
  CTA_PROTO_NUM,
  CTA_PROTO_SRC_PORT,
  CTA_STATUS,
  CTA_TIMEOUT,
  CTA_TUPLE_IP,
  CTA_TUPLE_ORIG,
  CTA_TUPLE_PROTO,
  CTA_TUPLE_REPLY,
  IPCTNL_MSG_CT_NEW,
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPS_ASSURED,
  IPS_SEEN_REPLY,
  NFGENMSG_LEN,
  TCP_CONNTRACK_SYN_RECV,
  TCP_CONNTRACK_SYN_SENT,
  TCP_CONNTRACK_SYN_SENT2,
  NFNETLINK_V0,
  createStatus,
  ctnlType,
  type ConntrackEntry,
  type TcpWindow,
} from './ctnetlink.js';
import { bytesToIpv4, ipv4ToBytes } from '../packet/ipv4.js';
import { TCP_TIMEOUT_SYN_RECV_S, TCP_TIMEOUT_SYN_SENT_S } from '../kernel/sysctl.js';
import {
  NLA_F_NESTED,
  NLA_HDRLEN,
  NLA_TYPE_MASK,
  NLMSG_HDRLEN,
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REQUEST,
  NetlinkParseError,
  align4,
} from './message.js';

export const RECORD_VERSION = 1;
export const RECORD_SIZE = 40;
export const RECORD_STREAM_MAGIC = 'VSCT';
export const RECORD_STREAM_HEADER_SIZE = 8;

// Field offsets inside a record.
export const R_CLIENT_ADDR = 0;
export const R_VIP_ADDR = 4;
export const R_SERVER_ADDR = 8;
export const R_INSIDE_ADDR = 12;
export const R_CLIENT_PORT = 16;
export const R_VIP_PORT = 18;
export const R_SERVER_PORT = 20;
export const R_INSIDE_PORT = 22;
export const R_PROTO = 24;
export const R_TCP_STATE = 25;
export const R_WSCALE_ORIGINAL = 26;
export const R_WSCALE_REPLY = 27;
export const R_FLAGS_ORIGINAL = 28;
export const R_FLAGS_REPLY = 29;
export const R_STATUS = 30;
export const R_TIMEOUT = 32;
export const R_MARK = 36;

export class RecordFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RecordFormatError';
  }
}

export interface Endpoint {
  address: string;
  port: number;
}

/** A record as an object, for tools, tests and the console (not for the hot path). */
export interface EntryRecord {
  client: Endpoint;
  vip: Endpoint;
  server: Endpoint;
  /** The fullnat SNAT source; absent in dnat. */
  inside?: Endpoint;
  proto: number;
  tcpState: number;
  tcpWindow: TcpWindow;
  status: number;
  timeout: number;
  mark: number;
}

export function encodeStreamHeader(): Buffer {
  const b = Buffer.alloc(RECORD_STREAM_HEADER_SIZE);
  b.write(RECORD_STREAM_MAGIC, 0, 'latin1');
  b.writeUInt16BE(RECORD_VERSION, 4);
  b.writeUInt16BE(RECORD_SIZE, 6);
  return b;
}

/** Checks a stream header; throws RecordFormatError naming what does not match. */
export function checkStreamHeader(b: Buffer): void {
  if (b.length < RECORD_STREAM_HEADER_SIZE) throw new RecordFormatError(`record stream header is ${b.length} bytes, expected ${RECORD_STREAM_HEADER_SIZE}`);
  const magic = b.toString('latin1', 0, 4);
  if (magic !== RECORD_STREAM_MAGIC) throw new RecordFormatError(`record stream magic is ${JSON.stringify(magic)}, expected "${RECORD_STREAM_MAGIC}"`);
  const version = b.readUInt16BE(4);
  const size = b.readUInt16BE(6);
  if (version !== RECORD_VERSION || size !== RECORD_SIZE) {
    throw new RecordFormatError(`record stream version ${version} with ${size}-byte records; this build reads version ${RECORD_VERSION} with ${RECORD_SIZE}-byte records`);
  }
}

/**
 * Reassembles a record stream that arrives in arbitrary pieces (an HTTP body):
 * checks the header, then hands out whole records only.
 */
export class RecordStreamReader {
  private pending = Buffer.alloc(0);
  private headerSeen = false;
  records = 0;

  /** Whole records in this piece (possibly none). */
  push(piece: Buffer): Buffer {
    let data = this.pending.length ? Buffer.concat([this.pending, piece]) : piece;
    if (!this.headerSeen) {
      if (data.length < RECORD_STREAM_HEADER_SIZE) {
        this.pending = Buffer.from(data);
        return Buffer.alloc(0);
      }
      checkStreamHeader(data);
      this.headerSeen = true;
      data = data.subarray(RECORD_STREAM_HEADER_SIZE);
    }
    const whole = data.length - (data.length % RECORD_SIZE);
    this.pending = Buffer.from(data.subarray(whole));
    this.records += whole / RECORD_SIZE;
    return data.subarray(0, whole);
  }

  /** Call at the end of the stream: a missing header or a partial record is an error. */
  end(): void {
    if (!this.headerSeen) throw new RecordFormatError('record stream ended before its header');
    if (this.pending.length) throw new RecordFormatError(`record stream ended inside a record (${this.pending.length} of ${RECORD_SIZE} bytes)`);
  }
}

const endpoint = (b: Buffer, addr: number, port: number): Endpoint => ({ address: bytesToIpv4(b, addr), port: b.readUInt16BE(port) });

export function readRecord(b: Buffer, offset = 0): EntryRecord {
  const r = offset;
  if (r + RECORD_SIZE > b.length) throw new RecordFormatError(`record at byte ${offset} runs past the buffer of ${b.length}`);
  const hasInside = b.readUInt32BE(r + R_INSIDE_ADDR) !== 0;
  return {
    client: endpoint(b, r + R_CLIENT_ADDR, r + R_CLIENT_PORT),
    vip: endpoint(b, r + R_VIP_ADDR, r + R_VIP_PORT),
    server: endpoint(b, r + R_SERVER_ADDR, r + R_SERVER_PORT),
    ...(hasInside ? { inside: endpoint(b, r + R_INSIDE_ADDR, r + R_INSIDE_PORT) } : {}),
    proto: b[r + R_PROTO]!,
    tcpState: b[r + R_TCP_STATE]!,
    tcpWindow: {
      wscaleOriginal: b[r + R_WSCALE_ORIGINAL]!,
      wscaleReply: b[r + R_WSCALE_REPLY]!,
      flagsOriginal: b[r + R_FLAGS_ORIGINAL]!,
      flagsReply: b[r + R_FLAGS_REPLY]!,
    },
    status: b.readUInt16BE(r + R_STATUS),
    timeout: b.readUInt32BE(r + R_TIMEOUT),
    mark: b.readUInt32BE(r + R_MARK),
  };
}

export function writeRecord(b: Buffer, offset: number, rec: EntryRecord): void {
  const r = offset;
  b.fill(0, r, r + RECORD_SIZE);
  ipv4ToBytes(rec.client.address).copy(b, r + R_CLIENT_ADDR);
  ipv4ToBytes(rec.vip.address).copy(b, r + R_VIP_ADDR);
  ipv4ToBytes(rec.server.address).copy(b, r + R_SERVER_ADDR);
  b.writeUInt16BE(rec.client.port, r + R_CLIENT_PORT);
  b.writeUInt16BE(rec.vip.port, r + R_VIP_PORT);
  b.writeUInt16BE(rec.server.port, r + R_SERVER_PORT);
  if (rec.inside) {
    ipv4ToBytes(rec.inside.address).copy(b, r + R_INSIDE_ADDR);
    b.writeUInt16BE(rec.inside.port, r + R_INSIDE_PORT);
  }
  b[r + R_PROTO] = rec.proto;
  b[r + R_TCP_STATE] = rec.tcpState;
  b[r + R_WSCALE_ORIGINAL] = rec.tcpWindow.wscaleOriginal;
  b[r + R_WSCALE_REPLY] = rec.tcpWindow.wscaleReply;
  b[r + R_FLAGS_ORIGINAL] = rec.tcpWindow.flagsOriginal;
  b[r + R_FLAGS_REPLY] = rec.tcpWindow.flagsReply;
  b.writeUInt16BE(rec.status & 0xffff, r + R_STATUS);
  b.writeUInt32BE(rec.timeout >>> 0, r + R_TIMEOUT);
  b.writeUInt32BE(rec.mark >>> 0, r + R_MARK);
}

/**
 * The record of a decoded entry (an event, for the replicator): the reply tuple's
 * source is the server, its destination the inside address unless it is the client.
 * Undefined for protocols other than TCP and UDP.
 */
export function entryToRecord(e: ConntrackEntry): EntryRecord | undefined {
  if (e.orig.proto !== IPPROTO_TCP && e.orig.proto !== IPPROTO_UDP) return undefined;
  const snat = e.reply.dst !== e.orig.src || e.reply.dport !== e.orig.sport;
  return {
    client: { address: e.orig.src, port: e.orig.sport },
    vip: { address: e.orig.dst, port: e.orig.dport },
    server: { address: e.reply.src, port: e.reply.sport },
    ...(snat ? { inside: { address: e.reply.dst, port: e.reply.dport } } : {}),
    proto: e.orig.proto,
    tcpState: e.tcpState ?? 0,
    tcpWindow: e.tcpWindow ?? { wscaleOriginal: 0, wscaleReply: 0, flagsOriginal: 0, flagsReply: 0 },
    status: e.status & 0xffff,
    timeout: e.timeout,
    mark: e.mark,
  };
}

// ---- which entries carry a connection ----
//
// A SYN flood fills the access table with entries whose handshake never completes (a spoofed
// client never answers the server's SYN-ACK). They must not cost the keepers a copy nor a
// migration's step 3 a create. The rule, here and nowhere else:
//
// - TCP: the kernel's IPS_ASSURED bit. conntrack sets it when the client's final ACK moves a
//   SYN_RECV entry to ESTABLISHED — the handshake completed — and never sets it otherwise;
//   the state alone does not say it (a RST or FIN can move a half-open entry on to CLOSE or
//   FIN_WAIT). It is also the bit the kernel itself uses to pick victims when its table is full
//   (early drop evicts entries without it first).
// - UDP: IPS_SEEN_REPLY (the server answered). ASSURED comes only after 2 s of a stream.
// - A handshake in flight (SYN_SENT, SYN_RECV, SYN_SENT2 without ASSURED) is moved, not
//   replicated, while it is young: a real client's final ACK follows the SYN-ACK by one
//   round trip, and if the target had no entry for it, the ACK would be INVALID there and
//   answered with a reset. A spoofed handshake stays in SYN_RECV for the kernel's whole
//   timeout; past HANDSHAKE_WINDOW_S it is junk. Its age is the state's timeout (the
//   kernel's defaults, which the appliance pins in its namespace: kernel/sysctl.ts) minus
//   the timeout left — current in a dump, and kept current for these entries by the mirror.

/**
 * How long a half-open entry counts as a handshake in flight: the final ACK of a real one
 * follows in a round trip, or after the server's first two SYN-ACK retransmissions (1 s, 2 s).
 */
export const HANDSHAKE_WINDOW_S = 3;

/** The record at `o` carries a connection: a TCP handshake completed, a UDP flow answered. */
export function handshakeCompleted(records: Buffer, o = 0): boolean {
  const status = records.readUInt16BE(o + R_STATUS);
  return records[o + R_PROTO] === IPPROTO_UDP ? (status & IPS_SEEN_REPLY) !== 0 : (status & IPS_ASSURED) !== 0;
}

/** The record at `o` is a TCP handshake under way now (HANDSHAKE_WINDOW_S). */
export function handshakeInFlight(records: Buffer, o = 0): boolean {
  if (records[o + R_PROTO] !== IPPROTO_TCP || (records.readUInt16BE(o + R_STATUS) & IPS_ASSURED) !== 0) return false;
  const state = records[o + R_TCP_STATE];
  const full =
    state === TCP_CONNTRACK_SYN_RECV ? TCP_TIMEOUT_SYN_RECV_S
    : state === TCP_CONNTRACK_SYN_SENT || state === TCP_CONNTRACK_SYN_SENT2 ? TCP_TIMEOUT_SYN_SENT_S
    : 0;
  return full > 0 && full - records.readUInt32BE(o + R_TIMEOUT) <= HANDSHAKE_WINDOW_S;
}

/** What a migration moves (step 3, and a pre-copy): connections and handshakes in flight. */
export function worthMoving(records: Buffer, o = 0): boolean {
  return handshakeCompleted(records, o) || handshakeInFlight(records, o);
}

/**
 * The records of `chunk` that pass `keep`, back to back: `chunk` itself when all do (no
 * copy), else a fresh buffer.
 */
export function selectRecords(chunk: Buffer, keep: (records: Buffer, o: number) => boolean): Buffer {
  let kept = 0;
  for (let o = 0; o < chunk.length; o += RECORD_SIZE) if (keep(chunk, o)) kept++;
  if (kept * RECORD_SIZE === chunk.length) return chunk;
  const out = Buffer.allocUnsafe(kept * RECORD_SIZE);
  let p = 0;
  for (let o = 0; o < chunk.length; o += RECORD_SIZE) {
    if (keep(chunk, o)) {
      chunk.copy(out, p, o, o + RECORD_SIZE);
      p += RECORD_SIZE;
    }
  }
  return out;
}

// ---- dump → records, in place ----

const CT_NEW_TYPE = ctnlType(IPCTNL_MSG_CT_NEW);

function copy4(src: Buffer, s: number, dst: Buffer, d: number): void {
  dst[d] = src[s]!;
  dst[d + 1] = src[s + 1]!;
  dst[d + 2] = src[s + 2]!;
  dst[d + 3] = src[s + 3]!;
}

function copy2(src: Buffer, s: number, dst: Buffer, d: number): void {
  dst[d] = src[s]!;
  dst[d + 1] = src[s + 1]!;
}

// The decoder below is written as flat loops over the bytes, without closures or
// objects per entry: it runs 100,000 times per migration.

/** Little-endian u16 (attribute headers are host order; these machines are x86). */
const le16 = (b: Buffer, p: number): number => b[p]! | (b[p + 1]! << 8);

/** The length of the attribute at p, checked against its container's end. */
function attrLength(b: Buffer, p: number, end: number): number {
  const len = le16(b, p);
  if (len < NLA_HDRLEN || p + len > end) throw new NetlinkParseError(`attribute length ${len} runs past its container`, p);
  return len;
}

/** Checks that the attribute at p (of length len) holds at least `bytes` of value. */
function need(b: Buffer, p: number, len: number, bytes: number): void {
  if (len - NLA_HDRLEN < bytes) throw new NetlinkParseError(`attribute of type ${le16(b, p + 2) & NLA_TYPE_MASK} is ${len - NLA_HDRLEN} bytes, expected ${bytes}`, p);
}

/**
 * Copies one CTA_TUPLE_* at [start, end) into the record: address and port slots for
 * its source and destination. Returns the protocol number, or -1 if not IPv4.
 */
function decodeTuple(b: Buffer, start: number, end: number, out: Buffer, srcAddr: number, dstAddr: number, srcPort: number, dstPort: number): number {
  let proto = -1;
  let addrs = 0;
  for (let p = start; p + NLA_HDRLEN <= end; ) {
    const len = attrLength(b, p, end);
    const type = le16(b, p + 2) & NLA_TYPE_MASK;
    const innerEnd = p + len;
    for (let q = p + NLA_HDRLEN; q + NLA_HDRLEN <= innerEnd; ) {
      const ilen = attrLength(b, q, innerEnd);
      const itype = le16(b, q + 2) & NLA_TYPE_MASK;
      const v = q + NLA_HDRLEN;
      if (type === CTA_TUPLE_IP) {
        if (itype === CTA_IP_V4_SRC || itype === CTA_IP_V4_DST) {
          need(b, q, ilen, 4);
          copy4(b, v, out, itype === CTA_IP_V4_SRC ? srcAddr : dstAddr);
          addrs |= itype;
        }
      } else if (type === CTA_TUPLE_PROTO) {
        if (itype === CTA_PROTO_NUM) {
          need(b, q, ilen, 1);
          proto = b[v]!;
        } else if (itype === CTA_PROTO_SRC_PORT || itype === CTA_PROTO_DST_PORT) {
          need(b, q, ilen, 2);
          copy2(b, v, out, itype === CTA_PROTO_SRC_PORT ? srcPort : dstPort);
        }
      }
      q += align4(ilen);
    }
    p += align4(len);
  }
  return addrs === (CTA_IP_V4_SRC | CTA_IP_V4_DST) ? proto : -1;
}

/** Copies CTA_PROTOINFO_TCP's state, window scales and flags into the record. */
function decodeProtoinfo(b: Buffer, start: number, end: number, out: Buffer, o: number): void {
  for (let p = start; p + NLA_HDRLEN <= end; ) {
    const len = attrLength(b, p, end);
    if ((le16(b, p + 2) & NLA_TYPE_MASK) === CTA_PROTOINFO_TCP) {
      const innerEnd = p + len;
      for (let q = p + NLA_HDRLEN; q + NLA_HDRLEN <= innerEnd; ) {
        const ilen = attrLength(b, q, innerEnd);
        const itype = le16(b, q + 2) & NLA_TYPE_MASK;
        const at =
          itype === CTA_PROTOINFO_TCP_STATE ? R_TCP_STATE
          : itype === CTA_PROTOINFO_TCP_WSCALE_ORIGINAL ? R_WSCALE_ORIGINAL
          : itype === CTA_PROTOINFO_TCP_WSCALE_REPLY ? R_WSCALE_REPLY
          : itype === CTA_PROTOINFO_TCP_FLAGS_ORIGINAL ? R_FLAGS_ORIGINAL
          : itype === CTA_PROTOINFO_TCP_FLAGS_REPLY ? R_FLAGS_REPLY
          : -1;
        if (at >= 0) {
          need(b, q, ilen, 1);
          out[o + at] = b[q + NLA_HDRLEN]!; // flags: the first byte of nf_ct_tcp_flags
        }
        q += align4(ilen);
      }
    }
    p += align4(len);
  }
}

/**
 * Decodes the entry message at [start, end) into the record at `o` of `out`.
 * False if it is not an IPv4 TCP/UDP entry (skipped); malformed → NetlinkParseError.
 */
function decodeIntoRecord(b: Buffer, start: number, end: number, out: Buffer, o: number): boolean {
  if (end - start < NFGENMSG_LEN) throw new NetlinkParseError('nfgenmsg is truncated', start);
  if (b[start] !== AF_INET) return false;
  out.fill(0, o, o + RECORD_SIZE);
  let origProto = -2;
  let replyProto = -2;
  for (let p = start + NFGENMSG_LEN; p + NLA_HDRLEN <= end; ) {
    const len = attrLength(b, p, end);
    const type = le16(b, p + 2) & NLA_TYPE_MASK;
    const v = p + NLA_HDRLEN;
    switch (type) {
      case CTA_TUPLE_ORIG:
        origProto = decodeTuple(b, v, p + len, out, o + R_CLIENT_ADDR, o + R_VIP_ADDR, o + R_CLIENT_PORT, o + R_VIP_PORT);
        break;
      case CTA_TUPLE_REPLY:
        replyProto = decodeTuple(b, v, p + len, out, o + R_SERVER_ADDR, o + R_INSIDE_ADDR, o + R_SERVER_PORT, o + R_INSIDE_PORT);
        break;
      case CTA_STATUS:
        need(b, p, len, 4);
        copy2(b, v + 2, out, o + R_STATUS);
        break;
      case CTA_TIMEOUT:
        need(b, p, len, 4);
        copy4(b, v, out, o + R_TIMEOUT);
        break;
      case CTA_MARK:
        need(b, p, len, 4);
        copy4(b, v, out, o + R_MARK);
        break;
      case CTA_PROTOINFO:
        decodeProtoinfo(b, v, p + len, out, o);
        break;
    }
    p += align4(len);
  }
  if (origProto === -2 || replyProto === -2) throw new NetlinkParseError('entry without CTA_TUPLE_ORIG and CTA_TUPLE_REPLY', start);
  if (origProto !== IPPROTO_TCP && origProto !== IPPROTO_UDP) return false;
  if (replyProto === -1) return false;
  out[o + R_PROTO] = origProto;
  // dnat: the reply goes back to the client itself, so there is no inside address.
  if (
    out[o + R_INSIDE_ADDR] === out[o + R_CLIENT_ADDR] &&
    out[o + R_INSIDE_ADDR + 1] === out[o + R_CLIENT_ADDR + 1] &&
    out[o + R_INSIDE_ADDR + 2] === out[o + R_CLIENT_ADDR + 2] &&
    out[o + R_INSIDE_ADDR + 3] === out[o + R_CLIENT_ADDR + 3] &&
    out[o + R_INSIDE_PORT] === out[o + R_CLIENT_PORT] &&
    out[o + R_INSIDE_PORT + 1] === out[o + R_CLIENT_PORT + 1]
  ) {
    out.fill(0, o + R_INSIDE_ADDR, o + R_INSIDE_ADDR + 4);
    out.fill(0, o + R_INSIDE_PORT, o + R_INSIDE_PORT + 2);
  }
  return true;
}

/**
 * Decodes one entry message's payload (an event's, after the nlmsghdr) into the record at
 * `o` of `out`. False if it is not an IPv4 TCP/UDP entry; malformed → NetlinkParseError.
 * Attributes an event leaves out stay 0 (an update without CTA_PROTOINFO: TCP state 0).
 */
export function decodeEntryRecord(payload: Buffer, out: Buffer, o = 0): boolean {
  return decodeIntoRecord(payload, 0, payload.length, out, o);
}

/**
 * Collects records from dump datagrams into chunks of `chunkRecords` and hands each
 * full chunk (a fresh Buffer the receiver may keep) to `onChunk`; call flush() at the end.
 */
export class RecordCollector {
  records = 0;
  /** Entries that are not IPv4 TCP/UDP (ICMP, IPv6): not migrated by records. */
  skipped = 0;
  private chunk: Buffer;
  private used = 0;

  constructor(
    private readonly chunkRecords: number,
    private readonly onChunk: (records: Buffer) => void,
  ) {
    if (!Number.isInteger(chunkRecords) || chunkRecords < 1) throw new RangeError(`chunkRecords must be a positive integer, got ${chunkRecords}`);
    this.chunk = Buffer.allocUnsafe(chunkRecords * RECORD_SIZE);
  }

  /** Decodes every entry message of a datagram; other message types are ignored. */
  addDatagram(d: Buffer): void {
    let p = 0;
    while (p + NLMSG_HDRLEN <= d.length) {
      const len = d.readUInt32LE(p);
      if (len < NLMSG_HDRLEN || p + len > d.length) throw new NetlinkParseError(`netlink message length ${len} does not fit the datagram of ${d.length}`, p);
      if (d.readUInt16LE(p + 4) === CT_NEW_TYPE) {
        if (decodeIntoRecord(d, p + NLMSG_HDRLEN, p + len, this.chunk, this.used * RECORD_SIZE)) {
          this.records++;
          if (++this.used === this.chunkRecords) this.flush();
        } else {
          this.skipped++;
        }
      }
      p += align4(len);
    }
  }

  flush(): void {
    if (this.used === 0) return;
    const full = this.used === this.chunkRecords ? this.chunk : this.chunk.subarray(0, this.used * RECORD_SIZE);
    this.chunk = Buffer.allocUnsafe(this.chunkRecords * RECORD_SIZE);
    this.used = 0;
    this.onChunk(full);
  }
}

// ---- records → create messages, by template ----

/** Where each patched field of a create template sits. -1: absent in this variant. */
interface Template {
  bytes: Buffer;
  origSrc: number;
  origDst: number;
  origSport: number;
  origDport: number;
  replySrc: number;
  replyDst: number;
  replySport: number;
  replyDport: number;
  dnatMin: number;
  dnatMax: number;
  dnatPortMin: number;
  dnatPortMax: number;
  snatMin: number;
  snatMax: number;
  snatPortMin: number;
  snatPortMax: number;
  status: number;
  timeout: number;
  mark: number;
  tcpState: number;
  wscaleOriginal: number;
  wscaleReply: number;
  flagsOriginal: number;
  flagsReply: number;
}

/** Writes fixed-size attributes and remembers where each value went. */
class TemplateLayout {
  readonly buf = Buffer.alloc(512);
  used = NLMSG_HDRLEN + NFGENMSG_LEN;

  attr(type: number, length: number): number {
    this.buf.writeUInt16LE(NLA_HDRLEN + length, this.used);
    this.buf.writeUInt16LE(type, this.used + 2);
    const value = this.used + NLA_HDRLEN;
    this.used += align4(NLA_HDRLEN + length);
    return value;
  }

  nest(type: number, fill: () => void): void {
    const at = this.used;
    this.used += NLA_HDRLEN;
    fill();
    this.buf.writeUInt16LE(this.used - at, at);
    this.buf.writeUInt16LE(type | NLA_F_NESTED, at + 2);
  }
}

/** Variant bits: which optional parts a record's create message has. */
const V_UDP = 1;
const V_DNAT = 2;
const V_SNAT = 4;

function buildTemplate(variant: number, ack: boolean): Template {
  const l = new TemplateLayout();
  const proto = variant & V_UDP ? IPPROTO_UDP : IPPROTO_TCP;
  const t: Partial<Template> = {};
  const tuple = (type: number, reply: boolean): void => {
    l.nest(type, () => {
      l.nest(CTA_TUPLE_IP, () => {
        t[reply ? 'replySrc' : 'origSrc'] = l.attr(CTA_IP_V4_SRC, 4);
        t[reply ? 'replyDst' : 'origDst'] = l.attr(CTA_IP_V4_DST, 4);
      });
      l.nest(CTA_TUPLE_PROTO, () => {
        l.buf[l.attr(CTA_PROTO_NUM, 1)] = proto;
        t[reply ? 'replySport' : 'origSport'] = l.attr(CTA_PROTO_SRC_PORT, 2);
        t[reply ? 'replyDport' : 'origDport'] = l.attr(CTA_PROTO_DST_PORT, 2);
      });
    });
  };
  const nat = (type: number, p: 'dnat' | 'snat'): void => {
    l.nest(type, () => {
      t[`${p}Min`] = l.attr(CTA_NAT_V4_MINIP, 4);
      t[`${p}Max`] = l.attr(CTA_NAT_V4_MAXIP, 4);
      l.nest(CTA_NAT_PROTO, () => {
        t[`${p}PortMin`] = l.attr(CTA_PROTONAT_PORT_MIN, 2);
        t[`${p}PortMax`] = l.attr(CTA_PROTONAT_PORT_MAX, 2);
      });
    });
  };
  tuple(CTA_TUPLE_ORIG, false);
  tuple(CTA_TUPLE_REPLY, true);
  for (const k of ['dnatMin', 'dnatMax', 'dnatPortMin', 'dnatPortMax', 'snatMin', 'snatMax', 'snatPortMin', 'snatPortMax'] as const) t[k] = -1;
  if (variant & V_DNAT) nat(CTA_NAT_DST, 'dnat');
  if (variant & V_SNAT) nat(CTA_NAT_SRC, 'snat');
  t.status = l.attr(CTA_STATUS, 4);
  t.timeout = l.attr(CTA_TIMEOUT, 4);
  t.mark = l.attr(CTA_MARK, 4);
  for (const k of ['tcpState', 'wscaleOriginal', 'wscaleReply', 'flagsOriginal', 'flagsReply'] as const) t[k] = -1;
  if (proto === IPPROTO_TCP) {
    l.nest(CTA_PROTOINFO, () =>
      l.nest(CTA_PROTOINFO_TCP, () => {
        t.tcpState = l.attr(CTA_PROTOINFO_TCP_STATE, 1);
        t.wscaleOriginal = l.attr(CTA_PROTOINFO_TCP_WSCALE_ORIGINAL, 1);
        t.wscaleReply = l.attr(CTA_PROTOINFO_TCP_WSCALE_REPLY, 1);
        // struct nf_ct_tcp_flags { flags, mask }: the kernel applies flags & mask.
        t.flagsOriginal = l.attr(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, 2);
        l.buf[t.flagsOriginal + 1] = 0xff;
        t.flagsReply = l.attr(CTA_PROTOINFO_TCP_FLAGS_REPLY, 2);
        l.buf[t.flagsReply + 1] = 0xff;
      }),
    );
  }
  const bytes = Buffer.from(l.buf.subarray(0, l.used));
  bytes.writeUInt32LE(l.used, 0);
  bytes.writeUInt16LE(CT_NEW_TYPE, 4);
  bytes.writeUInt16LE(NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | (ack ? NLM_F_ACK : 0), 6);
  bytes[NLMSG_HDRLEN] = AF_INET;
  bytes[NLMSG_HDRLEN + 1] = NFNETLINK_V0;
  return { ...(t as Template), bytes };
}

/** The largest create message (TCP, DNAT and SNAT): the batch buffer's unit. */
const MAX_CREATE_BYTES = buildTemplate(V_DNAT | V_SNAT, false).bytes.length;

/**
 * Turns records into ctnetlink create messages, many per buffer: the reply tuple is
 * the inverse of the original (VIP side), CTA_NAT_DST names the server when it differs
 * from the VIP, CTA_NAT_SRC the inside address when there is one (docs/architecture.md, kernel facts).
 * One encoder owns one preallocated buffer: encode() returns a view into it that is
 * valid until the next call.
 */
export class CreateEncoder {
  private readonly templates: (Template | undefined)[] = [];
  private readonly buf: Buffer;

  /**
   * @param ackEach NLM_F_ACK on every message; otherwise only the last of a batch asks
   *   for one (the kernel still answers every failure).
   */
  constructor(
    readonly batchRecords: number,
    readonly ackEach: boolean,
  ) {
    if (!Number.isInteger(batchRecords) || batchRecords < 1) throw new RangeError(`batchRecords must be a positive integer, got ${batchRecords}`);
    this.buf = Buffer.allocUnsafe(batchRecords * MAX_CREATE_BYTES);
  }

  /** The largest buffer encode() returns: the socket's send buffer must exceed it. */
  get bufferBytes(): number {
    return this.buf.length;
  }

  /** Create messages for records[first, first + count), sequence numbers from firstSeq. */
  encode(records: Buffer, first: number, count: number, firstSeq: number): Buffer {
    if (count > this.batchRecords) throw new RangeError(`batch of ${count} records exceeds the encoder's ${this.batchRecords}`);
    if ((first + count) * RECORD_SIZE > records.length) throw new RecordFormatError(`records ${first}..${first + count - 1} run past the buffer of ${records.length / RECORD_SIZE} records`);
    const out = this.buf;
    let o = 0;
    let last = 0;
    for (let i = 0; i < count; i++) {
      const r = (first + i) * RECORD_SIZE;
      const proto = records[r + R_PROTO];
      if (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP) throw new RecordFormatError(`record ${first + i}: protocol ${proto} is neither TCP nor UDP`);
      const dnat =
        records.readUInt32BE(r + R_SERVER_ADDR) !== records.readUInt32BE(r + R_VIP_ADDR) ||
        records.readUInt16BE(r + R_SERVER_PORT) !== records.readUInt16BE(r + R_VIP_PORT);
      const snat = records.readUInt32BE(r + R_INSIDE_ADDR) !== 0;
      const variant = (proto === IPPROTO_UDP ? V_UDP : 0) | (dnat ? V_DNAT : 0) | (snat ? V_SNAT : 0);
      const t = (this.templates[variant] ??= buildTemplate(variant, this.ackEach));
      out.set(t.bytes, o);
      out.writeUInt32LE((firstSeq + i) >>> 0, o + 8);
      copy4(records, r + R_CLIENT_ADDR, out, o + t.origSrc);
      copy4(records, r + R_VIP_ADDR, out, o + t.origDst);
      copy2(records, r + R_CLIENT_PORT, out, o + t.origSport);
      copy2(records, r + R_VIP_PORT, out, o + t.origDport);
      copy4(records, r + R_VIP_ADDR, out, o + t.replySrc);
      copy4(records, r + R_CLIENT_ADDR, out, o + t.replyDst);
      copy2(records, r + R_VIP_PORT, out, o + t.replySport);
      copy2(records, r + R_CLIENT_PORT, out, o + t.replyDport);
      if (dnat) {
        copy4(records, r + R_SERVER_ADDR, out, o + t.dnatMin);
        copy4(records, r + R_SERVER_ADDR, out, o + t.dnatMax);
        copy2(records, r + R_SERVER_PORT, out, o + t.dnatPortMin);
        copy2(records, r + R_SERVER_PORT, out, o + t.dnatPortMax);
      }
      if (snat) {
        copy4(records, r + R_INSIDE_ADDR, out, o + t.snatMin);
        copy4(records, r + R_INSIDE_ADDR, out, o + t.snatMax);
        copy2(records, r + R_INSIDE_PORT, out, o + t.snatPortMin);
        copy2(records, r + R_INSIDE_PORT, out, o + t.snatPortMax);
      }
      out.writeUInt32BE(createStatus(records.readUInt16BE(r + R_STATUS)), o + t.status);
      copy4(records, r + R_TIMEOUT, out, o + t.timeout);
      copy4(records, r + R_MARK, out, o + t.mark);
      if (t.tcpState >= 0) {
        out[o + t.tcpState] = records[r + R_TCP_STATE]!;
        out[o + t.wscaleOriginal] = records[r + R_WSCALE_ORIGINAL]!;
        out[o + t.wscaleReply] = records[r + R_WSCALE_REPLY]!;
        out[o + t.flagsOriginal] = records[r + R_FLAGS_ORIGINAL]!;
        out[o + t.flagsReply] = records[r + R_FLAGS_REPLY]!;
      }
      last = o;
      o += t.bytes.length;
    }
    if (!this.ackEach && count > 0) out.writeUInt16LE(out.readUInt16LE(last + 6) | NLM_F_ACK, last + 6);
    return out.subarray(0, o);
  }
}
