/**
 * The entry record: one access-table entry in 80 fixed bytes, the unit a migration
 * moves. A dump decodes straight from the kernel's datagrams into records (no object
 * per entry) and creates are built by copying a preallocated ctnetlink template and
 * patching fixed offsets, so 100,000 entries cost tens of milliseconds of JavaScript
 * instead of a second (docs/architecture.md: the kernel's own floor is ~180–270 ms).
 *
 * Records travel between appliances and keepers as they are: this is a wire format. This
 * module owns its layout (accessors by name: `rec`), the stream header and the rule of which
 * entries carry a connection; entry-record-ctnetlink.ts converts records to and from conntrack's
 * netlink messages.
 *
 * Stream: an 8-byte header, then records back to back.
 *   0  4  magic "VSCT"
 *   4  u16 version (2)
 *   6  u16 record size in bytes (80)
 * A reader takes version 2 and version 1 (40-byte records, read as version 2 without
 * extensions: what an appliance or keeper of the previous release sends) and refuses others,
 * naming both; a version-1 reader refuses version 2 the same way.
 *
 * Record, version 2 (every multi-byte field big-endian, as ctnetlink carries them). Bytes
 * 0..39 are version 1's record unchanged:
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
 * then conntrack's extensions a connection opened by SYNPROXY cannot go on without (SYNPROXY
 * answered the client with its own initial sequence number, the cookie; the kernel shifts
 * every later sequence number of the server's by the difference, and its timestamps by tsoff):
 *  40  u8  extensions          EXT_SEQADJ | EXT_SYNPROXY: which blocks below hold values
 *  41  3 bytes zero
 *  44  u32 seqadj original: correction_pos   (CTA_SEQ_ADJ_ORIG)
 *  48  u32 seqadj original: offset_before
 *  52  u32 seqadj original: offset_after
 *  56  u32 seqadj reply: correction_pos      (CTA_SEQ_ADJ_REPLY)
 *  60  u32 seqadj reply: offset_before
 *  64  u32 seqadj reply: offset_after
 *  68  u32 synproxy isn                      (CTA_SYNPROXY)
 *  72  u32 synproxy its
 *  76  u32 synproxy tsoff
 * A block whose bit is clear is zero. The synproxy block is flagged only when not all zero:
 * ctnetlink gives every entry it creates the extension, zeroed, so zero and absent are alike.
 */
import {
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPS_ASSURED,
  IPS_SEEN_REPLY,
  TCP_CONNTRACK_SYN_RECV,
  TCP_CONNTRACK_SYN_SENT,
  TCP_CONNTRACK_SYN_SENT2,
  type SeqAdj,
  type SynproxyState,
  type TcpWindow,
} from './ctnetlink.js';
import { bytesToIpv4, ipv4ToBytes } from '../packet/ipv4.js';
import { TCP_TIMEOUT_SYN_RECV_S, TCP_TIMEOUT_SYN_SENT_S } from '../kernel/sysctl.js';

export const RECORD_VERSION = 2;
export const RECORD_SIZE = 80;
/** The previous release's records: read (as version 2 without extensions), never written. */
export const RECORD_V1_VERSION = 1;
export const RECORD_V1_SIZE = 40;
export const RECORD_STREAM_MAGIC = 'VSCT';
export const RECORD_STREAM_HEADER_SIZE = 8;

// Field offsets inside a record: for rec.* and the ctnetlink codec beside this module only.
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
export const R_EXTENSIONS = 40;
export const R_SEQADJ_ORIGINAL = 44;
export const R_SEQADJ_REPLY = 56;
export const R_SYNPROXY = 68;
/** Within a seqadj block. */
export const SEQADJ_CORRECTION_POS = 0;
export const SEQADJ_OFFSET_BEFORE = 4;
export const SEQADJ_OFFSET_AFTER = 8;
/** Within the synproxy block. */
export const SYNPROXY_ISN = 0;
export const SYNPROXY_ITS = 4;
export const SYNPROXY_TSOFF = 8;

/** Bits of the extensions byte. */
export const EXT_SEQADJ = 1;
export const EXT_SYNPROXY = 2;

/**
 * The fields of the record at byte `o` of `b`, read and written by name: every module but
 * this one uses these, never the offsets. Addresses are the u32 of the address's 4 bytes.
 */
