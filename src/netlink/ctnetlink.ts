/**
 * nfnetlink_conntrack (linux/netfilter/nfnetlink_conntrack.h, nfnetlink.h,
 * nf_conntrack_common.h, nf_conntrack_tcp.h) as pure functions on Buffers: the access
 * table's messages. IPv4, TCP and UDP. Every message is an nlmsghdr, a 4-byte nfgenmsg,
 * then attributes whose VALUES are big-endian (attribute headers stay host order).
 * The hot paths for 100,000 entries (records, templates) live in entry-record.ts.
 */
import {
  AttributeWriter,
  NLMSG_HDRLEN,
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_EXCL,
  NLM_F_REQUEST,
  NetlinkParseError,
  parseAttributes,
  nfgenmsg,
  writeHeader,
  type NetlinkMessage,
  NFGENMSG_LEN,
  AF_UNSPEC,
  AF_INET,
} from './message.js';
export { NFNETLINK_V0, NFGENMSG_LEN, AF_UNSPEC, AF_INET } from './message.js';
import { bytesToIpv4, ipv4ToBytes } from '../packet/ipv4.js';

// linux/netfilter/nfnetlink.h
export const NFNL_SUBSYS_CTNETLINK = 1;
export const NFNLGRP_CONNTRACK_NEW = 1;
export const NFNLGRP_CONNTRACK_UPDATE = 2;
export const NFNLGRP_CONNTRACK_DESTROY = 3;
/** nl_groups bit of an nfnetlink group, as bind() takes it. */
export const nfnlGroupBit = (group: number): number => 1 << (group - 1);

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;

// enum cntl_msg_types
export const IPCTNL_MSG_CT_NEW = 0;
export const IPCTNL_MSG_CT_GET = 1;
export const IPCTNL_MSG_CT_DELETE = 2;
export const IPCTNL_MSG_CT_GET_CTRZERO = 3;
export const IPCTNL_MSG_CT_GET_STATS_CPU = 4;
export const IPCTNL_MSG_CT_GET_STATS = 5;
/** nlmsg_type of a ctnetlink message: subsystem in the high byte. */
export const ctnlType = (msg: number): number => (NFNL_SUBSYS_CTNETLINK << 8) | msg;

// enum ctattr_type
export const CTA_TUPLE_ORIG = 1;
export const CTA_TUPLE_REPLY = 2;
export const CTA_STATUS = 3;
export const CTA_PROTOINFO = 4;
export const CTA_HELP = 5;
export const CTA_NAT_SRC = 6;
export const CTA_TIMEOUT = 7;
export const CTA_MARK = 8;
export const CTA_COUNTERS_ORIG = 9;
export const CTA_COUNTERS_REPLY = 10;
export const CTA_USE = 11;
export const CTA_ID = 12;
export const CTA_NAT_DST = 13;
export const CTA_SEQ_ADJ_ORIG = 15;
export const CTA_SEQ_ADJ_REPLY = 16;
export const CTA_ZONE = 18;
export const CTA_TIMESTAMP = 20;
export const CTA_MARK_MASK = 21;
export const CTA_SYNPROXY = 24;
export const CTA_STATUS_MASK = 26;

export const CTA_SEQADJ_CORRECTION_POS = 1;
export const CTA_SEQADJ_OFFSET_BEFORE = 2;
export const CTA_SEQADJ_OFFSET_AFTER = 3;

