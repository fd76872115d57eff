/**
 * The controller's etcd store and election against real etcd processes on loopback: the
 * journal keeps what the SQLite file keeps, a deposed leader's writes change nothing, a store
 * of a newer vipshift is refused untouched, and etcd losing one member of three changes
 * nothing while losing its quorum leaves no leader and refuses writes with a clear error.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdCluster, EtcdLeadership, EtcdStore } from '../../src/controller/etcd-store.js';
import { NotLeaderError } from '../../src/controller/leadership.js';
import { SqliteStore } from '../../src/controller/sqlite-store.js';
import type { ControllerStore } from '../../src/controller/store.js';
import { startEtcd, type TestEtcd } from './helpers/etcd.js';

const logger = pino({ level: process.env.TEST_LOG ?? 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
let etcd: TestEtcd;
beforeAll(async () => {
  etcd = await startEtcd(3);
}, 30_000);
afterAll(() => etcd?.stop());

async function until(what: string, ok: () => boolean, ms = 20_000): Promise<number> {
  const t0 = performance.now();
  while (!ok()) {
    if (performance.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(20);
  }
  return performance.now() - t0;
}

function controller(name: string, prefix: string) {
  const cluster = new EtcdCluster({ endpoints: etcd.endpoints, prefix, leaseSeconds: 3 });
  const leadership = new EtcdLeadership(cluster, { name, api: `http://${name}` }, logger);
  return { cluster, leadership, store: new EtcdStore(cluster, leadership) };
}

/** The journal's and the inventory's story, told to a store; what it answers afterwards. */
async function story(store: ControllerStore) {
  await store.syncConfiguration([{ name: 'lb1', api: 'http://a', capacity: 1 }, { name: 'lb2', api: 'http://b', capacity: 2 }], [{ name: 'vip1', owner: 'lb1' }, { name: 'vip2', owner: 'lb2' }]);
  await store.begin({ id: 'm1', vip: 'vip1', source: 'lb1', target: 'lb2', reason: 'operator' });
  await store.step('m1', 'prepare');
  const duplicate = await store.begin({ id: 'm2', vip: 'vip1', source: 'lb1', target: 'lb2', reason: 'operator' }).then(() => 'accepted', () => 'refused');
  await store.step('m1', 'move_address');
  await store.step('m1', 'move_entries');
  await store.commit('m1');
  await store.step('m1', 'activate');
  const unfinished = (await store.unfinished()).map((m) => `${m.id} ${m.step} ${m.committed}`);
  await store.end('m1', { state: 'done' });
  await store.begin({ id: 'm3', vip: 'vip2', source: 'lb2', target: 'lb1', reason: 'drain' });
  await store.recovery('m3', 'recover', 'give back');
  await store.end('m3', { state: 'aborted', error: 'interrupted', recovered: true });
  await store.setPinned('vip2', true);
  await store.setMaintenance('lb1', true);
  await store.setSetting('rebalance', 'manual');
  // Configuration again: a known VIP keeps its recorded owner.
  await store.syncConfiguration([{ name: 'lb1', api: 'http://a', capacity: 1 }, { name: 'lb2', api: 'http://b', capacity: 3 }], [{ name: 'vip1', owner: 'lb1' }, { name: 'vip2', owner: 'lb2' }]);
  return {
    duplicate,
    unfinished,
    owners: Object.fromEntries(await store.owners()),
    history: (await store.history()).map((m) => `${m.id} ${m.state} ${m.recovered} ${m.error}`),
    events: (await store.events('m1')).map((e) => `${e.event}${e.step ? ` ${e.step}` : ''}`),
    pinned: (await store.vips()).filter((v) => v.pinned).map((v) => v.name),
    maintenance: (await store.appliances()).filter((a) => a.maintenance).map((a) => `${a.name} ${a.capacity}`),
    capacity: (await store.appliances()).map((a) => a.capacity),
    setting: await store.setting('rebalance'),
    still: await store.unfinished(),
  };
}