export const rec = {
  clientAddress: (b: Buffer, o = 0): number => b.readUInt32BE(o + R_CLIENT_ADDR),
  vipAddress: (b: Buffer, o = 0): number => b.readUInt32BE(o + R_VIP_ADDR),
  serverAddress: (b: Buffer, o = 0): number => b.readUInt32BE(o + R_SERVER_ADDR),
  insideAddress: (b: Buffer, o = 0): number => b.readUInt32BE(o + R_INSIDE_ADDR),
  clientPort: (b: Buffer, o = 0): number => b.readUInt16BE(o + R_CLIENT_PORT),
  vipPort: (b: Buffer, o = 0): number => b.readUInt16BE(o + R_VIP_PORT),
  serverPort: (b: Buffer, o = 0): number => b.readUInt16BE(o + R_SERVER_PORT),
  insidePort: (b: Buffer, o = 0): number => b.readUInt16BE(o + R_INSIDE_PORT),
  protocol: (b: Buffer, o = 0): number => b[o + R_PROTO]!,
  tcpState: (b: Buffer, o = 0): number => b[o + R_TCP_STATE]!,
  wscaleOriginal: (b: Buffer, o = 0): number => b[o + R_WSCALE_ORIGINAL]!,
  wscaleReply: (b: Buffer, o = 0): number => b[o + R_WSCALE_REPLY]!,
  flagsOriginal: (b: Buffer, o = 0): number => b[o + R_FLAGS_ORIGINAL]!,
  flagsReply: (b: Buffer, o = 0): number => b[o + R_FLAGS_REPLY]!,
  status: (b: Buffer, o = 0): number => b.readUInt16BE(o + R_STATUS),
  timeout: (b: Buffer, o = 0): number => b.readUInt32BE(o + R_TIMEOUT),
  mark: (b: Buffer, o = 0): number => b.readUInt32BE(o + R_MARK),
  extensions: (b: Buffer, o = 0): number => b[o + R_EXTENSIONS]!,
  setClientAddress: (b: Buffer, o: number, v: number): void => void b.writeUInt32BE(v >>> 0, o + R_CLIENT_ADDR),
  setVipAddress: (b: Buffer, o: number, v: number): void => void b.writeUInt32BE(v >>> 0, o + R_VIP_ADDR),
  setServerAddress: (b: Buffer, o: number, v: number): void => void b.writeUInt32BE(v >>> 0, o + R_SERVER_ADDR),
  setInsideAddress: (b: Buffer, o: number, v: number): void => void b.writeUInt32BE(v >>> 0, o + R_INSIDE_ADDR),
  setClientPort: (b: Buffer, o: number, v: number): void => void b.writeUInt16BE(v, o + R_CLIENT_PORT),
  setVipPort: (b: Buffer, o: number, v: number): void => void b.writeUInt16BE(v, o + R_VIP_PORT),
  setServerPort: (b: Buffer, o: number, v: number): void => void b.writeUInt16BE(v, o + R_SERVER_PORT),
  setInsidePort: (b: Buffer, o: number, v: number): void => void b.writeUInt16BE(v, o + R_INSIDE_PORT),
  setProtocol: (b: Buffer, o: number, v: number): void => void (b[o + R_PROTO] = v),
  setTcpState: (b: Buffer, o: number, v: number): void => void (b[o + R_TCP_STATE] = v),
  setWscaleOriginal: (b: Buffer, o: number, v: number): void => void (b[o + R_WSCALE_ORIGINAL] = v),
  setWscaleReply: (b: Buffer, o: number, v: number): void => void (b[o + R_WSCALE_REPLY] = v),
  setFlagsOriginal: (b: Buffer, o: number, v: number): void => void (b[o + R_FLAGS_ORIGINAL] = v),
  setFlagsReply: (b: Buffer, o: number, v: number): void => void (b[o + R_FLAGS_REPLY] = v),
  setStatus: (b: Buffer, o: number, v: number): void => void b.writeUInt16BE(v, o + R_STATUS),
  setTimeout: (b: Buffer, o: number, v: number): void => void b.writeUInt32BE(v >>> 0, o + R_TIMEOUT),
  setMark: (b: Buffer, o: number, v: number): void => void b.writeUInt32BE(v >>> 0, o + R_MARK),
  /** Sets both directions' seqadj and its bit. */
  setSeqAdj: (b: Buffer, o: number, v: { original: SeqAdj; reply: SeqAdj }): void => {
    writeSeqAdj(b, o + R_SEQADJ_ORIGINAL, v.original);
    writeSeqAdj(b, o + R_SEQADJ_REPLY, v.reply);
    b[o + R_EXTENSIONS] = b[o + R_EXTENSIONS]! | EXT_SEQADJ;
  },
  /** Sets the synproxy block, and its bit unless all of it is zero. */
  setSynproxy: (b: Buffer, o: number, v: SynproxyState): void => {
    b.writeUInt32BE(v.isn >>> 0, o + R_SYNPROXY + SYNPROXY_ISN);
    b.writeUInt32BE(v.its >>> 0, o + R_SYNPROXY + SYNPROXY_ITS);
    b.writeUInt32BE(v.tsoff >>> 0, o + R_SYNPROXY + SYNPROXY_TSOFF);
    if ((v.isn | v.its | v.tsoff) !== 0) b[o + R_EXTENSIONS] = b[o + R_EXTENSIONS]! | EXT_SYNPROXY;
  },
  seqAdj: (b: Buffer, o = 0): { original: SeqAdj; reply: SeqAdj } | undefined =>
    b[o + R_EXTENSIONS]! & EXT_SEQADJ ? { original: readSeqAdj(b, o + R_SEQADJ_ORIGINAL), reply: readSeqAdj(b, o + R_SEQADJ_REPLY) } : undefined,
  synproxy: (b: Buffer, o = 0): SynproxyState | undefined =>
    b[o + R_EXTENSIONS]! & EXT_SYNPROXY
      ? { isn: b.readUInt32BE(o + R_SYNPROXY + SYNPROXY_ISN), its: b.readUInt32BE(o + R_SYNPROXY + SYNPROXY_ITS), tsoff: b.readUInt32BE(o + R_SYNPROXY + SYNPROXY_TSOFF) }
      : undefined,
};

