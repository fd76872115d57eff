/**
 * nfnetlink_queue (linux/netfilter/nfnetlink_queue.h) as pure encode/decode pairs on Buffers:
 * configuration (bind a queue, copy mode, length, flags), queued packets, verdicts.
 * Every message is an nlmsghdr with type NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_*, then the
 * nfgenmsg (family, version, res_id = queue number, big-endian), then attributes whose
 * values are big-endian.
 */
import {
  AttributeWriter,
  NLMSG_HDRLEN,
  NLM_F_ACK,
  NLM_F_REQUEST,
  NetlinkParseError,
  attributeMap,
  encodeMessage,
  nfgenmsg,
  type NetlinkMessage,
  NFGENMSG_LEN,
  AF_UNSPEC,
} from './message.js';
export { NFNETLINK_V0, NFGENMSG_LEN, AF_UNSPEC, AF_INET } from './message.js';

export const NFNL_SUBSYS_QUEUE = 3;

// enum nfqnl_msg_types
export const NFQNL_MSG_PACKET = 0;
export const NFQNL_MSG_VERDICT = 1;
export const NFQNL_MSG_CONFIG = 2;
export const NFQNL_MSG_VERDICT_BATCH = 3;

// enum nfqnl_attr_type
export const NFQA_PACKET_HDR = 1;
export const NFQA_VERDICT_HDR = 2;
export const NFQA_MARK = 3;
export const NFQA_TIMESTAMP = 4;
export const NFQA_IFINDEX_INDEV = 5;
export const NFQA_IFINDEX_OUTDEV = 6;
export const NFQA_HWADDR = 9;
export const NFQA_PAYLOAD = 10;
export const NFQA_CAP_LEN = 13;
export const NFQA_SKB_INFO = 14;

// enum nfqnl_msg_config_cmds
export const NFQNL_CFG_CMD_NONE = 0;
export const NFQNL_CFG_CMD_BIND = 1;
export const NFQNL_CFG_CMD_UNBIND = 2;
export const NFQNL_CFG_CMD_PF_BIND = 3;
export const NFQNL_CFG_CMD_PF_UNBIND = 4;

// enum nfqnl_config_mode
export const NFQNL_COPY_NONE = 0;
export const NFQNL_COPY_META = 1;
export const NFQNL_COPY_PACKET = 2;

// enum nfqnl_attr_config
export const NFQA_CFG_CMD = 1;
export const NFQA_CFG_PARAMS = 2;
export const NFQA_CFG_QUEUE_MAXLEN = 3;
export const NFQA_CFG_MASK = 4;
export const NFQA_CFG_FLAGS = 5;

export const NFQA_CFG_F_FAIL_OPEN = 1 << 0;
export const NFQA_CFG_F_CONNTRACK = 1 << 1;
export const NFQA_CFG_F_GSO = 1 << 2;

// Netfilter verdicts (linux/netfilter.h).
export const NF_DROP = 0;
export const NF_ACCEPT = 1;

/** struct nfqnl_msg_packet_hdr is packed: be32 id, be16 hw_protocol, u8 hook. */
const PACKET_HDR_LEN = 7;
/** struct nfqnl_msg_config_params is packed: be32 copy_range, u8 copy_mode. */
const CONFIG_PARAMS_LEN = 5;

export const queueMessageType = (msg: number): number => (NFNL_SUBSYS_QUEUE << 8) | msg;

function message(msg: number, flags: number, seq: number, family: number, queue: number, attrs: AttributeWriter): Buffer {
  const body = attrs.toBuffer();
  return encodeMessage(queueMessageType(msg), flags, seq, Buffer.concat([nfgenmsg(family, queue), body]));
}

export class QueueParseError extends NetlinkParseError {}

/** The nfgenmsg of a queue message, or a parse error. */
function header(msg: NetlinkMessage, expected: number): { family: number; queue: number; attrs: Map<number, Buffer> } {
  if (msg.type !== queueMessageType(expected)) {
    throw new QueueParseError(`message type 0x${msg.type.toString(16)} is not NFQNL message ${expected}`, 4);
  }
  if (msg.payload.length < NFGENMSG_LEN) throw new QueueParseError(`nfgenmsg of ${msg.payload.length} bytes`, NLMSG_HDRLEN);
  return {
    family: msg.payload.readUInt8(0),
    queue: msg.payload.readUInt16BE(2),
    attrs: attributeMap(msg.payload.subarray(NFGENMSG_LEN)),
  };
}

