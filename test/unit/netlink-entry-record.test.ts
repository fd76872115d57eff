import { describe, expect, it } from 'vitest';
import {
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPS_ASSURED,
  IPS_SEEN_REPLY,
  IPS_SEQ_ADJUST,
  decodeEntry,
  encodeCreate,
  encodeDelete,
  type ConntrackCreate,
} from '../../src/netlink/ctnetlink.js';
import { CreateEncoder, RecordCollector, encodeDeletes, entryToRecord } from '../../src/netlink/entry-record-ctnetlink.js';
import {
  EXT_SEQADJ,
  EXT_SYNPROXY,
  RECORD_SIZE,
  RECORD_V1_SIZE,
  R_PROTO,
  RecordFormatError,
  RecordStreamReader,
  applyRecordUpdate,
  checkStreamHeader,
  encodeStreamHeader,
  readRecord,
  rec,
  widenV1Records,
  writeRecord,
  type EntryRecord,
} from '../../src/netlink/entry-record.js';
import { NLMSG_DONE, NLM_F_ACK, NetlinkParseError, parseMessages } from '../../src/netlink/message.js';
import { KERNEL_DUMP } from './netlink-samples.js';

const window = { wscaleOriginal: 7, wscaleReply: 6, flagsOriginal: 0x23, flagsReply: 0x21 };
const dnat: EntryRecord = {
  client: { address: '198.51.100.10', port: 40000 },
  vip: { address: '203.0.113.10', port: 80 },
  server: { address: '198.18.0.101', port: 8080 },
  proto: IPPROTO_TCP,
  tcpState: 3,
  tcpWindow: window,
  status: IPS_SEEN_REPLY | IPS_ASSURED,
  timeout: 431999,
  mark: 1,
};
const fullnat: EntryRecord = {
  ...dnat,
  client: { address: '198.51.100.20', port: 50000 },
  vip: { address: '203.0.113.13', port: 7 },
  server: { address: '198.18.0.103', port: 7 },
  inside: { address: '198.18.0.13', port: 29999 },
  mark: 4,
};
const udp: EntryRecord = {
  ...dnat,
  proto: IPPROTO_UDP,
  tcpState: 0,
  tcpWindow: { wscaleOriginal: 0, wscaleReply: 0, flagsOriginal: 0, flagsReply: 0 },
  timeout: 30,
};
/** A record whose server is the VIP itself: no DNAT. */
const plain: EntryRecord = { ...dnat, server: { ...dnat.vip } };
/** A connection SYNPROXY opened: the server's sequence numbers shifted to the cookie's, timestamps by tsoff. */
const synproxied: EntryRecord = {
  ...dnat,
  client: { address: '198.51.100.30', port: 41000 },
  status: IPS_SEEN_REPLY | IPS_ASSURED | IPS_SEQ_ADJUST,
  seqAdj: { original: { correctionPos: 0, offsetBefore: 0, offsetAfter: 0 }, reply: { correctionPos: 0, offsetBefore: 0x9abcdef0, offsetAfter: 0x9abcdef0 } },
  synproxy: { isn: 0x12345678, its: 0x0badf00d, tsoff: 0xfffffff0 },
};
/** Only the synproxy extension (no timestamps, and its offsets not seen yet). */
const synproxyOnly: EntryRecord = { ...fullnat, client: { address: '198.51.100.31', port: 41001 }, synproxy: { isn: 7, its: 0, tsoff: 0 } };

/** The same entry as the generic (object) encoder takes it. */
function asCreate(r: EntryRecord): ConntrackCreate {
  const dnatted = r.server.address !== r.vip.address || r.server.port !== r.vip.port;
  return {
    orig: { src: r.client.address, dst: r.vip.address, sport: r.client.port, dport: r.vip.port, proto: r.proto },
    ...(dnatted ? { dnat: r.server } : {}),
    ...(r.inside ? { snat: r.inside } : {}),
    status: r.status,
    timeout: r.timeout,
    mark: r.mark,
    ...(r.proto === IPPROTO_TCP ? { tcpState: r.tcpState, tcpWindow: r.tcpWindow } : {}),
    ...(r.seqAdj ? { seqAdj: r.seqAdj } : {}),
    ...(r.synproxy ? { synproxy: r.synproxy } : {}),
  };
}