function writeSeqAdj(b: Buffer, at: number, v: SeqAdj): void {
  b.writeUInt32BE(v.correctionPos >>> 0, at + SEQADJ_CORRECTION_POS);
  b.writeUInt32BE(v.offsetBefore >>> 0, at + SEQADJ_OFFSET_BEFORE);
  b.writeUInt32BE(v.offsetAfter >>> 0, at + SEQADJ_OFFSET_AFTER);
}

function readSeqAdj(b: Buffer, at: number): SeqAdj {
  return { correctionPos: b.readUInt32BE(at + SEQADJ_CORRECTION_POS), offsetBefore: b.readUInt32BE(at + SEQADJ_OFFSET_BEFORE), offsetAfter: b.readUInt32BE(at + SEQADJ_OFFSET_AFTER) };
}

/**
 * Applies an update (the record at `so` of `src`, decoded from an event) to the record at `d`
 * of `dst`: an event carries only what changed, so a TCP update without protocol info (TCP
 * state 0) keeps the state and window (bytes 25..29), and an extension the update does not
 * carry keeps its block (SYNPROXY's offsets come in events of their own, after the one that
 * made the connection ESTABLISHED).
 */
export function applyRecordUpdate(src: Buffer, so: number, dst: Buffer, d: number): void {
  const keepTcp = src[so + R_PROTO] === IPPROTO_TCP && src[so + R_TCP_STATE] === 0;
  if (keepTcp) {
    src.copy(dst, d, so, so + R_TCP_STATE);
    src.copy(dst, d + R_FLAGS_REPLY + 1, so + R_FLAGS_REPLY + 1, so + R_EXTENSIONS);
  } else {
    src.copy(dst, d, so, so + R_EXTENSIONS);
  }
  const ext = src[so + R_EXTENSIONS]!;
  if (ext & EXT_SEQADJ) src.copy(dst, d + R_SEQADJ_ORIGINAL, so + R_SEQADJ_ORIGINAL, so + R_SYNPROXY);
  if (ext & EXT_SYNPROXY) src.copy(dst, d + R_SYNPROXY, so + R_SYNPROXY, so + RECORD_SIZE);
  dst[d + R_EXTENSIONS] = dst[d + R_EXTENSIONS]! | ext;
}

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
  /** conntrack's sequence adjustment, both directions (CTA_SEQ_ADJ_ORIG / _REPLY). */
  seqAdj?: { original: SeqAdj; reply: SeqAdj };
  /** conntrack's synproxy extension (CTA_SYNPROXY); absent when all zero. */
  synproxy?: SynproxyState;
}

