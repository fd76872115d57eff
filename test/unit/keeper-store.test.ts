import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BatchError, KEY_SIZE, decodeBatch, encodeBatch, keysOfRecords, readKey, writeKey } from '../../src/keeper/batch.js';
import { CopyStore, MIGRATIONS, SCHEMA_VERSION } from '../../src/keeper/store.js';
import { RECORD_SIZE, RECORD_V1_SIZE, readRecord, rec } from '../../src/netlink/entry-record.js';
import { entry, many, records } from './keeper-helpers.js';

const none = Buffer.alloc(0);
let dir: string;
let clock: number;
const now = () => clock;
const open = (file = 'keeper.sqlite') => new CopyStore(join(dir, file), { now });

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vipshift-keeper-'));
  clock = 1_700_000_000_000;
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe('batch codec', () => {
  it('round-trips upserts and deletes', () => {
    const upserts = many(3);
    const deletes = keysOfRecords(many(2, '203.0.113.11'));
    const batch = decodeBatch(encodeBatch({ upserts, deletes }));
    expect(batch.upserts.equals(upserts)).toBe(true);
    expect(batch.deletes.equals(deletes)).toBe(true);
    expect(readKey(batch.deletes, KEY_SIZE)).toEqual({ vip: '203.0.113.11', vipPort: 80, client: '198.51.100.10', clientPort: 1025, proto: 6 });
  });

  it('names the wrong field of a malformed batch', () => {
    const body = encodeBatch({ upserts: many(20), deletes: none });
    rec.setTcpState(body, 16 + 17 * RECORD_SIZE, 12);
    expect(() => decodeBatch(body)).toThrowError(new BatchError('upserts[17].tcpState', '12 is not a TCP conntrack state (1..9)'));
    const udp = encodeBatch({ upserts: many(2), deletes: none });
    rec.setProtocol(udp, 16 + RECORD_SIZE, 1);
    expect(() => decodeBatch(udp)).toThrow(/^upserts\[1\]\.proto: 1 is neither TCP/);
    expect(() => decodeBatch(encodeBatch({ upserts: many(2), deletes: none }).subarray(0, 50))).toThrow(/^body: 50 bytes, but 2 upserts and 0 deletes make 176/);
    const future = encodeBatch({ upserts: many(1), deletes: none });
    future.writeUInt16BE(3, 4);
    expect(() => decodeBatch(future)).toThrowError(new BatchError('body.version', '3, this keeper reads versions 1 and 2'));
    const ext = encodeBatch({ upserts: many(2), deletes: none });
    ext[16 + RECORD_SIZE + 40] = 4;
    expect(() => decodeBatch(ext)).toThrow(/^upserts\[1\]\.extensions: 0x4 has bits other than/);
    const magic = encodeBatch({ upserts: none, deletes: none });
    magic.write('XXXX', 0, 'latin1');
    expect(() => decodeBatch(magic)).toThrow(/^body\.magic/);
    const both = many(3);
    expect(() => decodeBatch(encodeBatch({ upserts: both, deletes: keysOfRecords(both.subarray(2 * RECORD_SIZE)) }))).toThrow(/^deletes\[0\]: also upserted as upserts\[2\]/);
    const key = Buffer.alloc(KEY_SIZE);
    writeKey(key, 0, { vip: '203.0.113.10', vipPort: 80, client: '198.51.100.1', clientPort: 0, proto: 6 });
    expect(() => decodeBatch(encodeBatch({ upserts: none, deletes: key }))).toThrow(/^deletes\[0\]\.clientPort: is 0/);
  });
});