function records(...rs: EntryRecord[]): Buffer {
  const b = Buffer.alloc(rs.length * RECORD_SIZE);
  rs.forEach((r, i) => writeRecord(b, i * RECORD_SIZE, r));
  return b;
}

describe('entry record', () => {
  it('deletes by original tuple: the same bytes as the object encoder gives, record by record, with consecutive sequence numbers', () => {
    const input = [dnat, fullnat, udp, synproxied, synproxyOnly, plain];
    const b = records(...input);
    const one = (r: EntryRecord, seq: number) => encodeDelete({ src: r.client.address, dst: r.vip.address, sport: r.client.port, dport: r.vip.port, proto: r.proto }, seq);
    expect(encodeDeletes(b, 0, input.length, 70, true)).toEqual(Buffer.concat(input.map((r, i) => one(r, 70 + i))));
    expect(encodeDeletes(b, 2, 3, 9, true)).toEqual(Buffer.concat(input.slice(2, 5).map((r, i) => one(r, 9 + i))));
    // Without an ack each, only the last message asks for one; nothing else differs.
    const lastOnly = parseMessages(encodeDeletes(b, 0, input.length, 70, false));
    expect(lastOnly.map((m) => (m.flags & NLM_F_ACK) !== 0)).toEqual([false, false, false, false, false, true]);
    expect(lastOnly.map((m) => m.seq)).toEqual([70, 71, 72, 73, 74, 75]);
    expect(() => encodeDeletes(b, 5, 2, 1, true)).toThrow(RecordFormatError);
    const icmp = Buffer.from(b.subarray(0, RECORD_SIZE));
    icmp[R_PROTO] = 1;
    expect(() => encodeDeletes(icmp, 0, 1, 1, true)).toThrow(/protocol 1/);
  });

  it('is 80 bytes and round-trips every field, extensions included', () => {
    const b = records(dnat, fullnat, udp, synproxied, synproxyOnly);
    expect(RECORD_SIZE).toBe(80);
    expect(b.length).toBe(400);
    expect(readRecord(b, 0)).toEqual(dnat);
    expect(readRecord(b, 80)).toEqual(fullnat);
    expect(readRecord(b, 160)).toEqual(udp);
    expect(readRecord(b, 240)).toEqual(synproxied);
    expect(readRecord(b, 320)).toEqual(synproxyOnly);
    expect(rec.extensions(b, 240)).toBe(EXT_SEQADJ | EXT_SYNPROXY);
    expect(rec.extensions(b, 320)).toBe(EXT_SYNPROXY);
    expect(rec.extensions(b, 0)).toBe(0);
    expect(() => readRecord(b, 360)).toThrow(RecordFormatError);
  });

  it('an all-zero synproxy block is no extension (ctnetlink gives every entry it creates one, zeroed)', () => {
    const b = records({ ...dnat, synproxy: { isn: 0, its: 0, tsoff: 0 } });
    expect(rec.extensions(b)).toBe(0);
    expect(readRecord(b).synproxy).toBeUndefined();
  });

  it('creates carry CTA_SEQ_ADJ_ORIG/REPLY and CTA_SYNPROXY, and a dump of them decodes back to the same record', () => {
    const input = [synproxied, synproxyOnly, dnat];
    const out = new CreateEncoder(4, true).encode(records(...input), 0, input.length, 1);
    const decoded = parseMessages(out).map((m) => decodeEntry(m)!);
    expect(decoded[0]!.seqAdj).toEqual(synproxied.seqAdj);
    expect(decoded[0]!.synproxy).toEqual(synproxied.synproxy);
    expect(decoded[1]!.seqAdj).toBeUndefined();
    expect(decoded[1]!.synproxy).toEqual(synproxyOnly.synproxy);
    expect(decoded[2]!.seqAdj).toBeUndefined();
    expect(decoded[2]!.synproxy).toBeUndefined();
    // The in-place decoder reads the extensions as the object decoder does (a create is a CT_NEW message too).
    const chunks: Buffer[] = [];
    const collector = new RecordCollector(8, (c) => chunks.push(c));
    collector.addDatagram(out);
    collector.flush();
    const back = Buffer.concat(chunks);
    for (let i = 0; i < input.length; i++) {
      expect(rec.seqAdj(back, i * RECORD_SIZE)).toEqual(input[i]!.seqAdj);
      expect(rec.synproxy(back, i * RECORD_SIZE)).toEqual(input[i]!.synproxy);
      expect(entryToRecord(decoded[i]!)!.seqAdj).toEqual(input[i]!.seqAdj);
      expect(entryToRecord(decoded[i]!)!.synproxy).toEqual(input[i]!.synproxy);
    }
  });

  it('fuzz: random extensions round-trip through a create message and both decoders', () => {
    let s = 11;
    const rand = (): number => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296);
    const u32 = (): number => Math.floor(rand() * 4294967296) >>> 0;
    const encoder = new CreateEncoder(16, false);
    for (let round = 0; round < 150; round++) {
      const input: EntryRecord[] = [];
      for (let i = 0; i < 16; i++) {
        const base = [dnat, fullnat, udp, plain][Math.floor(rand() * 4)]!;
        const r: EntryRecord = { ...base, client: { address: `198.51.100.${1 + i}`, port: 1024 + round } };
        if (base.proto === IPPROTO_TCP && rand() < 0.6) r.seqAdj = { original: { correctionPos: u32(), offsetBefore: u32(), offsetAfter: u32() }, reply: { correctionPos: u32(), offsetBefore: u32(), offsetAfter: u32() } };
        if (base.proto === IPPROTO_TCP && rand() < 0.6) r.synproxy = { isn: u32(), its: rand() < 0.3 ? 0 : u32(), tsoff: rand() < 0.3 ? 0 : u32() };
        input.push(r);
      }
      const out = encoder.encode(records(...input), 0, input.length, round * 16);
      const expected = Buffer.concat(input.map((r, i) => encodeCreate(asCreate(r), round * 16 + i, i === input.length - 1)));
      expect(out.equals(expected)).toBe(true);
      const chunks: Buffer[] = [];
      const collector = new RecordCollector(16, (c) => chunks.push(c));
      collector.addDatagram(out);
      collector.flush();
      const back = chunks[0]!;
      for (let i = 0; i < input.length; i++) {
        expect(rec.seqAdj(back, i * RECORD_SIZE)).toEqual(input[i]!.seqAdj);
        expect(rec.synproxy(back, i * RECORD_SIZE)).toEqual(input[i]!.synproxy);
      }
    }
  });

  it('an update applies what it carries: no protocol info keeps the TCP state and window, a missing extension keeps its block', () => {
    const stored = records(synproxied);
    // The event that made the connection ESTABLISHED came first, with CTA_SYNPROXY only...
    const established = records({ ...synproxied, seqAdj: undefined, status: IPS_SEEN_REPLY | IPS_ASSURED });
    const at = Buffer.alloc(RECORD_SIZE);
    applyRecordUpdate(established, 0, at, 0);
    expect(readRecord(at).seqAdj).toBeUndefined();
    // ...then one with CTA_SEQ_ADJ_* and no CTA_PROTOINFO (TCP state 0) nor CTA_SYNPROXY.
    const seqOnly = records({ ...synproxied, tcpState: 0, tcpWindow: { wscaleOriginal: 0, wscaleReply: 0, flagsOriginal: 0, flagsReply: 0 }, synproxy: undefined, timeout: 431000 });
    applyRecordUpdate(seqOnly, 0, at, 0);
    expect(readRecord(at)).toEqual({ ...synproxied, timeout: 431000 });
    // A full update replaces everything it carries, and keeps what it does not.
    const fin = records({ ...synproxied, tcpState: 4, seqAdj: undefined, synproxy: undefined, timeout: 120 });
    applyRecordUpdate(fin, 0, stored, 0);
    expect(readRecord(stored)).toEqual({ ...synproxied, tcpState: 4, timeout: 120 });
  });

  it('template creates are byte for byte what the generic encoder writes', () => {
    for (const ackEach of [true, false]) {
      const input = [dnat, fullnat, udp, plain, synproxied, synproxyOnly];
      const encoder = new CreateEncoder(8, ackEach);
      const out = encoder.encode(records(...input), 0, input.length, 500);
      const expected = Buffer.concat(input.map((r, i) => encodeCreate(asCreate(r), 500 + i, ackEach || i === input.length - 1)));
      expect(out.toString('hex')).toBe(expected.toString('hex'));
    }
  });

  it('acks only the last create of a batch unless asked for every one', () => {
    const msgs = parseMessages(new CreateEncoder(4, false).encode(records(dnat, fullnat, udp), 0, 3, 1));
    expect(msgs.map((m) => (m.flags & NLM_F_ACK) !== 0)).toEqual([false, false, true]);
    expect(msgs.map((m) => m.seq)).toEqual([1, 2, 3]);
  });

  it('encodes a slice of a larger buffer, reusing its own buffer between batches', () => {
    const all = records(dnat, fullnat, udp, plain);
    const encoder = new CreateEncoder(2, true);
    const first = Buffer.from(encoder.encode(all, 0, 2, 10));
    const second = encoder.encode(all, 2, 2, 12);
    expect(parseMessages(first).map((m) => decodeEntry(m)!.mark)).toEqual([1, 4]);
    expect(parseMessages(second).map((m) => decodeEntry(m)!.orig.proto)).toEqual([IPPROTO_UDP, IPPROTO_TCP]);
    expect(() => encoder.encode(all, 0, 3, 1)).toThrow(RangeError);
    expect(() => encoder.encode(all, 3, 2, 1)).toThrow(RecordFormatError);
    const icmp = records({ ...dnat, proto: 1 });
    expect(() => encoder.encode(icmp, 0, 1, 1)).toThrow(/record 0: protocol 1/);
  });

  it('decodes a kernel dump straight into records, in chunks', () => {
    const chunks: Buffer[] = [];
    const collector = new RecordCollector(1, (c) => chunks.push(c));
    collector.addDatagram(KERNEL_DUMP);
    collector.flush();
    expect(collector.records).toBe(2);
    expect(chunks.map((c) => c.length)).toEqual([RECORD_SIZE, RECORD_SIZE]);
    const [fullnatRec, dnatRec] = chunks.map((c) => readRecord(c));
    expect(fullnatRec).toMatchObject({
      client: { address: '198.51.100.20', port: 50000 },
      vip: { address: '203.0.113.13', port: 7 },
      server: { address: '198.18.0.103', port: 7 },
      inside: { address: '198.18.0.13', port: 20000 },
      mark: 4,
      tcpState: 3,
    });
    expect(dnatRec!.inside).toBeUndefined();
    expect(dnatRec!.server).toEqual({ address: '198.18.0.101', port: 80 });
    // The in-place decoder agrees with the object decoder.
    const objects = parseMessages(KERNEL_DUMP).filter((m) => m.type !== NLMSG_DONE).map((m) => entryToRecord(decodeEntry(m)!));
    expect([fullnatRec, dnatRec]).toEqual(objects);
  });

  it('skips entries that are not IPv4 TCP or UDP', () => {
    const icmp = encodeCreate({ orig: { src: '198.51.100.10', dst: '203.0.113.10', sport: 0, dport: 0, proto: 1 }, timeout: 30, mark: 1 }, 1);
    const collector = new RecordCollector(4, () => undefined);
    collector.addDatagram(Buffer.concat([icmp, KERNEL_DUMP]));
    expect([collector.records, collector.skipped]).toEqual([2, 1]);
  });

  it('fuzz: mutated datagrams raise NetlinkParseError or decode, nothing else', () => {
    let s = 7;
    const rand = (): number => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296);
    let refused = 0;
    // A kernel dump, and messages with the extensions' nests (CTA_SEQ_ADJ_*, CTA_SYNPROXY).
    const withExtensions = new CreateEncoder(2, true).encode(records(synproxied, synproxyOnly), 0, 2, 1);
    for (let i = 0; i < 20000; i++) {
      const d = Buffer.from(i % 2 ? withExtensions : KERNEL_DUMP);
      const flips = 1 + Math.floor(rand() * 8);
      for (let f = 0; f < flips; f++) d[Math.floor(rand() * d.length)] = Math.floor(rand() * 256);
      const collector = new RecordCollector(3, (c) => {
        for (let o = 0; o < c.length; o += RECORD_SIZE) readRecord(c, o);
      });
      try {
        collector.addDatagram(rand() < 0.3 ? d.subarray(0, Math.floor(rand() * d.length)) : d);
        collector.flush();
      } catch (e) {
        if (!(e instanceof NetlinkParseError)) throw new Error(`escaped ${String(e)} for ${d.toString('hex')}`);
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(100);
  });
});

