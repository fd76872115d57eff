/**
 * The entry record's ctnetlink side, the pair beside entry-record.ts: a conntrack dump decoded
 * straight into records (no object per entry), the record of one decoded entry (an event), and
 * creates built by copying a preallocated ctnetlink template and patching fixed offsets.
 * Round-trip tested against the kernel's own messages.
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
  CTA_SEQADJ_CORRECTION_POS,
  CTA_SEQADJ_OFFSET_AFTER,
  CTA_SEQADJ_OFFSET_BEFORE,
  CTA_SEQ_ADJ_ORIG,
  CTA_SEQ_ADJ_REPLY,
  CTA_STATUS,
  CTA_SYNPROXY,
  CTA_SYNPROXY_ISN,
  CTA_SYNPROXY_ITS,
  CTA_SYNPROXY_TSOFF,
  CTA_TIMEOUT,
  CTA_TUPLE_IP,
  CTA_TUPLE_ORIG,
  CTA_TUPLE_PROTO,
  CTA_TUPLE_REPLY,
  IPCTNL_MSG_CT_DELETE,
  IPCTNL_MSG_CT_NEW,
  IPPROTO_TCP,
  IPPROTO_UDP,
  NFGENMSG_LEN,
  NFNETLINK_V0,
  createStatus,
  ctnlType,
  type ConntrackEntry,
} from './ctnetlink.js';
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
import {
  EXT_SEQADJ,
  EXT_SYNPROXY,
  RECORD_SIZE,
  RecordFormatError,
  R_EXTENSIONS,
  R_SEQADJ_ORIGINAL,
  R_SEQADJ_REPLY,
  R_SYNPROXY,
  SEQADJ_CORRECTION_POS,
  SEQADJ_OFFSET_AFTER,
  SEQADJ_OFFSET_BEFORE,
  SYNPROXY_ISN,
  SYNPROXY_ITS,
  SYNPROXY_TSOFF,
  R_CLIENT_ADDR,
  R_CLIENT_PORT,
  R_FLAGS_ORIGINAL,
  R_FLAGS_REPLY,
  R_INSIDE_ADDR,
  R_INSIDE_PORT,
  R_MARK,
  R_PROTO,
  R_SERVER_ADDR,
  R_SERVER_PORT,
  R_STATUS,
  R_TCP_STATE,
  R_TIMEOUT,
  R_VIP_ADDR,
  R_VIP_PORT,
  R_WSCALE_ORIGINAL,
  R_WSCALE_REPLY,
  readRecord,
  rec,
  type EntryRecord,
} from './entry-record.js';

/**
 * The record of a decoded entry as an object (tools and tests). Undefined for protocols other
 * than TCP and UDP.
 */
export function entryToRecord(e: ConntrackEntry): EntryRecord | undefined {
  if (e.orig.proto !== IPPROTO_TCP && e.orig.proto !== IPPROTO_UDP) return undefined;
  return readRecord(entryRecordOf(e, false));
}

/**
 * A decoded entry (an event) as a record. A destroy needs only the key, the server and the
 * status (whether the entry ever was a connection).
 */
export function entryRecordOf(e: ConntrackEntry, destroyed: boolean): Buffer {
  const r = Buffer.alloc(RECORD_SIZE);
  rec.setClientAddress(r, 0, addressNumber(e.orig.src));
  rec.setVipAddress(r, 0, addressNumber(e.orig.dst));
  rec.setServerAddress(r, 0, addressNumber(e.reply.src));
  rec.setClientPort(r, 0, e.orig.sport);
  rec.setVipPort(r, 0, e.orig.dport);
  rec.setServerPort(r, 0, e.reply.sport);
  rec.setProtocol(r, 0, e.orig.proto);
  // fullnat: the reply goes to the inside address, not back to the client.
  if (e.reply.dst !== e.orig.src || e.reply.dport !== e.orig.sport) {
    rec.setInsideAddress(r, 0, addressNumber(e.reply.dst));
    rec.setInsidePort(r, 0, e.reply.dport);
  }
  rec.setMark(r, 0, e.mark >>> 0);
  // A destroy carries the status too: it says whether the entry ever was a connection.
  rec.setStatus(r, 0, e.status & 0xffff);
  if (destroyed) return r;
  rec.setTimeout(r, 0, e.timeout >>> 0);
  if (e.orig.proto === IPPROTO_TCP) {
    rec.setTcpState(r, 0, e.tcpState ?? 0);
    const w = e.tcpWindow;
    if (w) {
      rec.setWscaleOriginal(r, 0, w.wscaleOriginal);
      rec.setWscaleReply(r, 0, w.wscaleReply);
      rec.setFlagsOriginal(r, 0, w.flagsOriginal);
      rec.setFlagsReply(r, 0, w.flagsReply);
    }
    if (e.seqAdj) rec.setSeqAdj(r, 0, e.seqAdj);
    if (e.synproxy) rec.setSynproxy(r, 0, e.synproxy);
  }
  return r;
}