export const CTA_SYNPROXY_ISN = 1;
export const CTA_SYNPROXY_ITS = 2;
export const CTA_SYNPROXY_TSOFF = 3;
// enum ctattr_tuple
export const CTA_TUPLE_IP = 1;
export const CTA_TUPLE_PROTO = 2;
export const CTA_TUPLE_ZONE = 3;
// enum ctattr_ip
export const CTA_IP_V4_SRC = 1;
export const CTA_IP_V4_DST = 2;
// enum ctattr_l4proto
export const CTA_PROTO_NUM = 1;
export const CTA_PROTO_SRC_PORT = 2;
export const CTA_PROTO_DST_PORT = 3;
// enum ctattr_protoinfo
export const CTA_PROTOINFO_TCP = 1;
// enum ctattr_protoinfo_tcp
export const CTA_PROTOINFO_TCP_STATE = 1;
export const CTA_PROTOINFO_TCP_WSCALE_ORIGINAL = 2;
export const CTA_PROTOINFO_TCP_WSCALE_REPLY = 3;
export const CTA_PROTOINFO_TCP_FLAGS_ORIGINAL = 4;
export const CTA_PROTOINFO_TCP_FLAGS_REPLY = 5;
// enum ctattr_counters
export const CTA_COUNTERS_PACKETS = 1;
export const CTA_COUNTERS_BYTES = 2;
// enum ctattr_nat
export const CTA_NAT_V4_MINIP = 1;
export const CTA_NAT_V4_MAXIP = 2;
export const CTA_NAT_PROTO = 3;
// enum ctattr_protonat
export const CTA_PROTONAT_PORT_MIN = 1;
export const CTA_PROTONAT_PORT_MAX = 2;
// enum ctattr_stats_global
export const CTA_STATS_GLOBAL_ENTRIES = 1;
export const CTA_STATS_GLOBAL_MAX_ENTRIES = 2;
// enum ctattr_stats_cpu (the ones read here)
export const CTA_STATS_INSERT_FAILED = 9;
export const CTA_STATS_DROP = 10;
export const CTA_STATS_EARLY_DROP = 11;

// enum ip_conntrack_status (bit values)
export const IPS_EXPECTED = 1 << 0;
export const IPS_SEEN_REPLY = 1 << 1;
export const IPS_ASSURED = 1 << 2;
export const IPS_CONFIRMED = 1 << 3;
export const IPS_SRC_NAT = 1 << 4;
export const IPS_DST_NAT = 1 << 5;
export const IPS_SEQ_ADJUST = 1 << 6;
export const IPS_SRC_NAT_DONE = 1 << 7;
export const IPS_DST_NAT_DONE = 1 << 8;
export const IPS_DYING = 1 << 9;
export const IPS_FIXED_TIMEOUT = 1 << 10;
export const IPS_TEMPLATE = 1 << 11;
export const IPS_NAT_CLASH = 1 << 12;
export const IPS_HELPER = 1 << 13;
export const IPS_OFFLOAD = 1 << 14;
export const IPS_HW_OFFLOAD = 1 << 15;

// enum tcp_conntrack
export const TCP_CONNTRACK_NONE = 0;
export const TCP_CONNTRACK_SYN_SENT = 1;
export const TCP_CONNTRACK_SYN_RECV = 2;
export const TCP_CONNTRACK_ESTABLISHED = 3;
export const TCP_CONNTRACK_FIN_WAIT = 4;
export const TCP_CONNTRACK_CLOSE_WAIT = 5;
export const TCP_CONNTRACK_LAST_ACK = 6;
export const TCP_CONNTRACK_TIME_WAIT = 7;
export const TCP_CONNTRACK_CLOSE = 8;
export const TCP_CONNTRACK_SYN_SENT2 = 9;
export const TCP_CONNTRACK_MAX = 10;
export const TCP_CONNTRACK_NAMES = [
  'NONE', 'SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSE', 'SYN_SENT2',
] as const;

// nf_conntrack_tcp.h: struct nf_ct_tcp_flags { u8 flags; u8 mask; }
export const IP_CT_TCP_FLAG_WINDOW_SCALE = 0x01;
export const IP_CT_TCP_FLAG_SACK_PERM = 0x02;
export const IP_CT_TCP_FLAG_CLOSE_INIT = 0x04;
export const IP_CT_TCP_FLAG_BE_LIBERAL = 0x08;