export function encodeStreamHeader(): Buffer {
  const b = Buffer.alloc(RECORD_STREAM_HEADER_SIZE);
  b.write(RECORD_STREAM_MAGIC, 0, 'latin1');
  b.writeUInt16BE(RECORD_VERSION, 4);
  b.writeUInt16BE(RECORD_SIZE, 6);
  return b;
}

/**
 * Checks a stream header; throws RecordFormatError naming what does not match. Returns the
 * size of the stream's records: RECORD_SIZE, or RECORD_V1_SIZE for a version-1 stream.
 */
export function checkStreamHeader(b: Buffer): number {
  if (b.length < RECORD_STREAM_HEADER_SIZE) throw new RecordFormatError(`record stream header is ${b.length} bytes, expected ${RECORD_STREAM_HEADER_SIZE}`);
  const magic = b.toString('latin1', 0, 4);
  if (magic !== RECORD_STREAM_MAGIC) throw new RecordFormatError(`record stream magic is ${JSON.stringify(magic)}, expected "${RECORD_STREAM_MAGIC}"`);
  const version = b.readUInt16BE(4);
  const size = b.readUInt16BE(6);
  if (version === RECORD_VERSION && size === RECORD_SIZE) return RECORD_SIZE;
  if (version === RECORD_V1_VERSION && size === RECORD_V1_SIZE) return RECORD_V1_SIZE;
  throw new RecordFormatError(
    `record stream version ${version} with ${size}-byte records; this build reads version ${RECORD_VERSION} with ${RECORD_SIZE}-byte records (and version ${RECORD_V1_VERSION} with ${RECORD_V1_SIZE})`,
  );
}

/** Version-1 records (40 bytes each) as version-2 records without extensions. */
export function widenV1Records(v1: Buffer): Buffer {
  if (v1.length % RECORD_V1_SIZE !== 0) throw new RecordFormatError(`${v1.length} bytes are not a whole number of ${RECORD_V1_SIZE}-byte version-1 records`);
  const n = v1.length / RECORD_V1_SIZE;
  const out = Buffer.alloc(n * RECORD_SIZE);
  for (let i = 0; i < n; i++) v1.copy(out, i * RECORD_SIZE, i * RECORD_V1_SIZE, (i + 1) * RECORD_V1_SIZE);
  return out;
}

/**
 * Reassembles a record stream that arrives in arbitrary pieces (an HTTP body):
 * checks the header, then hands out whole records only, as version 2.
 */
export class RecordStreamReader {
  private pending = Buffer.alloc(0);
  private headerSeen = false;
  private size = RECORD_SIZE;
  records = 0;

  /** Whole records in this piece (possibly none). */
  push(piece: Buffer): Buffer {
    let data = this.pending.length ? Buffer.concat([this.pending, piece]) : piece;
    if (!this.headerSeen) {
      if (data.length < RECORD_STREAM_HEADER_SIZE) {
        this.pending = Buffer.from(data);
        return Buffer.alloc(0);
      }
      this.size = checkStreamHeader(data);
      this.headerSeen = true;
      data = data.subarray(RECORD_STREAM_HEADER_SIZE);
    }
    const whole = data.length - (data.length % this.size);
    this.pending = Buffer.from(data.subarray(whole));
    this.records += whole / this.size;
    const records = data.subarray(0, whole);
    return this.size === RECORD_SIZE ? records : widenV1Records(records);
  }

  /** Call at the end of the stream: a missing header or a partial record is an error. */
  end(): void {
    if (!this.headerSeen) throw new RecordFormatError('record stream ended before its header');
    if (this.pending.length) throw new RecordFormatError(`record stream ended inside a record (${this.pending.length} of ${this.size} bytes)`);
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
    ...optional('seqAdj', rec.seqAdj(b, r)),
    ...optional('synproxy', rec.synproxy(b, r)),
  };
}

const optional = <K extends string, V>(key: K, value: V | undefined): { [k in K]?: V } => (value === undefined ? {} : ({ [key]: value } as { [k in K]: V }));

const fields = rec;

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
  if (rec.seqAdj) fields.setSeqAdj(b, r, rec.seqAdj);
  if (rec.synproxy) fields.setSynproxy(b, r, rec.synproxy);
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