describe('batch versions', () => {
  it('reads a version-1 batch (40-byte records, the previous release) as version-2 records without extensions', () => {
    const v2 = many(3);
    const v1 = Buffer.concat([0, 1, 2].map((i) => v2.subarray(i * RECORD_SIZE, i * RECORD_SIZE + RECORD_V1_SIZE)));
    const keys = keysOfRecords(many(2, '203.0.113.11'));
    const header = Buffer.alloc(16);
    header.write('VSCB', 0, 'latin1');
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(40, 6);
    header.writeUInt32BE(3, 8);
    header.writeUInt32BE(2, 12);
    const batch = decodeBatch(Buffer.concat([header, v1, keys]));
    expect(batch.upserts.equals(v2)).toBe(true);
    expect(batch.deletes.equals(keys)).toBe(true);
    // A version-1 header with version-2 records is refused, naming both.
    header.writeUInt16BE(80, 6);
    expect(() => decodeBatch(Buffer.concat([header, v2, keys]))).toThrowError(new BatchError('body.recordSize', '80, version 1 has 40-byte records'));
  });

  it("stores and restores a connection SYNPROXY opened with its sequence adjustment; a copy without keeps none", () => {
    const s = open('ext.sqlite');
    const synproxied = entry(1, '203.0.113.10', {
      seqAdj: { original: { correctionPos: 0, offsetBefore: 0, offsetAfter: 0 }, reply: { correctionPos: 0, offsetBefore: 0xfedcba98, offsetAfter: 0xfedcba98 } },
      synproxy: { isn: 0x80000001, its: 77, tsoff: 0xffffff00 },
    });
    s.apply({ upserts: records([entry(0), synproxied]), deletes: none }, 'lb1');
    const back = s.recordsOfVip('203.0.113.10');
    const byPort = [0, 1].map((i) => readRecord(back, i * RECORD_SIZE)).sort((a, b) => a.client.port - b.client.port);
    expect(byPort[0]!.seqAdj).toBeUndefined();
    expect(byPort[0]!.synproxy).toBeUndefined();
    expect(byPort[1]).toEqual({ ...synproxied, timeout: 432000 });
    // A later copy of the same connection replaces the extensions with its own.
    s.apply({ upserts: records([{ ...synproxied, seqAdj: undefined }]), deletes: none }, 'lb1');
    const again = s.recordsOfVip('203.0.113.10');
    const r = [0, 1].map((i) => readRecord(again, i * RECORD_SIZE)).find((x) => x.client.port === synproxied.client.port)!;
    expect(r.seqAdj).toBeUndefined();
    expect(r.synproxy).toEqual(synproxied.synproxy);
    s.close();
  });
});

describe('batch fuzz', () => {
  it('random, truncated and bit-flipped bodies decode or are refused with BatchError, nothing else', () => {
    const good = encodeBatch({ upserts: many(5), deletes: keysOfRecords(many(3, '203.0.113.11')) });
    let accepted = 0;
    for (let i = 0; i < 5000; i++) {
      let b: Buffer;
      if (i % 3 === 0) b = randomBytes(Math.floor(Math.random() * 400));
      else if (i % 3 === 1) b = good.subarray(0, Math.floor(Math.random() * good.length));
      else {
        b = Buffer.from(good);
        for (let k = 0; k < 3; k++) b[16 + Math.floor(Math.random() * (b.length - 16))] = Math.floor(Math.random() * 256);
      }
      try {
        const batch = decodeBatch(b);
        expect(batch.upserts.length % RECORD_SIZE).toBe(0);
        accepted++;
      } catch (e) {
        expect(e).toBeInstanceOf(BatchError);
      }
    }
    expect(accepted).toBeGreaterThan(0);
  });
});