export interface ConntrackTuple {
  src: string;
  dst: string;
  /** 0 for protocols without ports. */
  sport: number;
  dport: number;
  proto: number;
}

/** TCP window tracking state, so that an entry created elsewhere keeps tracking. */
export interface TcpWindow {
  wscaleOriginal: number;
  wscaleReply: number;
  flagsOriginal: number;
  flagsReply: number;
}

/**
 * One direction of conntrack's sequence adjustment (the seqadj extension, struct nf_ct_seqadj):
 * sequence numbers at or after `correctionPos` move by `offsetAfter`, earlier ones by
 * `offsetBefore`. SYNPROXY sets the reply direction's to its cookie minus the server's ISN.
 * Values are the kernel's u32 (the offsets are s32 there).
 */
export interface SeqAdj {
  correctionPos: number;
  offsetBefore: number;
  offsetAfter: number;
}

/** conntrack's synproxy extension (struct nf_conn_synproxy): cookie ISN, timestamp and its offset. */
export interface SynproxyState {
  isn: number;
  its: number;
  tsoff: number;
}

export interface ConntrackCounters {
  origPackets: number;
  origBytes: number;
  replyPackets: number;
  replyBytes: number;
}

/** One conntrack entry as a dump or an event shows it. */
export interface ConntrackEntry {
  orig: ConntrackTuple;
  reply: ConntrackTuple;
  status: number;
  /** Seconds left; absent in destroy events. */
  timeout: number;
  mark: number;
  tcpState?: number;
  tcpWindow?: TcpWindow;
  id?: number;
  counters?: ConntrackCounters;
  /** CTA_SEQ_ADJ_ORIG / CTA_SEQ_ADJ_REPLY: present when IPS_SEQ_ADJUST is set (an event: when it changed). */
  seqAdj?: { original: SeqAdj; reply: SeqAdj };
  /** CTA_SYNPROXY: present when the entry has the extension (an event: when it changed). */
  synproxy?: SynproxyState;
}

/** A NAT binding of a created entry (one address and port, as min = max). */
export interface NatBinding {
  address: string;
  port: number;
}

/**
 * An entry to create, written as conntrackd does: the reply tuple is the plain
 * inverse of `orig`; the kernel applies `dnat`/`snat`, rewrites the reply tuple and
 * sets DST_NAT/SRC_NAT itself. A reply tuple that already names the server would
 * come out without DST_NAT and not translate (docs/architecture.md, kernel facts).
 */
export interface ConntrackCreate {
  orig: ConntrackTuple;
  /** The server (CTA_NAT_DST). */
  dnat?: NatBinding;
  /** The inside address and port in fullnat (CTA_NAT_SRC). */
  snat?: NatBinding;
  /** Default IPS_SEEN_REPLY | IPS_ASSURED; IPS_CONFIRMED is added (see createStatus). */
  status?: number;
  timeout: number;
  mark: number;
  tcpState?: number;
  tcpWindow?: TcpWindow;
  seqAdj?: { original: SeqAdj; reply: SeqAdj };
  synproxy?: SynproxyState;
}

export type ConntrackEventType = 'new' | 'update' | 'destroy';

function message(type: number, flags: number, seq: number, family: number, fill?: (w: AttributeWriter) => void): Buffer {
  const w = new AttributeWriter(256).raw(nfgenmsg(family));
  fill?.(w);
  const payload = w.toBuffer();
  const buf = Buffer.alloc(NLMSG_HDRLEN + payload.length);
  writeHeader(buf, 0, { length: buf.length, type: ctnlType(type), flags, seq, pid: 0 });
  payload.copy(buf, NLMSG_HDRLEN);
  return buf;
}

export const inverse = (t: ConntrackTuple): ConntrackTuple => ({ src: t.dst, dst: t.src, sport: t.dport, dport: t.sport, proto: t.proto });