// ---- configuration ----

export interface QueueConfig {
  queue: number;
  /** NFQA_CFG_CMD: command and protocol family. */
  command?: { command: number; pf: number };
  /** NFQA_CFG_PARAMS. */
  params?: { copyMode: number; copyRange: number };
  /** NFQA_CFG_QUEUE_MAXLEN: packets the kernel keeps waiting for a verdict. */
  maxLength?: number;
  /** NFQA_CFG_MASK / NFQA_CFG_FLAGS: which flags to change, and their values. */
  flags?: { mask: number; value: number };
}

/** An NFQNL_MSG_CONFIG request (acked). */
export function encodeConfig(c: QueueConfig, seq: number): Buffer {
  const w = new AttributeWriter(64);
  if (c.command) {
    const cmd = Buffer.alloc(4);
    cmd.writeUInt8(c.command.command, 0);
    cmd.writeUInt16BE(c.command.pf, 2);
    w.bytes(NFQA_CFG_CMD, cmd);
  }
  if (c.params) {
    const p = Buffer.alloc(CONFIG_PARAMS_LEN);
    p.writeUInt32BE(c.params.copyRange >>> 0, 0);
    p.writeUInt8(c.params.copyMode, 4);
    w.bytes(NFQA_CFG_PARAMS, p);
  }
  if (c.maxLength !== undefined) w.u32be(NFQA_CFG_QUEUE_MAXLEN, c.maxLength);
  if (c.flags) w.u32be(NFQA_CFG_MASK, c.flags.mask).u32be(NFQA_CFG_FLAGS, c.flags.value);
  return message(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, AF_UNSPEC, c.queue, w);
}

export function decodeConfig(msg: NetlinkMessage): QueueConfig {
  const { queue, attrs } = header(msg, NFQNL_MSG_CONFIG);
  const out: QueueConfig = { queue };
  const cmd = attrs.get(NFQA_CFG_CMD);
  if (cmd) {
    if (cmd.length < 4) throw new QueueParseError('NFQA_CFG_CMD too short', 0);
    out.command = { command: cmd.readUInt8(0), pf: cmd.readUInt16BE(2) };
  }
  const params = attrs.get(NFQA_CFG_PARAMS);
  if (params) {
    if (params.length < CONFIG_PARAMS_LEN) throw new QueueParseError('NFQA_CFG_PARAMS too short', 0);
    out.params = { copyRange: params.readUInt32BE(0), copyMode: params.readUInt8(4) };
  }
  const maxLength = attrs.get(NFQA_CFG_QUEUE_MAXLEN);
  if (maxLength) out.maxLength = be32(maxLength, 'NFQA_CFG_QUEUE_MAXLEN');
  const mask = attrs.get(NFQA_CFG_MASK);
  const flags = attrs.get(NFQA_CFG_FLAGS);
  if (mask && flags) out.flags = { mask: be32(mask, 'NFQA_CFG_MASK'), value: be32(flags, 'NFQA_CFG_FLAGS') };
  return out;
}

function be32(b: Buffer, name: string): number {
  if (b.length < 4) throw new QueueParseError(`${name} of ${b.length} bytes`, 0);
  return b.readUInt32BE(0);
}

// ---- queued packets (kernel → user) ----

export interface QueuedPacket {
  queue: number;
  family: number;
  /** NFQA_PACKET_HDR: the id a verdict names, the ethertype and the netfilter hook. */
  id: number;
  hwProtocol: number;
  hook: number;
  /** NFQA_MARK (skb->mark); the hold carries the VIP id in it. */
  mark?: number;
  indev?: number;
  /** NFQA_PAYLOAD: the first bytes of the packet (none with NFQNL_COPY_META). */
  payload?: Buffer;
  /** NFQA_CAP_LEN: the packet's length when the payload was cut short. */
  capLength?: number;
}

