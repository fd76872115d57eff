/**
 * nf_tables set-element transactions as pure functions on Buffers: one nfnetlink batch
 * (NFNL_MSG_BATCH_BEGIN ... NFNL_MSG_BATCH_END) of NFT_MSG_NEWSETELEM / NFT_MSG_DELSETELEM
 * messages, which the kernel applies as one transaction, all or nothing.
 * Constants: linux/netfilter/nfnetlink.h and linux/netfilter/nf_tables.h.
 * Attribute values are big-endian unless a field says otherwise (a `mark` is host order).
 */
import { endianness } from 'node:os';
import { AF_UNSPEC, AttributeWriter, align4, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, encodeMessage, nfgenmsg } from './message.js';

// nfnetlink.h
export const NFNL_SUBSYS_NFTABLES = 10;
/** NLMSG_MIN_TYPE and NLMSG_MIN_TYPE + 1: the batch framing messages. */
export const NFNL_MSG_BATCH_BEGIN = 0x10;
export const NFNL_MSG_BATCH_END = 0x11;

// nf_tables.h, enum nf_tables_msg_types
export const NFT_MSG_NEWSETELEM = 12;
export const NFT_MSG_DELSETELEM = 14;

// linux/netfilter.h
export const NFPROTO_IPV4 = 2;

// enum nft_set_elem_list_attributes
export const NFTA_SET_ELEM_LIST_TABLE = 1;
export const NFTA_SET_ELEM_LIST_SET = 2;
export const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
// enum nft_list_attributes
export const NFTA_LIST_ELEM = 1;
// enum nft_set_elem_attributes
export const NFTA_SET_ELEM_KEY = 1;
export const NFTA_SET_ELEM_DATA = 2;
// enum nft_data_attributes
export const NFTA_DATA_VALUE = 1;
export const NFTA_DATA_VERDICT = 2;
// enum nft_verdict_attributes
export const NFTA_VERDICT_CODE = 1;
export const NFTA_VERDICT_CHAIN = 2;
// enum nft_verdicts
export const NFT_JUMP = -3;
export const NFT_GOTO = -4;

/** nfnetlink message type: subsystem in the high byte, the subsystem's message in the low byte. */
export const nftType = (msg: number): number => (NFNL_SUBSYS_NFTABLES << 8) | msg;

/** A verdict as map data: jump or goto a chain. */
export interface Verdict {
  code: typeof NFT_JUMP | typeof NFT_GOTO;
  chain: string;
}

/** One element: its key bytes and, for a map, its data (a value's bytes or a verdict). */
export interface SetElement {
  key: Buffer;
  data?: Buffer | Verdict;
}

export interface SetElementChange {
  verb: 'add' | 'delete';
  table: string;
  set: string;
  elements: SetElement[];
}

/** Field encodings, as nft lays out a concatenation: every field in its own 4-byte register. */
export function ipv4Field(address: string): Buffer {
  const parts = address.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new Error(`'${address}' is not an IPv4 address`);
  return Buffer.from(parts);
}

/** inet_proto: one byte, padded to its register with zeros. */
export function protoField(proto: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt8(proto, 0);
  return b;
}

/** inet_service: two bytes big-endian, padded to its register with zeros (`alone`: not padded, outside a concatenation). */
export function serviceField(port: number, alone = false): Buffer {
  // allocUnsafe takes from Node's pool: a reload encodes ~100,000 of these.
  const b = Buffer.allocUnsafe(alone ? 2 : 4);
  b.writeUInt16BE(port, 0);
  if (!alone) b.writeUInt16BE(0, 2);
  return b;
}

const LITTLE_ENDIAN = endianness() === 'LE';

/** A `mark` value: the kernel compares it with meta mark, a u32 in host byte order. */
export function markValue(mark: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  if (LITTLE_ENDIAN) b.writeUInt32LE(mark >>> 0, 0);
  else b.writeUInt32BE(mark >>> 0, 0);
  return b;
}