const hasPorts = (proto: number): boolean => proto === IPPROTO_TCP || proto === IPPROTO_UDP;

function writeTuple(w: AttributeWriter, type: number, t: ConntrackTuple): void {
  w.nest(type, (w) => {
    w.nest(CTA_TUPLE_IP, (w) => w.bytes(CTA_IP_V4_SRC, ipv4ToBytes(t.src)).bytes(CTA_IP_V4_DST, ipv4ToBytes(t.dst)));
    w.nest(CTA_TUPLE_PROTO, (w) => {
      w.u8(CTA_PROTO_NUM, t.proto);
      if (hasPorts(t.proto)) w.u16be(CTA_PROTO_SRC_PORT, t.sport).u16be(CTA_PROTO_DST_PORT, t.dport);
    });
  });
}

function writeMark(w: AttributeWriter, mark: number, mask: number): void {
  w.u32be(CTA_MARK, mark).u32be(CTA_MARK_MASK, mask);
}

/** A dump of the IPv4 table, or (kernel-side filter) of the entries with mark & mask === mark. */
export function encodeDump(seq: number, filter?: { mark: number; mask?: number }): Buffer {
  return message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, AF_INET, (w) => {
    if (filter) writeMark(w, filter.mark, filter.mask ?? 0xffffffff);
  });
}

/** One entry by its original tuple; the kernel answers IPCTNL_MSG_CT_NEW or ENOENT. */
export function encodeGet(orig: ConntrackTuple, seq: number): Buffer {
  return message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_ACK, seq, AF_INET, (w) => writeTuple(w, CTA_TUPLE_ORIG, orig));
}

/**
 * CTA_STATUS of a create. The kernel (6.x, measured) refuses a create whose status
 * lacks IPS_CONFIRMED with EBUSY, as if it changed an unchangeable bit; conntrack -I
 * sends it too. The NAT bits are ignored: the kernel sets them from CTA_NAT_*.
 */
export const createStatus = (status: number): number => (status | IPS_CONFIRMED) >>> 0;

/** Creates one entry; EEXIST if its tuple is taken. */
export function encodeCreate(entry: ConntrackCreate, seq: number, ack = true): Buffer {
  const flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL | (ack ? NLM_F_ACK : 0);
  return message(IPCTNL_MSG_CT_NEW, flags, seq, AF_INET, (w) => {
    writeTuple(w, CTA_TUPLE_ORIG, entry.orig);
    writeTuple(w, CTA_TUPLE_REPLY, inverse(entry.orig));
    const nat = (type: number, b: NatBinding): void => {
      w.nest(type, (w) => {
        w.bytes(CTA_NAT_V4_MINIP, ipv4ToBytes(b.address)).bytes(CTA_NAT_V4_MAXIP, ipv4ToBytes(b.address));
        if (hasPorts(entry.orig.proto)) w.nest(CTA_NAT_PROTO, (w) => w.u16be(CTA_PROTONAT_PORT_MIN, b.port).u16be(CTA_PROTONAT_PORT_MAX, b.port));
      });
    };
    if (entry.dnat) nat(CTA_NAT_DST, entry.dnat);
    if (entry.snat) nat(CTA_NAT_SRC, entry.snat);
    w.u32be(CTA_STATUS, createStatus(entry.status ?? IPS_SEEN_REPLY | IPS_ASSURED));
    w.u32be(CTA_TIMEOUT, entry.timeout);
    w.u32be(CTA_MARK, entry.mark);
    if (entry.orig.proto === IPPROTO_TCP && entry.tcpState !== undefined) {
      const tcpState = entry.tcpState;
      w.nest(CTA_PROTOINFO, (w) =>
        w.nest(CTA_PROTOINFO_TCP, (w) => {
          w.u8(CTA_PROTOINFO_TCP_STATE, tcpState);
          const win = entry.tcpWindow;
          if (win) {
            // The kernel applies flags & mask: a mask of all ones writes the flags as given.
            w.u8(CTA_PROTOINFO_TCP_WSCALE_ORIGINAL, win.wscaleOriginal).u8(CTA_PROTOINFO_TCP_WSCALE_REPLY, win.wscaleReply);
            w.bytes(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, Buffer.from([win.flagsOriginal, 0xff]));
            w.bytes(CTA_PROTOINFO_TCP_FLAGS_REPLY, Buffer.from([win.flagsReply, 0xff]));
          }
        }),
      );
    }
    // ctnetlink gives every entry it creates the seqadj and synproxy extensions; these set their values.
    const seqAdj = (type: number, v: SeqAdj): void =>
      void w.nest(type, (w) => w.u32be(CTA_SEQADJ_CORRECTION_POS, v.correctionPos).u32be(CTA_SEQADJ_OFFSET_BEFORE, v.offsetBefore).u32be(CTA_SEQADJ_OFFSET_AFTER, v.offsetAfter));
    if (entry.seqAdj) {
      seqAdj(CTA_SEQ_ADJ_ORIG, entry.seqAdj.original);
      seqAdj(CTA_SEQ_ADJ_REPLY, entry.seqAdj.reply);
    }
    const sp = entry.synproxy;
    if (sp) w.nest(CTA_SYNPROXY, (w) => w.u32be(CTA_SYNPROXY_ISN, sp.isn).u32be(CTA_SYNPROXY_ITS, sp.its).u32be(CTA_SYNPROXY_TSOFF, sp.tsoff));
  });
}

