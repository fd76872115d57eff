/**
 * The copies batch: what an appliance's replicator sends a keeper in one `POST /v1/copies`.
 * Pure codec and validation; the store (store.ts) applies a decoded batch in one transaction.
 *
 * Why binary and not JSON: the upserts ARE entry records (src/netlink/entry-record.ts), the
 * unit a takeover installs, so the keeper stores and returns them field for field without a
 * translation in between; 1,000 upserts are 80 KB here against ~200 KB of JSON, with no
 * per-entry object to build on the appliance's side. Deletes ride in the same body (not a
 * second JSON request) so one batch is one transaction: refused or applied as a whole.
 *
 * Body, version 2 (big-endian, like the records):
 *   0  4  magic "VSCB"
 *   4  u16 version (2)
 *   6  u16 record size (80, RECORD_SIZE of entry-record.ts: version-2 records)
 *   8  u32 number of upserts U
 *  12  u32 number of deletes D
 *  16  U entry records of 80 bytes
 *  ..  D keys of 16 bytes:
 *        0 u32 VIP address   4 u32 client address   8 u16 VIP port   10 u16 client port
 *       12 u8  protocol     13 3 bytes zero
 * A key is the entry's original tuple: (VIP, VIP port, client, client port, protocol). The body's
 * length must be exactly 16 + 80 U + 16 D. Version 1 is the same with 40-byte version-1 records
 * (the previous release's appliances): read, its records widened to version 2 without extensions. A key may not be both upserted and deleted in one
 * batch (the replicator sends each connection's last event only); upserts apply before deletes.
 */
import {
  IPPROTO_TCP,
  IPPROTO_UDP,
  TCP_CONNTRACK_MAX,
} from '../netlink/ctnetlink.js';
import { EXT_SEQADJ, EXT_SYNPROXY, RECORD_SIZE, RECORD_V1_SIZE, rec, widenV1Records } from '../netlink/entry-record.js';
import { bytesToIpv4, ipv4ToBytes } from '../packet/ipv4.js';

export const BATCH_MAGIC = 'VSCB';
export const BATCH_VERSION = 2;
/** The previous release's batches, with version-1 records: still read. */
export const BATCH_V1_VERSION = 1;
export const BATCH_HEADER_SIZE = 16;
export const KEY_SIZE = 16;
/** Largest batch a keeper takes in one request (8 MB of records): bounds its memory per request. */
export const MAX_BATCH_ITEMS = 100_000;
/** conntrack's own ceiling for a timeout it accepts, in seconds (a u32, kept positive). */
export const MAX_TIMEOUT = 0x7fffffff;
/** RFC 7323 §2.3: a shift count above 14 is treated as 14; the kernel never sends more. */
const MAX_WSCALE = 14;

// Offsets inside a key.
export const K_VIP_ADDR = 0;
export const K_CLIENT_ADDR = 4;
export const K_VIP_PORT = 8;
export const K_CLIENT_PORT = 10;
export const K_PROTO = 12;

/** A malformed batch: `field` says which part is wrong (`upserts[17].tcpState`, `deletes[3]`, `body`). */
export class BatchError extends Error {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(`${field}: ${message}`);
    this.name = 'BatchError';
  }
}

export interface CopyKey {
  vip: string;
  vipPort: number;
  client: string;
  clientPort: number;
  proto: number;
}

export interface CopyBatch {
  /** Entry records back to back (no stream header). */
  upserts: Buffer;
  /** Keys back to back. */
  deletes: Buffer;
}

export function writeKey(b: Buffer, offset: number, k: CopyKey): void {
  b.fill(0, offset, offset + KEY_SIZE);
  ipv4ToBytes(k.vip).copy(b, offset + K_VIP_ADDR);
  ipv4ToBytes(k.client).copy(b, offset + K_CLIENT_ADDR);
  b.writeUInt16BE(k.vipPort, offset + K_VIP_PORT);
  b.writeUInt16BE(k.clientPort, offset + K_CLIENT_PORT);
  b[offset + K_PROTO] = k.proto;
}

export function readKey(b: Buffer, offset: number): CopyKey {
  return {
    vip: bytesToIpv4(b, offset + K_VIP_ADDR),
    vipPort: b.readUInt16BE(offset + K_VIP_PORT),
    client: bytesToIpv4(b, offset + K_CLIENT_ADDR),
    clientPort: b.readUInt16BE(offset + K_CLIENT_PORT),
    proto: b[offset + K_PROTO]!,
  };
}