/** The kernel's dotted address as a number, without a check or a Buffer (the event path is hot). */
function addressNumber(address: string): number {
  let value = 0;
  let start = 0;
  for (let i = 0; i <= address.length; i++) {
    if (i === address.length || address.charCodeAt(i) === 46) {
      value = value * 256 + Number(address.slice(start, i));
      start = i + 1;
    }
  }
  return value >>> 0;
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
 * Copies the three u32 of a nest at [start, end) into the block at `at` of `out`, each to the
 * offset `slot(type)` gives (-1: not ours). Returns how many of the three it found.
 */
function decodeU32Nest(b: Buffer, start: number, end: number, out: Buffer, at: number, slot: (type: number) => number): number {
  let found = 0;
  for (let p = start; p + NLA_HDRLEN <= end; ) {
    const len = attrLength(b, p, end);
    const s = slot(le16(b, p + 2) & NLA_TYPE_MASK);
    if (s >= 0) {
      need(b, p, len, 4);
      copy4(b, p + NLA_HDRLEN, out, at + s);
      found++;
    }
    p += align4(len);
  }
  return found;
}

const seqAdjSlot = (t: number): number =>
  t === CTA_SEQADJ_CORRECTION_POS ? SEQADJ_CORRECTION_POS : t === CTA_SEQADJ_OFFSET_BEFORE ? SEQADJ_OFFSET_BEFORE : t === CTA_SEQADJ_OFFSET_AFTER ? SEQADJ_OFFSET_AFTER : -1;
const synproxySlot = (t: number): number =>
  t === CTA_SYNPROXY_ISN ? SYNPROXY_ISN : t === CTA_SYNPROXY_ITS ? SYNPROXY_ITS : t === CTA_SYNPROXY_TSOFF ? SYNPROXY_TSOFF : -1;

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
  let seqAdj = 0;
  let synproxy = 0;
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
      case CTA_SEQ_ADJ_ORIG:
        seqAdj += decodeU32Nest(b, v, p + len, out, o + R_SEQADJ_ORIGINAL, seqAdjSlot);
        break;
      case CTA_SEQ_ADJ_REPLY:
        seqAdj += decodeU32Nest(b, v, p + len, out, o + R_SEQADJ_REPLY, seqAdjSlot);
        break;
      case CTA_SYNPROXY:
        synproxy = decodeU32Nest(b, v, p + len, out, o + R_SYNPROXY, synproxySlot);
        break;
    }
    p += align4(len);
  }
  if (origProto === -2 || replyProto === -2) throw new NetlinkParseError('entry without CTA_TUPLE_ORIG and CTA_TUPLE_REPLY', start);
  if (origProto !== IPPROTO_TCP && origProto !== IPPROTO_UDP) return false;
  if (replyProto === -1) return false;
  out[o + R_PROTO] = origProto;
  // The kernel sends both directions' seqadj with all three fields, or none; anything less is left out.
  if (seqAdj === 6) out[o + R_EXTENSIONS] = out[o + R_EXTENSIONS]! | EXT_SEQADJ;
  else out.fill(0, o + R_SEQADJ_ORIGINAL, o + R_SYNPROXY);
  if (synproxy === 3 && (out.readUInt32BE(o + R_SYNPROXY) | out.readUInt32BE(o + R_SYNPROXY + 4) | out.readUInt32BE(o + R_SYNPROXY + 8)) !== 0) out[o + R_EXTENSIONS] = out[o + R_EXTENSIONS]! | EXT_SYNPROXY;
  else out.fill(0, o + R_SYNPROXY, o + RECORD_SIZE);
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
  /** Where the seqadj blocks (original, reply) and the synproxy block start: three u32 each. */
  seqAdjOriginal: number;
  seqAdjReply: number;
  synproxy: number;
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
const V_SEQADJ = 8;
const V_SYNPROXY = 16;

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
  // The kernel gives every entry it creates both extensions; these set their values.
  t.seqAdjOriginal = t.seqAdjReply = t.synproxy = -1;
  const u32Nest = (type: number, a: number, b: number, c: number): number => {
    let first = -1;
    l.nest(type, () => {
      first = l.attr(a, 4);
      l.attr(b, 4);
      l.attr(c, 4);
    });
    return first;
  };
  if (variant & V_SEQADJ) {
    t.seqAdjOriginal = u32Nest(CTA_SEQ_ADJ_ORIG, CTA_SEQADJ_CORRECTION_POS, CTA_SEQADJ_OFFSET_BEFORE, CTA_SEQADJ_OFFSET_AFTER);
    t.seqAdjReply = u32Nest(CTA_SEQ_ADJ_REPLY, CTA_SEQADJ_CORRECTION_POS, CTA_SEQADJ_OFFSET_BEFORE, CTA_SEQADJ_OFFSET_AFTER);
  }
  if (variant & V_SYNPROXY) t.synproxy = u32Nest(CTA_SYNPROXY, CTA_SYNPROXY_ISN, CTA_SYNPROXY_ITS, CTA_SYNPROXY_TSOFF);
  const bytes = Buffer.from(l.buf.subarray(0, l.used));
  bytes.writeUInt32LE(l.used, 0);
  bytes.writeUInt16LE(CT_NEW_TYPE, 4);
  bytes.writeUInt16LE(NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | (ack ? NLM_F_ACK : 0), 6);
  bytes[NLMSG_HDRLEN] = AF_INET;
  bytes[NLMSG_HDRLEN + 1] = NFNETLINK_V0;
  return { ...(t as Template), bytes };
}