/** Deletes one entry by its original tuple; ENOENT if there is none. */
export function encodeDelete(orig: ConntrackTuple, seq: number): Buffer {
  return message(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, AF_INET, (w) => writeTuple(w, CTA_TUPLE_ORIG, orig));
}

/**
 * Deletes, in one message and inside the kernel, every entry whose mark & mask === mark
 * (a DELETE without a tuple is a flush; the mark filters it). Other marks stay.
 */
export function encodeDeleteByMark(mark: number, seq: number, mask = 0xffffffff, status?: StatusFilter): Buffer {
  return message(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, AF_UNSPEC, (w) => {
    writeMark(w, mark, mask);
    // The kernel's filter (5.19+): status & mask === value. A mask of 0 is refused (EINVAL).
    if (status) w.u32be(CTA_STATUS, status.value >>> 0).u32be(CTA_STATUS_MASK, status.mask >>> 0);
  });
}

/** Entries whose IPS_* status bits under `mask` are `value`. */
export interface StatusFilter {
  value: number;
  mask: number;
}

/** Deletes every entry of every family in the namespace. */
export function encodeFlush(seq: number): Buffer {
  return message(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, seq, AF_UNSPEC);
}

/** The namespace's entry count; answered by one IPCTNL_MSG_CT_GET_STATS message. */
export function encodeGetStats(seq: number): Buffer {
  return message(IPCTNL_MSG_CT_GET_STATS, NLM_F_REQUEST | NLM_F_ACK, seq, AF_UNSPEC);
}

/** Per-CPU counters (a dump: one IPCTNL_MSG_CT_GET_STATS_CPU message per CPU). */
export function encodeGetStatsCpu(seq: number): Buffer {
  return message(IPCTNL_MSG_CT_GET_STATS_CPU, NLM_F_REQUEST | NLM_F_DUMP, seq, AF_UNSPEC);
}

// ---- decoding ----

function attrs(buf: Buffer, where: string): Map<number, Buffer> {
  const map = new Map<number, Buffer>();
  for (const a of parseAttributes(buf)) map.set(a.type, a.value);
  if (map.size === 0 && buf.length > 0) throw new NetlinkParseError(`${where}: no attributes`, 0);
  return map;
}