describe('record stream', () => {
  it('has a versioned header and survives arbitrary piece boundaries', () => {
    const body = Buffer.concat([encodeStreamHeader(), records(dnat, fullnat, udp)]);
    expect(body.subarray(0, 4).toString()).toBe('VSCT');
    const reader = new RecordStreamReader();
    const out: Buffer[] = [];
    for (let i = 0; i < body.length; i += 7) out.push(Buffer.from(reader.push(body.subarray(i, i + 7))));
    reader.end();
    const all = Buffer.concat(out);
    expect(reader.records).toBe(3);
    expect([0, 1, 2].map((i) => readRecord(all, i * RECORD_SIZE))).toEqual([dnat, fullnat, udp]);
  });

  it('reads a version-1 stream (40-byte records, the previous release) as version 2 without extensions', () => {
    const v1Header = Buffer.from('VSCT\0\x01\0\x28', 'latin1');
    const v2 = records(dnat, fullnat, udp);
    const v1 = Buffer.concat([0, 1, 2].map((i) => v2.subarray(i * RECORD_SIZE, i * RECORD_SIZE + RECORD_V1_SIZE)));
    const body = Buffer.concat([v1Header, v1]);
    const reader = new RecordStreamReader();
    const out: Buffer[] = [];
    for (let i = 0; i < body.length; i += 11) out.push(Buffer.from(reader.push(body.subarray(i, i + 11))));
    reader.end();
    const all = Buffer.concat(out);
    expect(reader.records).toBe(3);
    expect(all.length).toBe(3 * RECORD_SIZE);
    expect([0, 1, 2].map((i) => readRecord(all, i * RECORD_SIZE))).toEqual([dnat, fullnat, udp]);
    expect(widenV1Records(v1).equals(v2)).toBe(true);
  });

  it('refuses another version, a foreign stream and a cut record, saying which', () => {
    const h = encodeStreamHeader();
    expect(h.readUInt16BE(4)).toBe(2);
    h.writeUInt16BE(3, 4);
    expect(() => checkStreamHeader(h)).toThrow(/version 3 with 80-byte records; this build reads version 2 with 80-byte records/);
    const mixed = encodeStreamHeader();
    mixed.writeUInt16BE(40, 6);
    expect(() => checkStreamHeader(mixed)).toThrow(/version 2 with 40-byte records/);
    expect(() => checkStreamHeader(Buffer.from('HTTP/1.1'))).toThrow(/magic/);
    const reader = new RecordStreamReader();
    reader.push(Buffer.concat([encodeStreamHeader(), records(dnat).subarray(0, 30)]));
    expect(() => reader.end()).toThrow(/30 of 80 bytes/);
    expect(() => new RecordStreamReader().end()).toThrow(/before its header/);
  });
});

