/**
 * Netlink messages and attributes (linux/netlink.h), as pure functions on Buffers.
 * Everything is host byte order except where a family says otherwise (ctnetlink
 * attributes are big-endian, see ctnetlink.ts).
 */

export const NLMSG_HDRLEN = 16;
export const NLA_HDRLEN = 4;

// Message types every family shares.
export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;

// Flags.
export const NLM_F_REQUEST = 0x01;
export const NLM_F_MULTI = 0x02;
export const NLM_F_ACK = 0x04;
export const NLM_F_ECHO = 0x08;
export const NLM_F_DUMP_INTR = 0x10;
// For GET requests.
export const NLM_F_ROOT = 0x100;
export const NLM_F_MATCH = 0x200;
export const NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH;
// For NEW requests.
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
// For ACK messages.
export const NLM_F_CAPPED = 0x100;
export const NLM_F_ACK_TLVS = 0x200;

// Attribute type flags.
export const NLA_F_NESTED = 0x8000;
export const NLA_F_NET_BYTEORDER = 0x4000;
export const NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xffff;

// Socket options (SOL_NETLINK = 270).
export const SOL_SOCKET = 1;
export const SO_RCVBUF = 8;
export const SO_SNDBUF = 7;
export const SO_RCVBUFFORCE = 33;
export const SO_SNDBUFFORCE = 32;
export const SOL_NETLINK = 270;
export const NETLINK_ADD_MEMBERSHIP = 1;
export const NETLINK_NO_ENOBUFS = 5;
export const NETLINK_CAP_ACK = 10;
export const NETLINK_EXT_ACK = 11;

// Address families (linux/socket.h) as netlink families carry them.
export const AF_UNSPEC = 0;
export const AF_INET = 2;

// The nfgenmsg header every nfnetlink message starts with (linux/netfilter/nfnetlink.h).
export const NFNETLINK_V0 = 0;
export const NFGENMSG_LEN = 4;

// Protocols.
export const NETLINK_ROUTE = 0;
export const NETLINK_SOCK_DIAG = 4;
export const NETLINK_NETFILTER = 12;

// Extended ack attributes (NLMSGERR_ATTR_*).
export const NLMSGERR_ATTR_MSG = 1;
export const NLMSGERR_ATTR_OFFS = 2;

export const align4 = (n: number): number => (n + 3) & ~3;

/**
 * The nfgenmsg header every nfnetlink message (ctnetlink, nf_tables, nfnetlink_queue) starts
 * with: family, version, and res_id (big-endian: a queue number, or a subsystem id in a batch).
 */
export function nfgenmsg(family: number, resId = 0): Buffer {
  const b = Buffer.alloc(NFGENMSG_LEN);
  b.writeUInt8(family, 0);
  b.writeUInt8(NFNETLINK_V0, 1);
  b.writeUInt16BE(resId, 2);
  return b;
}

export interface NetlinkHeader {
  length: number;
  type: number;
  flags: number;
  seq: number;
  pid: number;
}

/** One message inside a datagram: its header and a view of its payload. */
export interface NetlinkMessage extends NetlinkHeader {
  payload: Buffer;
}

export function writeHeader(buf: Buffer, offset: number, h: NetlinkHeader): void {
  buf.writeUInt32LE(h.length, offset);
  buf.writeUInt16LE(h.type, offset + 4);
  buf.writeUInt16LE(h.flags, offset + 6);
  buf.writeUInt32LE(h.seq >>> 0, offset + 8);
  buf.writeUInt32LE(h.pid >>> 0, offset + 12);
}

/** A whole message: header followed by the payload (padded to 4 bytes). */
export function encodeMessage(type: number, flags: number, seq: number, payload: Buffer): Buffer {
  const length = NLMSG_HDRLEN + payload.length;
  const buf = Buffer.alloc(align4(length));
  writeHeader(buf, 0, { length, type, flags, seq, pid: 0 });
  payload.copy(buf, NLMSG_HDRLEN);
  return buf;
}

export class NetlinkParseError extends Error {
  constructor(
    message: string,
    readonly offset: number,
  ) {
    super(`${message} at byte ${offset}`);
    this.name = 'NetlinkParseError';
  }
}

/**
 * Splits a datagram into its messages. A truncated or malformed header throws
 * NetlinkParseError: the caller counts and drops the datagram.
 */
export function parseMessages(datagram: Buffer): NetlinkMessage[] {
  const out: NetlinkMessage[] = [];
  let offset = 0;
  while (offset + NLMSG_HDRLEN <= datagram.length) {
    const length = datagram.readUInt32LE(offset);
    if (length < NLMSG_HDRLEN || offset + length > datagram.length) {
      throw new NetlinkParseError(`netlink message length ${length} does not fit the datagram of ${datagram.length}`, offset);
    }
    out.push({
      length,
      type: datagram.readUInt16LE(offset + 4),
      flags: datagram.readUInt16LE(offset + 6),
      seq: datagram.readUInt32LE(offset + 8),
      pid: datagram.readUInt32LE(offset + 12),
      payload: datagram.subarray(offset + NLMSG_HDRLEN, offset + length),
    });
    offset += align4(length);
  }
  return out;
}