function fixed(value: Buffer | undefined, length: number, name: string): Buffer {
  if (!value) throw new NetlinkParseError(`${name} is missing`, 0);
  if (value.length < length) throw new NetlinkParseError(`${name} is ${value.length} bytes, expected ${length}`, 0);
  return value;
}

const u32 = (v: Buffer | undefined, name: string): number => fixed(v, 4, name).readUInt32BE(0);
const u16 = (v: Buffer | undefined, name: string): number => fixed(v, 2, name).readUInt16BE(0);
const u8 = (v: Buffer | undefined, name: string): number => fixed(v, 1, name)[0]!;
const u64 = (v: Buffer | undefined, name: string): number => Number(fixed(v, 8, name).readBigUInt64BE(0));

function decodeTuple(value: Buffer, name: string): ConntrackTuple {
  const tuple = attrs(value, name);
  const ip = attrs(fixed(tuple.get(CTA_TUPLE_IP), 0, `${name}.CTA_TUPLE_IP`), `${name}.CTA_TUPLE_IP`);
  const l4 = attrs(fixed(tuple.get(CTA_TUPLE_PROTO), 0, `${name}.CTA_TUPLE_PROTO`), `${name}.CTA_TUPLE_PROTO`);
  const proto = u8(l4.get(CTA_PROTO_NUM), `${name}.CTA_PROTO_NUM`);
  const ports = hasPorts(proto);
  return {
    src: bytesToIpv4(fixed(ip.get(CTA_IP_V4_SRC), 4, `${name}.CTA_IP_V4_SRC`)),
    dst: bytesToIpv4(fixed(ip.get(CTA_IP_V4_DST), 4, `${name}.CTA_IP_V4_DST`)),
    sport: ports ? u16(l4.get(CTA_PROTO_SRC_PORT), `${name}.CTA_PROTO_SRC_PORT`) : 0,
    dport: ports ? u16(l4.get(CTA_PROTO_DST_PORT), `${name}.CTA_PROTO_DST_PORT`) : 0,
    proto,
  };
}

function decodeCounters(value: Buffer | undefined, name: string): [number, number] {
  const c = attrs(fixed(value, 0, name), name);
  return [u64(c.get(CTA_COUNTERS_PACKETS), `${name}.CTA_COUNTERS_PACKETS`), u64(c.get(CTA_COUNTERS_BYTES), `${name}.CTA_COUNTERS_BYTES`)];
}

function decodeSeqAdj(value: Buffer | undefined, name: string): SeqAdj {
  const s = attrs(fixed(value, 0, name), name);
  return {
    correctionPos: u32(s.get(CTA_SEQADJ_CORRECTION_POS), `${name}.CTA_SEQADJ_CORRECTION_POS`),
    offsetBefore: u32(s.get(CTA_SEQADJ_OFFSET_BEFORE), `${name}.CTA_SEQADJ_OFFSET_BEFORE`),
    offsetAfter: u32(s.get(CTA_SEQADJ_OFFSET_AFTER), `${name}.CTA_SEQADJ_OFFSET_AFTER`),
  };
}

/** True for a ctnetlink message that carries an entry (dump answer or event). */
export function isEntryMessage(msg: NetlinkMessage): boolean {
  return msg.type === ctnlType(IPCTNL_MSG_CT_NEW) || msg.type === ctnlType(IPCTNL_MSG_CT_DELETE);
}

/**
 * Decodes an entry of a dump or an event. Undefined for a family other than IPv4;
 * anything malformed throws NetlinkParseError (and nothing else).
 */
