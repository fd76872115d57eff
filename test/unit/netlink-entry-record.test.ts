import { describe, expect, it } from 'vitest';
import {
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPS_ASSURED,
  IPS_SEEN_REPLY,
  decodeEntry,
  encodeCreate,
  type ConntrackCreate,
} from '../../src/netlink/ctnetlink.js';
import { CreateEncoder, RecordCollector, entryToRecord } from '../../src/netlink/entry-record-ctnetlink.js';
import { RECORD_SIZE, RecordFormatError, RecordStreamReader, checkStreamHeader, encodeStreamHeader, readRecord, rec, writeRecord, type EntryRecord } from '../../src/netlink/entry-record.js';
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
  };
}

function records(...rs: EntryRecord[]): Buffer {
  const b = Buffer.alloc(rs.length * RECORD_SIZE);
  rs.forEach((r, i) => writeRecord(b, i * RECORD_SIZE, r));
  return b;
}

describe('entry record', () => {
  it('is 40 bytes and round-trips every field', () => {
    const b = records(dnat, fullnat, udp);
    expect(b.length).toBe(120);
    expect(readRecord(b, 0)).toEqual(dnat);
    expect(readRecord(b, 40)).toEqual(fullnat);
    expect(readRecord(b, 80)).toEqual(udp);
    expect(() => readRecord(b, 100)).toThrow(RecordFormatError);
  });

  it('template creates are byte for byte what the generic encoder writes', () => {
    for (const ackEach of [true, false]) {
      const input = [dnat, fullnat, udp, plain];
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
    for (let i = 0; i < 20000; i++) {
      const d = Buffer.from(KERNEL_DUMP);
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

  it('refuses another version, a foreign stream and a cut record, saying which', () => {
    const h = encodeStreamHeader();
    h.writeUInt16BE(2, 4);
    expect(() => checkStreamHeader(h)).toThrow(/version 2/);
    expect(() => checkStreamHeader(Buffer.from('HTTP/1.1'))).toThrow(/magic/);
    const reader = new RecordStreamReader();
    reader.push(Buffer.concat([encodeStreamHeader(), records(dnat).subarray(0, 30)]));
    expect(() => reader.end()).toThrow(/30 of 40 bytes/);
    expect(() => new RecordStreamReader().end()).toThrow(/before its header/);
  });
});

describe('rec: the record read and written by field name', () => {
  it('every setter is read back by its getter, and touches only its own bytes', () => {
    const names = Object.keys(rec).filter((k) => !k.startsWith('set')) as (keyof typeof rec)[];
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
    // The 17 fields fill the 40 bytes exactly: no overlap, no gap.
    expect(Object.values(widths).reduce((a, w) => a + w, 0)).toBe(RECORD_SIZE);
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
