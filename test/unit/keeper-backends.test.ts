/**
 * Backend changes on a keeper (what the controller's `vipshift backend ...` sends it): the
 * change is written into the keeper's configuration file and bounds the copies it accepts at
 * once; a restarted keeper runs on the file's last copy; refusals change nothing.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClusterCredentials, loadCredentials } from '../../src/api/auth.js';
import { ApiError } from '../../src/api/client.js';
import { KeeperClient } from '../../src/keeper/client.js';
import { KeeperConfigFile, loadKeeperConfig } from '../../src/config/keeper.js';
import { Keeper } from '../../src/keeper/keeper.js';
import { TEST_VIPS, entry, records } from './keeper-helpers.js';

let dir: string;
let file: string;
let keeper: Keeper;
let ctl: KeeperClient;
let lb1: KeeperClient;
const none = Buffer.alloc(0);
const pki = () => join(dir, 'pki');
// A connection of vip1 (port 80) served on 8080: not vip1's as configured (its backend serves port 80).
const mapped = () => records([entry(1, '203.0.113.10', { server: { address: '198.18.0.101', port: 8080 } })]);

async function start(): Promise<void> {
  keeper = await Keeper.start(await loadKeeperConfig(file), {
    credentials: loadCredentials(pki(), 'srv1'),
    logger: pino({ level: 'silent' }),
    metrics: new Registry(),
    configFile: new KeeperConfigFile(file),
  });
  ctl = new KeeperClient(keeper.url, loadCredentials(pki(), 'ctl'));
  lb1 = new KeeperClient(keeper.url, loadCredentials(pki(), 'lb1'));
}

async function stop(): Promise<void> {
  ctl?.close();
  lb1?.close();
  await keeper?.close();
}

const refusal = async (p: Promise<unknown>): Promise<ApiError> => {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(ApiError);
    return e as ApiError;
  }
  throw new Error('expected a refusal');
};

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vipshift-keeper-backends-'));
  createClusterCredentials(pki(), { srv1: 'keeper', lb1: 'appliance', ctl: 'controller', admin: 'admin' });
  file = join(dir, 'srv1.yaml');
  writeFileSync(file, `# srv1's keeper\nkeeper: srv1\napi: { listen: "127.0.0.1:0" }\ndatabase: ${join(dir, 'copies.sqlite')}\naddresses: [198.18.0.101]\n${TEST_VIPS}`);
  await start();
});

afterAll(async () => {
  await stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('backend changes on a keeper', () => {
  it('a backend added through the controller bounds the copies at once, is written to the file and survives a restart', async () => {
    expect(await lb1.push({ upserts: mapped(), deletes: none })).toMatchObject({ upserted: 0, refused: 1 });
    const added = await ctl.changeBackend('vip1', { action: 'add', address: '198.18.0.101', port: 8080, weight: 2 });
    expect(added).toEqual({ vip: 'vip1', backends: [{ address: '198.18.0.101', weight: 1 }, { address: '198.18.0.101', port: 8080, weight: 2 }] });
    expect(await lb1.push({ upserts: mapped(), deletes: none })).toMatchObject({ upserted: 1, refused: 0 });
    const text = readFileSync(file, 'utf8');
    expect(text).toMatch(/^# srv1's keeper\n/);
    expect((await loadKeeperConfig(file)).vips[0]!.backends).toEqual([{ address: '198.18.0.101', weight: 1 }, { address: '198.18.0.101', port: 8080, weight: 2 }]);

    // Restarted (the controller nowhere): it runs on the file's copy.
    await stop();
    await start();
    expect(await lb1.push({ upserts: mapped(), deletes: none })).toMatchObject({ upserted: 1, refused: 0 });
    expect(await ctl.changeBackend('vip1', { action: 'drain', address: '198.18.0.101', port: 8080 })).toMatchObject({ backends: [{ weight: 1 }, { port: 8080, weight: 0 }] });

    // Removed: its copies are refused again (by VIP name or address).
    await ctl.changeBackend('203.0.113.10', { action: 'remove', address: '198.18.0.101', port: 8080 });
    expect(await lb1.push({ upserts: mapped(), deletes: none })).toMatchObject({ upserted: 0, refused: 1 });
    expect((await loadKeeperConfig(file)).vips[0]!.backends).toEqual([{ address: '198.18.0.101', weight: 1 }]);
  });

  it('refuses an unknown VIP, an unknown or duplicate backend, the last backend, and other roles; the file stays as it was', async () => {
    const before = readFileSync(file, 'utf8');
    const unknown = await refusal(ctl.changeBackend('nope', { action: 'drain', address: '198.18.0.101' }));
    expect([unknown.status, unknown.field]).toEqual([404, 'vip']);
    const missing = await refusal(ctl.changeBackend('vip1', { action: 'remove', address: '198.18.0.109' }));
    expect(missing.status).toBe(400);
    expect(missing.message).toContain('VIP vip1 has no backend 198.18.0.109');
    const duplicate = await refusal(ctl.changeBackend('vip1', { action: 'add', address: '198.18.0.101' }));
    expect(duplicate.status).toBe(400);
    expect(duplicate.message).toMatch(new RegExp(`${file.replace(/[.]/g, '\\.')}:\\d+: vips\\[0\\]\\.backends\\[1\\]\\.address: backend 198\\.18\\.0\\.101 already listed`));
    const last = await refusal(ctl.changeBackend('vip1', { action: 'remove', address: '198.18.0.101' }));
    expect(last.status).toBe(400);
    const bad = await refusal(ctl.api.post('/v1/vips/vip1/backends', { action: 'weight', address: '198.18.0.101', weight: 999 }));
    expect([bad.status, bad.field]).toEqual([400, 'weight']);
    const appliance = await refusal(lb1.changeBackend('vip1', { action: 'drain', address: '198.18.0.101' }));
    expect(appliance.status).toBe(403);
    expect(readFileSync(file, 'utf8')).toBe(before);
    expect(await lb1.push({ upserts: records([entry(2)]), deletes: none })).toMatchObject({ upserted: 1, refused: 0 });
  });
});