export function decodeEntry(msg: NetlinkMessage): ConntrackEntry | undefined {
  if (!isEntryMessage(msg)) throw new NetlinkParseError(`not a ctnetlink entry message (type ${msg.type})`, 4);
  if (msg.payload.length < NFGENMSG_LEN) throw new NetlinkParseError('nfgenmsg is truncated', NLMSG_HDRLEN);
  if (msg.payload[0] !== AF_INET) return undefined;
  const a = attrs(msg.payload.subarray(NFGENMSG_LEN), 'entry');
  const entry: ConntrackEntry = {
    orig: decodeTuple(fixed(a.get(CTA_TUPLE_ORIG), 0, 'CTA_TUPLE_ORIG'), 'CTA_TUPLE_ORIG'),
    reply: decodeTuple(fixed(a.get(CTA_TUPLE_REPLY), 0, 'CTA_TUPLE_REPLY'), 'CTA_TUPLE_REPLY'),
    status: a.has(CTA_STATUS) ? u32(a.get(CTA_STATUS), 'CTA_STATUS') : 0,
    timeout: a.has(CTA_TIMEOUT) ? u32(a.get(CTA_TIMEOUT), 'CTA_TIMEOUT') : 0,
    mark: a.has(CTA_MARK) ? u32(a.get(CTA_MARK), 'CTA_MARK') : 0,
  };
  if (a.has(CTA_ID)) entry.id = u32(a.get(CTA_ID), 'CTA_ID');
  const protoinfo = a.get(CTA_PROTOINFO);
  if (protoinfo) {
    const tcpNest = attrs(protoinfo, 'CTA_PROTOINFO').get(CTA_PROTOINFO_TCP);
    if (tcpNest) {
      const tcp = attrs(tcpNest, 'CTA_PROTOINFO_TCP');
      entry.tcpState = u8(tcp.get(CTA_PROTOINFO_TCP_STATE), 'CTA_PROTOINFO_TCP_STATE');
      // Destroy events carry only the state.
      if (tcp.has(CTA_PROTOINFO_TCP_WSCALE_ORIGINAL)) {
        entry.tcpWindow = {
          wscaleOriginal: u8(tcp.get(CTA_PROTOINFO_TCP_WSCALE_ORIGINAL), 'CTA_PROTOINFO_TCP_WSCALE_ORIGINAL'),
          wscaleReply: u8(tcp.get(CTA_PROTOINFO_TCP_WSCALE_REPLY), 'CTA_PROTOINFO_TCP_WSCALE_REPLY'),
          flagsOriginal: u8(tcp.get(CTA_PROTOINFO_TCP_FLAGS_ORIGINAL), 'CTA_PROTOINFO_TCP_FLAGS_ORIGINAL'),
          flagsReply: u8(tcp.get(CTA_PROTOINFO_TCP_FLAGS_REPLY), 'CTA_PROTOINFO_TCP_FLAGS_REPLY'),
        };
      }
    }
  }
  if (a.has(CTA_SEQ_ADJ_ORIG) && a.has(CTA_SEQ_ADJ_REPLY)) {
    entry.seqAdj = { original: decodeSeqAdj(a.get(CTA_SEQ_ADJ_ORIG), 'CTA_SEQ_ADJ_ORIG'), reply: decodeSeqAdj(a.get(CTA_SEQ_ADJ_REPLY), 'CTA_SEQ_ADJ_REPLY') };
  }
  if (a.has(CTA_SYNPROXY)) {
    const sp = attrs(fixed(a.get(CTA_SYNPROXY), 0, 'CTA_SYNPROXY'), 'CTA_SYNPROXY');
    entry.synproxy = {
      isn: u32(sp.get(CTA_SYNPROXY_ISN), 'CTA_SYNPROXY_ISN'),
      its: u32(sp.get(CTA_SYNPROXY_ITS), 'CTA_SYNPROXY_ITS'),
      tsoff: u32(sp.get(CTA_SYNPROXY_TSOFF), 'CTA_SYNPROXY_TSOFF'),
    };
  }
  if (a.has(CTA_COUNTERS_ORIG) && a.has(CTA_COUNTERS_REPLY)) {
    const [origPackets, origBytes] = decodeCounters(a.get(CTA_COUNTERS_ORIG), 'CTA_COUNTERS_ORIG');
    const [replyPackets, replyBytes] = decodeCounters(a.get(CTA_COUNTERS_REPLY), 'CTA_COUNTERS_REPLY');
    entry.counters = { origPackets, origBytes, replyPackets, replyBytes };
  }
  return entry;
}