/** An NFQNL_MSG_PACKET as the kernel sends it (for tests and tools; the kernel is the real sender). */
export function encodePacket(p: QueuedPacket): Buffer {
  const w = new AttributeWriter(64 + (p.payload?.length ?? 0));
  const hdr = Buffer.alloc(PACKET_HDR_LEN);
  hdr.writeUInt32BE(p.id >>> 0, 0);
  hdr.writeUInt16BE(p.hwProtocol, 4);
  hdr.writeUInt8(p.hook, 6);
  w.bytes(NFQA_PACKET_HDR, hdr);
  if (p.mark !== undefined) w.u32be(NFQA_MARK, p.mark);
  if (p.indev !== undefined) w.u32be(NFQA_IFINDEX_INDEV, p.indev);
  if (p.capLength !== undefined) w.u32be(NFQA_CAP_LEN, p.capLength);
  if (p.payload) w.bytes(NFQA_PAYLOAD, p.payload);
  return message(NFQNL_MSG_PACKET, 0, 0, p.family, p.queue, w);
}

/** Decodes a queued packet; a message without a usable NFQA_PACKET_HDR throws QueueParseError. */
export function decodePacket(msg: NetlinkMessage): QueuedPacket {
  const { family, queue, attrs } = header(msg, NFQNL_MSG_PACKET);
  const hdr = attrs.get(NFQA_PACKET_HDR);
  if (!hdr || hdr.length < PACKET_HDR_LEN) throw new QueueParseError('queued packet without NFQA_PACKET_HDR', NLMSG_HDRLEN);
  const out: QueuedPacket = { queue, family, id: hdr.readUInt32BE(0), hwProtocol: hdr.readUInt16BE(4), hook: hdr.readUInt8(6) };
  const mark = attrs.get(NFQA_MARK);
  if (mark) out.mark = be32(mark, 'NFQA_MARK');
  const indev = attrs.get(NFQA_IFINDEX_INDEV);
  if (indev) out.indev = be32(indev, 'NFQA_IFINDEX_INDEV');
  const capLength = attrs.get(NFQA_CAP_LEN);
  if (capLength) out.capLength = be32(capLength, 'NFQA_CAP_LEN');
  const payload = attrs.get(NFQA_PAYLOAD);
  if (payload) out.payload = Buffer.from(payload);
  return out;
}

// ---- verdicts (user → kernel) ----

export interface Verdict {
  queue: number;
  id: number;
  verdict: number;
  /** NFQNL_MSG_VERDICT_BATCH: the verdict applies to every packet of the queue with an id ≤ `id`. */
  batch?: boolean;
}

/**
 * A verdict message, not acked (fire and forget; a refusal still comes back as an
 * NLMSG_ERROR carrying `seq`).
 */
export function encodeVerdict(v: Verdict, seq = 0): Buffer {
  const hdr = Buffer.alloc(8);
  hdr.writeUInt32BE(v.verdict >>> 0, 0);
  hdr.writeUInt32BE(v.id >>> 0, 4);
  const w = new AttributeWriter(16).bytes(NFQA_VERDICT_HDR, hdr);
  return message(v.batch ? NFQNL_MSG_VERDICT_BATCH : NFQNL_MSG_VERDICT, NLM_F_REQUEST, seq, AF_UNSPEC, v.queue, w);
}

/** Size of one encoded verdict: nlmsghdr + nfgenmsg + NFQA_VERDICT_HDR. */
export const VERDICT_MESSAGE_LEN = NLMSG_HDRLEN + NFGENMSG_LEN + 4 + 8;

/**
 * Per-id verdicts for many packets in one buffer (one sendmsg), in the order given: the
 * kernel reinjects them in that order.
 */
export function encodeVerdicts(queue: number, ids: readonly number[], verdict: number): Buffer {
  const out = Buffer.alloc(ids.length * VERDICT_MESSAGE_LEN);
  let at = 0;
  for (const id of ids) {
    at += encodeVerdict({ queue, id, verdict }).copy(out, at);
  }
  return out;
}

export function decodeVerdict(msg: NetlinkMessage): Verdict {
  const batch = msg.type === queueMessageType(NFQNL_MSG_VERDICT_BATCH);
  const { queue, attrs } = header(msg, batch ? NFQNL_MSG_VERDICT_BATCH : NFQNL_MSG_VERDICT);
  const hdr = attrs.get(NFQA_VERDICT_HDR);
  if (!hdr || hdr.length < 8) throw new QueueParseError('verdict without NFQA_VERDICT_HDR', NLMSG_HDRLEN);
  return { queue, verdict: hdr.readUInt32BE(0), id: hdr.readUInt32BE(4), ...(batch ? { batch: true } : {}) };
}