describe('CopyStore', () => {
  it('upserts, restores records with the time left, deletes', () => {
    const s = open();
    const input = many(500);
    expect(s.apply({ upserts: input, deletes: none }, 'lb1')).toEqual({ upserted: 500, deleted: 0 });
    s.apply({ upserts: many(7, '203.0.113.11'), deletes: none }, 'lb1');
    clock += 2_000;
    const out = s.recordsOfVip('203.0.113.10');
    expect(out.length).toBe(500 * RECORD_SIZE);
    const got = new Map(Array.from({ length: 500 }, (_, i) => readRecord(out, i * RECORD_SIZE)).map((r) => [r.client.port, r]));
    for (let i = 0; i < 500; i++) expect(got.get(1024 + i)).toEqual(entry(i, '203.0.113.10', { timeout: 432000 - 2 }));

    // An update replaces the fields of the same key.
    s.apply({ upserts: records([entry(5, '203.0.113.10', { tcpState: 5, timeout: 60 })]), deletes: none });
    expect(s.countOfVip('203.0.113.10')).toBe(500);
    const after = s.recordsOfVip('203.0.113.10');
    const five = Array.from({ length: 500 }, (_, i) => readRecord(after, i * RECORD_SIZE)).find((r) => r.client.port === 1029);
    expect(five).toMatchObject({ tcpState: 5, timeout: 60 });

    expect(s.apply({ upserts: none, deletes: keysOfRecords(input.subarray(0, 100 * RECORD_SIZE)) })).toEqual({ upserted: 0, deleted: 100 });
    expect(s.counts().map(({ vip, copies }) => ({ vip, copies }))).toEqual([
      { vip: '203.0.113.10', copies: 400 },
      { vip: '203.0.113.11', copies: 7 },
    ]);
    expect(s.deleteVip('203.0.113.11')).toBe(7);
    expect(s.recordsOfVip('203.0.113.11').length).toBe(0);
    s.close();
  });

  it('expires copies whose timeout ran out, and never restores them', () => {
    const s = open();
    s.apply({ upserts: records([entry(1, undefined, { timeout: 10 }), entry(2, undefined, { timeout: 100 })]), deletes: none });
    clock += 10_000;
    expect(s.recordsOfVip('203.0.113.10').length).toBe(RECORD_SIZE);
    expect(s.expire()).toBe(1);
    clock += 89_000;
    expect(readRecord(s.recordsOfVip('203.0.113.10')).timeout).toBe(1);
    clock += 1_000;
    expect(s.countOfVip('203.0.113.10')).toBe(0);
    expect(s.expire()).toBe(1);
    s.close();
  });

  it('refuses a malformed batch as a whole and loses nothing stored', () => {
    const s = open();
    s.apply({ upserts: many(50), deletes: none });
    const before = s.recordsOfVip('203.0.113.10');
    const bad = many(100, '203.0.113.10', 25); // overlaps the stored 25..49
    rec.setTcpState(bad, 99 * RECORD_SIZE, 0);
    expect(() => s.apply({ upserts: bad, deletes: keysOfRecords(many(10)) })).toThrowError(/^upserts\[99\]\.tcpState/);
    expect(s.recordsOfVip('203.0.113.10').equals(before)).toBe(true);
    const badKey = keysOfRecords(many(3));
    badKey[2 * KEY_SIZE + 14] = 1;
    expect(() => s.apply({ upserts: many(5, '203.0.113.12'), deletes: badKey })).toThrowError(/^deletes\[2\]\.padding/);
    expect(s.countOfVip('203.0.113.12')).toBe(0);
    expect(s.countOfVip('203.0.113.10')).toBe(50);
    s.close();
  });

  it('keeps copies across a reopen', () => {
    const s = open();
    s.apply({ upserts: many(1000), deletes: none });
    s.close();
    const again = open();
    expect(again.countOfVip('203.0.113.10')).toBe(1000);
    expect(again.schemaVersion).toBe(SCHEMA_VERSION);
    again.close();
  });

  it('migrates a version-1 database and keeps its rows', () => {
    const file = join(dir, 'old.sqlite');
    const old = new Database(file);
    old.exec(MIGRATIONS[0]!.sql);
    old.exec('CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1)');
    old
      .prepare('INSERT INTO copies VALUES (?, 80, ?, 40000, 6, ?, 80, 0, 0, 3, 7, 7, 3, 3, 46, 1, ?, ?)')
      .run(0xcb00710a, 0xc6336405, 0xc6120065, clock - 5_000, clock + 60_000);
    old.close();

    const s = new CopyStore(file, { now });
    expect(s.schemaVersion).toBe(3);
    const r = readRecord(s.recordsOfVip('203.0.113.10'));
    expect(r).toMatchObject({ client: { address: '198.51.100.5', port: 40000 }, server: { address: '198.18.0.101', port: 80 }, tcpState: 3, timeout: 60, mark: 1 });
    // Rows from before the extensions read as copies without them.
    expect(r.seqAdj).toBeUndefined();
    expect(r.synproxy).toBeUndefined();
    s.apply({ upserts: many(1), deletes: none }, 'lb2');
    expect(s.countOfVip('203.0.113.10')).toBe(2);
    s.close();
    const raw = new Database(file, { readonly: true });
    expect(raw.prepare("SELECT count(*) FROM sqlite_master WHERE name = 'copies_expiry'").pluck().get()).toBe(1);
    expect(raw.prepare('SELECT appliance FROM copies ORDER BY client_port').pluck().all()).toEqual(['lb2', '']);
    raw.close();
  });

  it('refuses a database newer than itself', () => {
    const file = join(dir, 'new.sqlite');
    const db = new Database(file);
    db.exec(`CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (${SCHEMA_VERSION + 1})`);
    db.close();
    expect(() => new CopyStore(file)).toThrow(/schema version 4 is newer than this keeper's 3/);
  });
});