/** The key of each record: what a replicator sends for destroyed entries. */
export function keysOfRecords(records: Buffer): Buffer {
  const n = records.length / RECORD_SIZE;
  const keys = Buffer.alloc(n * KEY_SIZE);
  for (let i = 0; i < n; i++) {
    const r = i * RECORD_SIZE;
    const k = i * KEY_SIZE;
    keys.writeUInt32BE(rec.vipAddress(records, r), k + K_VIP_ADDR);
    keys.writeUInt32BE(rec.clientAddress(records, r), k + K_CLIENT_ADDR);
    keys.writeUInt16BE(rec.vipPort(records, r), k + K_VIP_PORT);
    keys.writeUInt16BE(rec.clientPort(records, r), k + K_CLIENT_PORT);
    keys[k + K_PROTO] = rec.protocol(records, r);
  }
  return keys;
}

export function encodeBatch(batch: CopyBatch): Buffer {
  if (batch.upserts.length % RECORD_SIZE !== 0) throw new RangeError(`upserts are ${batch.upserts.length} bytes, not a whole number of ${RECORD_SIZE}-byte records`);
  if (batch.deletes.length % KEY_SIZE !== 0) throw new RangeError(`deletes are ${batch.deletes.length} bytes, not a whole number of ${KEY_SIZE}-byte keys`);
  const out = Buffer.allocUnsafe(BATCH_HEADER_SIZE + batch.upserts.length + batch.deletes.length);
  out.write(BATCH_MAGIC, 0, 'latin1');
  out.writeUInt16BE(BATCH_VERSION, 4);
  out.writeUInt16BE(RECORD_SIZE, 6);
  out.writeUInt32BE(batch.upserts.length / RECORD_SIZE, 8);
  out.writeUInt32BE(batch.deletes.length / KEY_SIZE, 12);
  batch.upserts.copy(out, BATCH_HEADER_SIZE);
  batch.deletes.copy(out, BATCH_HEADER_SIZE + batch.upserts.length);
  return out;
}

/** Decodes and validates a whole batch; throws BatchError naming the first wrong field. */
export function decodeBatch(body: Buffer): CopyBatch {
  if (body.length < BATCH_HEADER_SIZE) throw new BatchError('body', `${body.length} bytes, shorter than the ${BATCH_HEADER_SIZE}-byte header`);
  const magic = body.toString('latin1', 0, 4);
  if (magic !== BATCH_MAGIC) throw new BatchError('body.magic', `${JSON.stringify(magic)}, expected "${BATCH_MAGIC}"`);
  const version = body.readUInt16BE(4);
  if (version !== BATCH_VERSION && version !== BATCH_V1_VERSION) throw new BatchError('body.version', `${version}, this keeper reads versions ${BATCH_V1_VERSION} and ${BATCH_VERSION}`);
  const size = version === BATCH_VERSION ? RECORD_SIZE : RECORD_V1_SIZE;
  const recordSize = body.readUInt16BE(6);
  if (recordSize !== size) throw new BatchError('body.recordSize', `${recordSize}, version ${version} has ${size}-byte records`);
  const u = body.readUInt32BE(8);
  const d = body.readUInt32BE(12);
  if (u + d > MAX_BATCH_ITEMS) throw new BatchError('body', `${u} upserts and ${d} deletes exceed ${MAX_BATCH_ITEMS} items per batch`);
  const expected = BATCH_HEADER_SIZE + u * size + d * KEY_SIZE;
  if (body.length !== expected) throw new BatchError('body', `${body.length} bytes, but ${u} upserts and ${d} deletes make ${expected}`);
  const sent = body.subarray(BATCH_HEADER_SIZE, BATCH_HEADER_SIZE + u * size);
  const upserts = size === RECORD_SIZE ? sent : widenV1Records(sent);
  const deletes = body.subarray(BATCH_HEADER_SIZE + u * size);
  validateRecords(upserts, 'upserts');
  validateKeys(deletes, 'deletes');
  if (u > 0 && d > 0) {
    const upserted = new Map<string, number>();
    const ku = keysOfRecords(upserts);
    for (let i = 0; i < u; i++) upserted.set(ku.toString('latin1', i * KEY_SIZE, i * KEY_SIZE + 13), i);
    for (let j = 0; j < d; j++) {
      const i = upserted.get(deletes.toString('latin1', j * KEY_SIZE, j * KEY_SIZE + 13));
      if (i !== undefined) throw new BatchError(`deletes[${j}]`, `also upserted as upserts[${i}] (send each connection's last event only)`);
    }
  }
  return { upserts, deletes };
}