/** The largest create message (TCP, DNAT, SNAT and both extensions): the batch buffer's unit. */
const MAX_CREATE_BYTES = buildTemplate(V_DNAT | V_SNAT | V_SEQADJ | V_SYNPROXY, false).bytes.length;

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
      const ext = records[r + R_EXTENSIONS]!;
      const variant = (proto === IPPROTO_UDP ? V_UDP : 0) | (dnat ? V_DNAT : 0) | (snat ? V_SNAT : 0) | (ext & EXT_SEQADJ ? V_SEQADJ : 0) | (ext & EXT_SYNPROXY ? V_SYNPROXY : 0);
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
      if (t.seqAdjOriginal >= 0) {
        // Each u32 attribute takes 8 bytes: header, then the value.
        for (let k = 0; k < 3; k++) {
          copy4(records, r + R_SEQADJ_ORIGINAL + 4 * k, out, o + t.seqAdjOriginal + 8 * k);
          copy4(records, r + R_SEQADJ_REPLY + 4 * k, out, o + t.seqAdjReply + 8 * k);
        }
      }
      if (t.synproxy >= 0) for (let k = 0; k < 3; k++) copy4(records, r + R_SYNPROXY + 4 * k, out, o + t.synproxy + 8 * k);
      last = o;
      o += t.bytes.length;
    }
    if (!this.ackEach && count > 0) out.writeUInt16LE(out.readUInt16LE(last + 6) | NLM_F_ACK, last + 6);
    return out.subarray(0, o);
  }
}

// ---- records → delete messages ----

/** A delete by original tuple (without NLM_F_ACK), and where its fields go. */
interface DeleteTemplate {
  bytes: Buffer;
  proto: number;
  src: number;
  dst: number;
  sport: number;
  dport: number;
}

function buildDeleteTemplate(): DeleteTemplate {
  const l = new TemplateLayout();
  const t: Partial<DeleteTemplate> = {};
  l.nest(CTA_TUPLE_ORIG, () => {
    l.nest(CTA_TUPLE_IP, () => {
      t.src = l.attr(CTA_IP_V4_SRC, 4);
      t.dst = l.attr(CTA_IP_V4_DST, 4);
    });
    l.nest(CTA_TUPLE_PROTO, () => {
      t.proto = l.attr(CTA_PROTO_NUM, 1);
      t.sport = l.attr(CTA_PROTO_SRC_PORT, 2);
      t.dport = l.attr(CTA_PROTO_DST_PORT, 2);
    });
  });
  const bytes = Buffer.from(l.buf.subarray(0, l.used));
  bytes.writeUInt32LE(l.used, 0);
  bytes.writeUInt16LE(ctnlType(IPCTNL_MSG_CT_DELETE), 4);
  bytes.writeUInt16LE(NLM_F_REQUEST, 6);
  bytes[NLMSG_HDRLEN] = AF_INET;
  bytes[NLMSG_HDRLEN + 1] = NFNETLINK_V0;
  return { ...(t as DeleteTemplate), bytes };
}

const DELETE_TEMPLATE = buildDeleteTemplate();

/**
 * Delete messages for records[first, first + count), by each one's original tuple, sequence
 * numbers from firstSeq: with `ackEach` the same bytes as encodeDelete() gives for each;
 * without, only the last asks for an ack (the kernel still answers every failure). No object
 * per record: readRecord and encodeDelete with an ack each took 9.3 µs an entry, kernel
 * included, against 1.2 µs for the kernel's own delete by mark.
 */
export function encodeDeletes(records: Buffer, first: number, count: number, firstSeq: number, ackEach: boolean): Buffer {
  if ((first + count) * RECORD_SIZE > records.length) throw new RecordFormatError(`records ${first}..${first + count - 1} run past the buffer of ${records.length / RECORD_SIZE} records`);
  const t = DELETE_TEMPLATE;
  const size = t.bytes.length;
  const out = Buffer.allocUnsafe(count * size);
  for (let i = 0; i < count; i++) {
    const r = (first + i) * RECORD_SIZE;
    const o = i * size;
    const proto = records[r + R_PROTO]!;
    if (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP) throw new RecordFormatError(`record ${first + i}: protocol ${proto} is neither TCP nor UDP`);
    out.set(t.bytes, o);
    out.writeUInt32LE((firstSeq + i) >>> 0, o + 8);
    out[o + t.proto] = proto;
    copy4(records, r + R_CLIENT_ADDR, out, o + t.src);
    copy4(records, r + R_VIP_ADDR, out, o + t.dst);
    copy2(records, r + R_CLIENT_PORT, out, o + t.sport);
    copy2(records, r + R_VIP_PORT, out, o + t.dport);
    if (ackEach || i === count - 1) out.writeUInt16LE(NLM_F_REQUEST | NLM_F_ACK, o + 6);
  }
  return out;
}