/** The kind of an event message: NEW with NLM_F_CREATE is a new entry, without it an update. */
export function eventType(msg: NetlinkMessage): ConntrackEventType {
  if (msg.type === ctnlType(IPCTNL_MSG_CT_DELETE)) return 'destroy';
  return msg.flags & NLM_F_CREATE ? 'new' : 'update';
}

/** CTA_STATS_GLOBAL_ENTRIES of an IPCTNL_MSG_CT_GET_STATS answer. */
export function decodeStatsEntries(msg: NetlinkMessage): number {
  if (msg.payload.length < NFGENMSG_LEN) throw new NetlinkParseError('nfgenmsg is truncated', NLMSG_HDRLEN);
  return u32(attrs(msg.payload.subarray(NFGENMSG_LEN), 'stats').get(CTA_STATS_GLOBAL_ENTRIES), 'CTA_STATS_GLOBAL_ENTRIES');
}

/** CTA_STATS_GLOBAL_ENTRIES and CTA_STATS_GLOBAL_MAX_ENTRIES (nf_conntrack_max) of an IPCTNL_MSG_CT_GET_STATS answer. */
export function decodeStatsGlobal(msg: NetlinkMessage): { entries: number; max: number } {
  if (msg.payload.length < NFGENMSG_LEN) throw new NetlinkParseError('nfgenmsg is truncated', NLMSG_HDRLEN);
  const a = attrs(msg.payload.subarray(NFGENMSG_LEN), 'stats');
  return { entries: u32(a.get(CTA_STATS_GLOBAL_ENTRIES), 'CTA_STATS_GLOBAL_ENTRIES'), max: u32(a.get(CTA_STATS_GLOBAL_MAX_ENTRIES), 'CTA_STATS_GLOBAL_MAX_ENTRIES') };
}

/**
 * One CPU's counters of a IPCTNL_MSG_CT_GET_STATS_CPU answer: `drop` counts packets refused
 * a new entry because the table was full (nothing could be evicted), `earlyDrop` entries
 * evicted to make room (never ASSURED ones), `insertFailed` entries that lost a race to be
 * inserted. Absent attributes read 0.
 */
export function decodeStatsCpu(msg: NetlinkMessage): { drop: number; earlyDrop: number; insertFailed: number } {
  if (msg.payload.length < NFGENMSG_LEN) throw new NetlinkParseError('nfgenmsg is truncated', NLMSG_HDRLEN);
  const a = attrs(msg.payload.subarray(NFGENMSG_LEN), 'stats_cpu');
  const opt = (type: number, name: string) => (a.has(type) ? u32(a.get(type), name) : 0);
  return { drop: opt(CTA_STATS_DROP, 'CTA_STATS_DROP'), earlyDrop: opt(CTA_STATS_EARLY_DROP, 'CTA_STATS_EARLY_DROP'), insertFailed: opt(CTA_STATS_INSERT_FAILED, 'CTA_STATS_INSERT_FAILED') };
}

/** Status bits by conntrack's names, for logs and the console: "SEEN_REPLY|ASSURED|...". */
export function statusNames(status: number): string {
  const names = ['EXPECTED', 'SEEN_REPLY', 'ASSURED', 'CONFIRMED', 'SRC_NAT', 'DST_NAT', 'SEQ_ADJUST', 'SRC_NAT_DONE',
    'DST_NAT_DONE', 'DYING', 'FIXED_TIMEOUT', 'TEMPLATE', 'NAT_CLASH', 'HELPER', 'OFFLOAD', 'HW_OFFLOAD'];
  return names.filter((_, bit) => status & (1 << bit)).join('|');
}
