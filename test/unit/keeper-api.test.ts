import { Readable } from 'node:stream';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClusterCredentials, loadCredentials } from '../../src/api/auth.js';
import { ApiError } from '../../src/api/client.js';
import { encodeBatch, keysOfRecords } from '../../src/keeper/batch.js';
import { KeeperClient } from '../../src/keeper/client.js';
import { loadKeeperConfig, parseKeeperConfig } from '../../src/config/keeper.js';
import { Keeper } from '../../src/keeper/keeper.js';
import { RECORD_SIZE, readRecord, rec } from '../../src/netlink/entry-record.js';
import { TEST_VIPS, entry, many, records } from './keeper-helpers.js';

const VIPS = TEST_VIPS;

let dir: string;
const metrics = new Registry();
let keeper: Keeper;
let lb1: KeeperClient;
const none = Buffer.alloc(0);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vipshift-keeper-api-'));
  createClusterCredentials(join(dir, 'pki'), { srv1: 'keeper', lb1: 'appliance', stranger: 'monitor' });
  const file = join(dir, 'srv1.yaml');
  writeFileSync(file, `keeper: srv1\napi: { listen: "127.0.0.1:0" }\ndatabase: ${join(dir, 'copies.sqlite')}\naddresses: [198.18.0.101]\n${VIPS}`);
  const config = await loadKeeperConfig(file);
  keeper = await Keeper.start(config, { credentials: loadCredentials(join(dir, 'pki'), 'srv1'), logger: pino({ level: 'silent' }), metrics });
  lb1 = new KeeperClient(keeper.url, loadCredentials(join(dir, 'pki'), 'lb1'));
});