function setElementMessage(change: SetElementChange, seq: number): Buffer {
  const w = new AttributeWriter(128 + change.elements.reduce((n, e) => n + elementBytes(e), 0));
  w.raw(nfgenmsg(NFPROTO_IPV4, 0));
  w.string(NFTA_SET_ELEM_LIST_TABLE, change.table);
  w.string(NFTA_SET_ELEM_LIST_SET, change.set);
  w.nest(NFTA_SET_ELEM_LIST_ELEMENTS, (list) => {
    for (const element of change.elements) {
      list.nest(NFTA_LIST_ELEM, (e) => {
        e.nest(NFTA_SET_ELEM_KEY, (k) => k.bytes(NFTA_DATA_VALUE, element.key));
        const data = element.data;
        if (data === undefined) return;
        e.nest(NFTA_SET_ELEM_DATA, (d) => {
          if (Buffer.isBuffer(data)) d.bytes(NFTA_DATA_VALUE, data);
          else d.nest(NFTA_DATA_VERDICT, (v) => v.u32be(NFTA_VERDICT_CODE, data.code).string(NFTA_VERDICT_CHAIN, data.chain));
        });
      });
    }
  });
  // A delete of an element that is not there fails (ENOENT), an add of one that is there
  // with other data fails (EEXIST): a mode change that finds the sets not as it left them
  // should say so rather than paper over it.
  const flags = NLM_F_REQUEST | NLM_F_ACK | (change.verb === 'add' ? NLM_F_CREATE : 0);
  return encodeMessage(nftType(change.verb === 'add' ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM), flags, seq, w.toBuffer());
}

/** An element's bytes in NFTA_SET_ELEM_LIST_ELEMENTS: its NFTA_LIST_ELEM with key and data. */
function elementBytes(e: SetElement): number {
  const data = e.data === undefined ? 0 : Buffer.isBuffer(e.data) ? 8 + align4(e.data.length) : 4 + 4 + 8 + 4 + align4(Buffer.byteLength(e.data.chain) + 1);
  return 4 + 8 + align4(e.key.length) + data;
}

/** An attribute's length is 16 bits: a change whose element list passes this goes in several messages. */
const MAX_LIST_BYTES = 60_000;

/** The changes as messages whose element lists fit an attribute (same verb and set: the same transaction). */
export function splitSetElementChanges(changes: SetElementChange[]): SetElementChange[] {
  return changes.filter((c) => c.elements.length > 0).flatMap(pieces);
}

function pieces(change: SetElementChange): SetElementChange[] {
  const out: SetElementChange[] = [];
  let from = 0;
  let bytes = 0;
  change.elements.forEach((e, i) => {
    const size = elementBytes(e);
    if (bytes + size > MAX_LIST_BYTES && i > from) {
      out.push({ ...change, elements: change.elements.slice(from, i) });
      from = i;
      bytes = 0;
    }
    bytes += size;
  });
  out.push(from === 0 ? change : { ...change, elements: change.elements.slice(from) });
  return out;
}

/**
 * One transaction: BATCH_BEGIN (seq firstSeq), the changes (firstSeq+1 ..), BATCH_END.
 * Begin and end ask for no ack: an ack of them cannot be counted on (6.18 acknowledges an
 * END that asks but never a BEGIN; older kernels neither), and the kernel answers a batch
 * it refuses as a whole (EPERM, ENOMEM) at the BEGIN's seq whether asked or not.
 * Every change message asks for an ack. Empty changes are left out; a change too large for
 * one message is split over several. Returns the buffer and the change messages it holds
 * (sequence numbers firstSeq+1 .. firstSeq+count).
 */
export function encodeSetElementBatch(changes: SetElementChange[], firstSeq: number): { buffer: Buffer; count: number; changes: SetElementChange[] } {
  const sent = splitSetElementChanges(changes);
  const parts = [encodeMessage(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, firstSeq, nfgenmsg(AF_UNSPEC, NFNL_SUBSYS_NFTABLES))];
  sent.forEach((c, i) => parts.push(setElementMessage(c, firstSeq + 1 + i)));
  parts.push(encodeMessage(NFNL_MSG_BATCH_END, NLM_F_REQUEST, firstSeq + 1 + sent.length, nfgenmsg(AF_UNSPEC, NFNL_SUBSYS_NFTABLES)));
  return { buffer: Buffer.concat(parts), count: sent.length, changes: sent };
}