/** Checks every record of `records`; throws BatchError(`${field}[i].name`). */
export function validateRecords(records: Buffer, field: string): void {
  if (records.length % RECORD_SIZE !== 0) throw new BatchError(field, `${records.length} bytes, not a whole number of ${RECORD_SIZE}-byte records`);
  const n = records.length / RECORD_SIZE;
  for (let i = 0; i < n; i++) {
    const r = i * RECORD_SIZE;
    const bad = (name: string, message: string): never => {
      throw new BatchError(`${field}[${i}].${name}`, message);
    };
    const proto = rec.protocol(records, r);
    if (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP) bad('proto', `${proto} is neither TCP (6) nor UDP (17)`);
    if (rec.clientAddress(records, r) === 0) bad('client.address', 'is 0.0.0.0');
    if (rec.vipAddress(records, r) === 0) bad('vip.address', 'is 0.0.0.0');
    if (rec.serverAddress(records, r) === 0) bad('server.address', 'is 0.0.0.0');
    if (rec.clientPort(records, r) === 0) bad('client.port', 'is 0');
    if (rec.vipPort(records, r) === 0) bad('vip.port', 'is 0');
    if (rec.serverPort(records, r) === 0) bad('server.port', 'is 0');
    const inside = rec.insideAddress(records, r) !== 0;
    const insidePort = rec.insidePort(records, r);
    if (inside !== (insidePort !== 0)) bad('inside', inside ? 'has an address but port 0' : `has port ${insidePort} but no address`);
    const state = rec.tcpState(records, r);
    if (proto === IPPROTO_TCP && (state === 0 || state >= TCP_CONNTRACK_MAX)) bad('tcpState', `${state} is not a TCP conntrack state (1..${TCP_CONNTRACK_MAX - 1})`);
    if (proto === IPPROTO_UDP && state !== 0) bad('tcpState', `${state} on a UDP entry (must be 0)`);
    if (rec.wscaleOriginal(records, r) > MAX_WSCALE) bad('tcpWindow.wscaleOriginal', `${rec.wscaleOriginal(records, r)} exceeds ${MAX_WSCALE}`);
    if (rec.wscaleReply(records, r) > MAX_WSCALE) bad('tcpWindow.wscaleReply', `${rec.wscaleReply(records, r)} exceeds ${MAX_WSCALE}`);
    if (rec.timeout(records, r) > MAX_TIMEOUT) bad('timeout', `${rec.timeout(records, r)} s exceeds ${MAX_TIMEOUT}`);
    const ext = rec.extensions(records, r);
    if ((ext & ~(EXT_SEQADJ | EXT_SYNPROXY)) !== 0) bad('extensions', `0x${ext.toString(16)} has bits other than seqadj (${EXT_SEQADJ}) and synproxy (${EXT_SYNPROXY})`);
    if (ext !== 0 && proto !== IPPROTO_TCP) bad('extensions', 'seqadj and synproxy are for TCP entries only');
  }
}

/** Checks every key of `keys`; throws BatchError(`${field}[i].name`). */
export function validateKeys(keys: Buffer, field: string): void {
  if (keys.length % KEY_SIZE !== 0) throw new BatchError(field, `${keys.length} bytes, not a whole number of ${KEY_SIZE}-byte keys`);
  const n = keys.length / KEY_SIZE;
  for (let i = 0; i < n; i++) {
    const k = i * KEY_SIZE;
    const bad = (name: string, message: string): never => {
      throw new BatchError(`${field}[${i}].${name}`, message);
    };
    const proto = keys[k + K_PROTO]!;
    if (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP) bad('proto', `${proto} is neither TCP (6) nor UDP (17)`);
    if (keys.readUInt32BE(k + K_VIP_ADDR) === 0) bad('vip', 'is 0.0.0.0');
    if (keys.readUInt32BE(k + K_CLIENT_ADDR) === 0) bad('client', 'is 0.0.0.0');
    if (keys.readUInt16BE(k + K_VIP_PORT) === 0) bad('vipPort', 'is 0');
    if (keys.readUInt16BE(k + K_CLIENT_PORT) === 0) bad('clientPort', 'is 0');
    if (keys[k + 13] !== 0 || keys[k + 14] !== 0 || keys[k + 15] !== 0) bad('padding', 'bytes 13..15 must be zero');
  }
}