/** An attribute: its type (flags stripped), whether it is nested, and its value. */
export interface Attribute {
  type: number;
  nested: boolean;
  value: Buffer;
}

/** Walks a run of attributes; malformed lengths throw NetlinkParseError. */
export function parseAttributes(buf: Buffer, start = 0, end = buf.length): Attribute[] {
  const out: Attribute[] = [];
  let offset = start;
  while (offset + NLA_HDRLEN <= end) {
    const length = buf.readUInt16LE(offset);
    const rawType = buf.readUInt16LE(offset + 2);
    if (length < NLA_HDRLEN || offset + length > end) {
      throw new NetlinkParseError(`attribute length ${length} runs past its container`, offset);
    }
    out.push({
      type: rawType & NLA_TYPE_MASK,
      nested: (rawType & NLA_F_NESTED) !== 0,
      value: buf.subarray(offset + NLA_HDRLEN, offset + length),
    });
    offset += align4(length);
  }
  return out;
}

/** Attributes as a map by type; the last one of a type wins, as in the kernel's nla_parse. */
export function attributeMap(buf: Buffer): Map<number, Buffer> {
  const map = new Map<number, Buffer>();
  for (const a of parseAttributes(buf)) map.set(a.type, a.value);
  return map;
}

/**
 * Builds attribute runs. Values are appended into one growing buffer, so nested
 * attributes and whole messages are built without a concat per attribute.
 */
export class AttributeWriter {
  private buf: Buffer;
  private used = 0;

  constructor(initial = 256) {
    this.buf = Buffer.alloc(initial);
  }

  private reserve(bytes: number): void {
    if (this.used + bytes <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.used + bytes));
    this.buf.copy(next, 0, 0, this.used);
    this.buf = next;
  }

  private header(type: number, valueLength: number): number {
    this.reserve(align4(NLA_HDRLEN + valueLength));
    const at = this.used;
    this.buf.writeUInt16LE(NLA_HDRLEN + valueLength, at);
    this.buf.writeUInt16LE(type, at + 2);
    this.buf.fill(0, at + NLA_HDRLEN, at + align4(NLA_HDRLEN + valueLength));
    this.used += align4(NLA_HDRLEN + valueLength);
    return at + NLA_HDRLEN;
  }

  raw(bytes: Buffer): this {
    this.reserve(align4(bytes.length));
    bytes.copy(this.buf, this.used);
    this.buf.fill(0, this.used + bytes.length, this.used + align4(bytes.length));
    this.used += align4(bytes.length);
    return this;
  }

  bytes(type: number, value: Buffer): this {
    const at = this.header(type, value.length);
    value.copy(this.buf, at);
    return this;
  }

  u8(type: number, value: number): this {
    const at = this.header(type, 1);
    this.buf.writeUInt8(value, at);
    return this;
  }

  u16be(type: number, value: number): this {
    const at = this.header(type, 2);
    this.buf.writeUInt16BE(value, at);
    return this;
  }

  u32be(type: number, value: number): this {
    const at = this.header(type, 4);
    this.buf.writeUInt32BE(value >>> 0, at);
    return this;
  }

  u32(type: number, value: number): this {
    const at = this.header(type, 4);
    this.buf.writeUInt32LE(value >>> 0, at);
    return this;
  }

  string(type: number, value: string): this {
    const s = Buffer.from(`${value}\0`, 'utf8');
    return this.bytes(type, s);
  }

  nest(type: number, fill: (w: this) => void): this {
    this.reserve(NLA_HDRLEN);
    const at = this.used;
    this.buf.writeUInt16LE(type | NLA_F_NESTED, at + 2);
    this.used += NLA_HDRLEN;
    fill(this);
    this.buf.writeUInt16LE(this.used - at, at);
    return this;
  }

  toBuffer(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.used));
  }
}

/** The errno and, with NETLINK_EXT_ACK, the kernel's message from an NLMSG_ERROR payload. */
export interface NetlinkAck {
  errno: number;
  /** Sequence number of the request this acknowledges. */
  seq: number;
  /** Type of the request this acknowledges. */
  requestType: number;
  extAckMessage?: string;
}

export function parseAck(msg: NetlinkMessage): NetlinkAck {
  if (msg.payload.length < 4 + NLMSG_HDRLEN) {
    throw new NetlinkParseError(`NLMSG_ERROR payload of ${msg.payload.length} bytes is too short`, 0);
  }
  const error = msg.payload.readInt32LE(0);
  const requestType = msg.payload.readUInt16LE(4 + 4);
  const seq = msg.payload.readUInt32LE(4 + 8);
  const ack: NetlinkAck = { errno: -error, seq, requestType };
  if (msg.flags & NLM_F_ACK_TLVS) {
    // With NETLINK_CAP_ACK only the request's header is echoed; TLVs follow it.
    const requestLength = msg.payload.readUInt32LE(4);
    const tlvStart = msg.flags & NLM_F_CAPPED ? 4 + NLMSG_HDRLEN : 4 + align4(requestLength);
    if (tlvStart <= msg.payload.length) {
      for (const a of parseAttributes(msg.payload, tlvStart)) {
        if (a.type === NLMSGERR_ATTR_MSG) ack.extAckMessage = a.value.toString('utf8').replace(/\0.*$/s, '');
      }
    }
  }
  return ack;
}