afterAll(async () => {
  lb1?.close();
  await keeper?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('keeper API', () => {
  it('takes batches and gives back the records of a VIP, by name or address', async () => {
    const first = many(2500);
    expect(await lb1.push({ upserts: first, deletes: none })).toEqual({ upserted: 2500, deleted: 0, refused: 0 });
    expect(await lb1.push({ upserts: many(3, '203.0.113.13'), deletes: keysOfRecords(first.subarray(0, 500 * RECORD_SIZE)) })).toEqual({ upserted: 3, deleted: 500, refused: 0 });
    const got = await lb1.copies('vip1');
    expect(got.length).toBe(2000 * RECORD_SIZE);
    const ports = new Set(Array.from({ length: 2000 }, (_, i) => readRecord(got, i * RECORD_SIZE).client.port));
    for (let i = 500; i < 2500; i++) expect(ports.has(1024 + i)).toBe(true);
    expect(readRecord(got)).toMatchObject({ ...entry(0), client: readRecord(got).client, timeout: expect.any(Number) });
    expect((await lb1.copies('203.0.113.10', 'copies')).equals(got)).toBe(true);

    const status = await lb1.status();
    expect(status).toMatchObject({ keeper: 'srv1', schemaVersion: 3, sockdiag: false, copies: 2003 });
    expect(status.vips.map((v) => [v.name, v.copies])).toEqual([
      ['vip1', 2000],
      ['vip4', 3],
    ]);
    expect(status.database.bytes).toBeGreaterThan(0);
  });

  it('refuses a malformed batch naming the field, and keeps what it stored', async () => {
    const before = await lb1.copies('vip1');
    const bad = many(10, '203.0.113.10', 9000);
    rec.setTcpState(bad, 4 * RECORD_SIZE, 42);
    const err = await lb1.push({ upserts: bad, deletes: none }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect(err).toMatchObject({ status: 400, field: 'upserts[4].tcpState' });
    const truncated = encodeBatch({ upserts: many(2), deletes: none }).subarray(0, 60);
    const err2 = await lb1.api.upload('POST', '/v1/copies', Readable.from([truncated])).catch((e: unknown) => e);
    expect(err2).toMatchObject({ status: 400, field: 'body' });
    expect((await lb1.copies('vip1')).length).toBe(before.length);
  });

  it('answers 404 for an unknown VIP name, 409 for a socket-table restore it cannot do', async () => {
    await expect(lb1.copies('vip9')).rejects.toMatchObject({ status: 404, field: 'vip' });
    await expect(lb1.copies('vip1', 'socket-table')).rejects.toMatchObject({ status: 409, field: 'query.source' });
    await expect(lb1.copies('vip1', 'nonsense' as never)).rejects.toMatchObject({ status: 400, field: 'query.source' });
  });

  it('stores copies of its own server\'s connections only: a batch naming another server is refused whole and counted', async () => {
    const before = keeper.store.countOfVip('203.0.113.12');
    const mixed = records([entry(0, '203.0.113.12'), entry(1, '203.0.113.12', { server: { address: '198.18.0.102', port: 80 } })]);
    await expect(lb1.push({ upserts: mixed, deletes: none })).rejects.toMatchObject({ status: 403, field: 'upserts[1].server' });
    expect(keeper.store.countOfVip('203.0.113.12')).toBe(before);
    expect(await metrics.getSingleMetricAsString('vipshift_keeper_foreign_batches_refused_total')).toMatch(/\{peer="lb1"\} 1$/m);
  });

  it('stores copies of its VIPs only, as their configuration allows: forged ones are refused and counted by appliance and reason', async () => {
    const vip1Before = keeper.store.countOfVip('203.0.113.10');
    const batch = records([
      entry(90_000), // a good copy of vip1
      entry(90_001, '203.0.113.12', { mark: 3 }), // a VIP this keeper does not know
      entry(90_002, '203.0.113.10', { vip: { address: '203.0.113.10', port: 22 }, server: { address: '198.18.0.101', port: 22 } }), // a port vip1 does not serve
      entry(90_003, '203.0.113.10', { mark: 4 }), // vip1's address under vip4's mark
      entry(90_004, '203.0.113.13', { inside: { address: '198.18.0.99', port: 20000 } }), // vip4 with another inside address
    ]);
    expect(await lb1.push({ upserts: batch, deletes: none })).toEqual({ upserted: 1, deleted: 0, refused: 4 });
    expect(keeper.store.countOfVip('203.0.113.10')).toBe(vip1Before + 1);
    expect(keeper.store.countOfVip('203.0.113.12')).toBe(0);
    const counted = await metrics.getSingleMetricAsString('vipshift_keeper_copies_refused_total');
    for (const reason of ['mark', 'port', 'address', 'inside']) expect(counted).toMatch(new RegExp(`\\{peer="lb1",reason="${reason}"\\} 1$`, 'm'));
  });

  it('takes copies from appliances only', async () => {
    const monitor = new KeeperClient(keeper.url, loadCredentials(join(dir, 'pki'), 'stranger'));
    await expect(monitor.push({ upserts: many(1, '203.0.113.12'), deletes: none })).rejects.toMatchObject({ status: 403 });
    monitor.close();
  });

  it('refuses a peer outside the cluster', async () => {
    const other = mkdtempSync(join(tmpdir(), 'vipshift-keeper-other-'));
    try {
      createClusterCredentials(other, { lb1: 'appliance', srv1: 'keeper' });
      const impostor = new KeeperClient(keeper.url, loadCredentials(other, 'lb1'), { peer: 'srv1' });
      await expect(impostor.push({ upserts: many(1, '203.0.113.99'), deletes: none })).rejects.toMatchObject({ status: 0 });
      impostor.close();
      expect(keeper.store.countOfVip('203.0.113.99')).toBe(0);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });

  it('deletes the copies of a VIP', async () => {
    expect(await lb1.deleteVip('vip4')).toEqual({ deleted: 3 });
    expect((await lb1.copies('vip4')).length).toBe(0);
  });
});

describe('keeper configuration', () => {
  it('names file, line and field', () => {
    expect(() => parseKeeperConfig('keeper: srv1\napi: { listen: "x" }\ndatabase: /tmp/k.sqlite\nsockdiag: maybe\n', 'srv1.yaml')).toThrow(
      /srv1\.yaml:2: api\.listen: expected "address:port"\nsrv1\.yaml:4: sockdiag: expected true or false/,
    );
  });
});