describe('rec: the record read and written by field name', () => {
  it('every setter is read back by its getter, and touches only its own bytes', () => {
    // The scalar fields; the extensions' blocks have their own test.
    const names = Object.keys(rec).filter((k) => !k.startsWith('set') && !['extensions', 'seqAdj', 'synproxy'].includes(k)) as (keyof typeof rec)[];
    const widths: Record<string, number> = {};
    for (const name of names) {
      const b = Buffer.alloc(RECORD_SIZE);
      const setter = rec[`set${name[0]!.toUpperCase()}${name.slice(1)}` as keyof typeof rec] as (b: Buffer, o: number, v: number) => void;
      // The widest all-ones value the field takes (a wider one is refused or cut).
      const width = [4, 2, 1].find((w) => {
        try {
          b.fill(0);
          setter(b, 0, 2 ** (8 * w) - 1);
          return b.filter((x) => x !== 0).length === w;
        } catch {
          return false;
        }
      })!;
      widths[name] = width;
      expect((rec[name] as (b: Buffer, o: number) => number)(b, 0)).toBe(2 ** (8 * width) - 1);
    }
    // The 17 fields fill version 1's 40 bytes exactly: no overlap, no gap.
    expect(Object.values(widths).reduce((a, w) => a + w, 0)).toBe(RECORD_V1_SIZE);
  });

  it('the extensions sit in bytes 40..79, each block only when its bit is set', () => {
    const b = Buffer.alloc(RECORD_SIZE);
    rec.setSeqAdj(b, 0, synproxied.seqAdj!);
    expect(b.subarray(0, 40).every((x) => x === 0)).toBe(true);
    expect(b.subarray(68).every((x) => x === 0)).toBe(true);
    expect(rec.extensions(b)).toBe(EXT_SEQADJ);
    rec.setSynproxy(b, 0, synproxied.synproxy!);
    expect(rec.extensions(b)).toBe(EXT_SEQADJ | EXT_SYNPROXY);
    expect(rec.seqAdj(b)).toEqual(synproxied.seqAdj);
    expect(rec.synproxy(b)).toEqual(synproxied.synproxy);
    expect(b.subarray(0, 40).every((x) => x === 0)).toBe(true);
    expect(b.subarray(41, 44).every((x) => x === 0)).toBe(true);
  });

  it('readRecord and writeRecord agree with the accessors', () => {
    const b = Buffer.alloc(2 * RECORD_SIZE);
    writeRecord(b, RECORD_SIZE, {
      client: { address: '198.51.100.7', port: 40001 },
      vip: { address: '203.0.113.10', port: 443 },
      server: { address: '198.18.0.21', port: 8443 },
      inside: { address: '198.18.0.1', port: 20001 },
      proto: 6,
      tcpState: 3,
      tcpWindow: { wscaleOriginal: 7, wscaleReply: 9, flagsOriginal: 0x23, flagsReply: 0x22 },
      status: 0x1ba,
      timeout: 431999,
      mark: 42,
    });
    expect(rec.clientPort(b, RECORD_SIZE)).toBe(40001);
    expect(rec.vipAddress(b, RECORD_SIZE)).toBe((203 << 24 >>> 0) + (0 << 16) + (113 << 8) + 10);
    expect(rec.serverPort(b, RECORD_SIZE)).toBe(8443);
    expect(rec.insidePort(b, RECORD_SIZE)).toBe(20001);
    expect(rec.wscaleReply(b, RECORD_SIZE)).toBe(9);
    expect(rec.timeout(b, RECORD_SIZE)).toBe(431999);
    expect(rec.mark(b, RECORD_SIZE)).toBe(42);
    rec.setTimeout(b, RECORD_SIZE, 12);
    expect(readRecord(b, RECORD_SIZE).timeout).toBe(12);
  });
});