describe('the controller on etcd', () => {
  it('keeps the journal, the inventory and the settings as the SQLite file does', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vipshift-store-'));
    const sqlite = new SqliteStore(path.join(dir, 'c.sqlite'));
    const a = controller('a', '/t1/');
    try {
      a.leadership.start();
      await until('a leads', () => a.leadership.leading());
      const [onSqlite, onEtcd] = [await story(sqlite), await story(a.store)];
      expect(onEtcd).toEqual(onSqlite);
      expect(onEtcd.duplicate).toBe('refused');
      expect(onEtcd.owners).toEqual({ vip1: 'lb2', vip2: 'lb2' });
      expect(onEtcd.events).toEqual(['begin', 'step prepare', 'step move_address', 'step move_entries', 'commit move_entries', 'step activate', 'end activate']);
      expect(await a.store.schemaVersion()).toBe(1);
    } finally {
      await a.leadership.stop();
      a.cluster.close();
      await sqlite.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a deposed leader cannot write; a store of a newer vipshift is refused untouched', async () => {
    const a = controller('a', '/t2/');
    const b = controller('b', '/t2/');
    try {
      a.leadership.start();
      await until('a leads', () => a.leadership.leading());
      await a.store.syncConfiguration([{ name: 'lb1', api: 'http://a', capacity: 1 }], [{ name: 'vip1', owner: 'lb1' }]);
      const oldEpoch = a.leadership.epoch()!;
      b.leadership.start();
      await sleep(300);
      expect(b.leadership.leading()).toBe(false);
      expect(b.leadership.leader()?.name).toBe('a');
      // A follower's write is refused before it reaches etcd, naming the leader.
      await expect(b.store.setOwner('vip1', 'lb9')).rejects.toThrow(NotLeaderError);
      await expect(b.store.setOwner('vip1', 'lb9')).rejects.toThrow(/not the leader: a leads/);

      await a.leadership.stop(); // gives its lease back: b is elected at once
      const took = await until('b leads', () => b.leadership.leading());
      expect(b.leadership.epoch()!).toBeGreaterThan(oldEpoch);
      // The fence itself, in etcd: a transaction under the old epoch changes nothing.
      await expect(b.leadership.fenced(oldEpoch, [b.cluster.ns.put('vips/vip1').value('{}')])).rejects.toThrow(NotLeaderError);
      expect((await b.store.owners()).get('vip1')).toBe('lb1');
      await b.store.setOwner('vip1', 'lb1');
      console.log(`handover after the leader gave its lease back: ${took.toFixed(0)} ms`);

      await b.cluster.ns.put('schema').value('99');
      const c = controller('c', '/t2/');
      await expect(c.store.checkSchema()).rejects.toThrow(/schema version 99 is newer than this vipshift knows \(1\): refusing to touch it/);
      expect(await b.cluster.ns.get('schema').string()).toBe('99');
      c.cluster.close();
    } finally {
      await b.leadership.stop();
      a.cluster.close();
      b.cluster.close();
    }
  });

  it('one member of three lost changes nothing; the quorum lost leaves no leader and refuses writes', async () => {
    const a = controller('a', '/t3/');
    try {
      a.leadership.start();
      await until('a leads', () => a.leadership.leading());
      await a.store.syncConfiguration([{ name: 'lb1', api: 'http://a', capacity: 1 }], [{ name: 'vip1', owner: 'lb1' }]);
      const epoch = a.leadership.epoch();
      await etcd.kill(0);
      for (let i = 0; i < 10; i++) {
        await a.store.setSetting('rebalance', i % 2 ? 'auto' : 'manual');
        await sleep(200);
      }
      expect(a.leadership.leading()).toBe(true);
      expect(a.leadership.epoch()).toBe(epoch);
      expect((await a.cluster.health()).map((m) => m.healthy)).toEqual([false, true, true]);

      await etcd.kill(1);
      // It stops leading before etcd could let its 3 s lease expire.
      await until('a steps down', () => !a.leadership.leading(), 8000);
      const steppedAt = performance.now();
      expect(steppedAt).toBeLessThan(a.leadership.renewedAt() + 3000);
      console.log(`stepped down ${(steppedAt - a.leadership.renewedAt()).toFixed(0)} ms after the last renewal (lease 3000 ms)`);
      await expect(a.store.setSetting('rebalance', 'auto')).rejects.toThrow(/no controller leads now .*etcd has no quorum/);
    } finally {
      await a.leadership.stop();
      a.cluster.close();
    }
  });
});
