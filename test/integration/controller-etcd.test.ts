/**
 * The controller's etcd store and election against real etcd processes on loopback: the
 * journal keeps what the SQLite file keeps, a deposed leader's writes change nothing, a store
 * of a newer vipshift is refused untouched, and etcd losing one member of three changes
 * nothing while losing its quorum leaves no leader and refuses writes with a clear error.
 * On TLS with client certificates (`vipshift pki etcd`'s material), etcd refuses a controller
 * without a certificate of its CA.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import { pino } from 'pino';
import { createEtcdPki, etcdClientFiles } from '../../src/api/etcd-pki.js';
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

function controller(name: string, prefix: string, history?: { keepMigrations: number; keepRevisions: number }) {
  const cluster = new EtcdCluster({ endpoints: etcd.endpoints, prefix, leaseSeconds: 3, history });
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
  await store.commit('m1'); // step 4's record too
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
      expect(onEtcd.events).toEqual(['begin', 'step prepare', 'step move_address', 'step move_entries', 'commit move_entries', 'end activate']);
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

  it('prunes ended migrations beyond the retention with their events, and compacts etcd\'s history', async () => {
    const a = controller('a', '/t5/', { keepMigrations: 3, keepRevisions: 100 });
    try {
      a.leadership.start();
      await until('a leads', () => a.leadership.leading());
      await a.store.syncConfiguration([{ name: 'lb1', api: 'http://a', capacity: 1 }, { name: 'lb2', api: 'http://b', capacity: 1 }], [{ name: 'vip1', owner: 'lb1' }, { name: 'vip2', owner: 'lb1' }]);
      const first = Number((await a.cluster.ns.get('schema').exec()).header.revision);
      // Twelve migrations of vip1 go back and forth and end; one of vip2 is still running.
      for (let i = 0; i < 12; i++) {
        const id = `m${i}`;
        await a.store.begin({ id, vip: 'vip1', source: i % 2 ? 'lb2' : 'lb1', target: i % 2 ? 'lb1' : 'lb2', reason: 'operator' });
        for (const step of ['prepare', 'move_address', 'move_entries'] as const) await a.store.step(id, step);
        await a.store.commit(id);
        await a.store.end(id, { state: 'done' });
      }
      await a.store.begin({ id: 'r1', vip: 'vip2', source: 'lb1', target: 'lb2', reason: 'operator' });
      for (let i = 0; i < 100; i++) await a.store.setSetting('rebalance', i % 2 ? 'auto' : 'manual');
      const keysBefore = (await a.cluster.ns.getAll().keys()).length;

      const pruned = await a.store.prune();
      expect(pruned.migrations).toBe(9);
      expect((await a.store.history()).map((m) => m.id)).toEqual(['r1', 'm11', 'm10', 'm9']);
      expect(await a.store.events('m0')).toEqual([]);
      expect((await a.store.events('m11')).map((e) => e.event)).toEqual(['begin', 'step', 'step', 'step', 'commit', 'end']);
      expect((await a.store.unfinished()).map((m) => m.id)).toEqual(['r1']);
      expect((await a.store.owners()).get('vip1')).toBe('lb1');
      const keysAfter = (await a.cluster.ns.getAll().keys()).length;
      expect(keysBefore - keysAfter).toBe(9 * 7); // each migration: its record and six events
      // History before the compaction point is gone from etcd itself.
      const now = Number((await a.cluster.ns.get('schema').exec()).header.revision);
      expect(pruned.compactedTo).toBe(now - 100);
      expect(pruned.compactedTo!).toBeGreaterThan(first);
      await expect(a.cluster.ns.get('settings/rebalance').revision(first).string()).rejects.toThrow(/compacted/);
      expect(await a.cluster.ns.get('settings/rebalance').string()).toBe('auto');
      // Nothing more to do: a second prune deletes nothing and compacts no further back.
      expect((await a.store.prune()).migrations).toBe(0);
    } finally {
      await a.leadership.stop();
      a.cluster.close();
    }
  });

  it('a campaign won but answered too late to lead on: the controller takes its own key at the next round', async () => {
    const cluster = new EtcdCluster({ endpoints: etcd.endpoints, prefix: '/t5/', leaseSeconds: 3 });
    // The process stalls 3 s while its first campaign is in flight (the clock jumps): etcd
    // made it leader, but by the answer its lease may have lapsed, so it must not act on it.
    let skew = 0;
    const leadership = new EtcdLeadership(cluster, { name: 'a', api: 'http://a' }, logger, () => performance.now() + skew);
    const realIf = cluster.ns.if.bind(cluster.ns);
    let campaigns = 0;
    cluster.ns.if = ((...args: Parameters<typeof realIf>) => {
      const txn = realIf(...args);
      const commit = txn.commit.bind(txn);
      txn.commit = async () => {
        const r = await commit();
        if (campaigns++ === 0) skew += 3000;
        return r;
      };
      return txn;
    }) as typeof cluster.ns.if;
    try {
      leadership.start();
      await until('the first campaign answered', () => campaigns > 0);
      const key = (await cluster.ns.get('leader').exec()).kvs[0];
      expect(JSON.parse(key!.value.toString())).toMatchObject({ name: 'a' });
      // Its own key, under its own live lease: nobody else could lead while it keeps the lease alive.
      const tookMs = await until('a leads on its own key', () => leadership.leading(), 5000);
      expect(leadership.epoch()).toBe(Number(key!.create_revision));
      console.log(`led ${tookMs.toFixed(0)} ms after the late answer, under the key's epoch ${leadership.epoch()}`);
    } finally {
      await leadership.stop();
      cluster.close();
    }
  });

  it('one member of three lost changes nothing; the quorum lost leaves no leader and refuses writes', async () => {
    const a = controller('a', '/t3/');
    try {
      a.leadership.start();
      await until('a leads', () => a.leadership.leading());
      await a.store.syncConfiguration([{ name: 'lb1', api: 'http://a', capacity: 1 }], [{ name: 'vip1', owner: 'lb1' }]);
      const epoch = a.leadership.epoch();
      // A member that is not etcd's raft leader: losing the raft leader costs etcd an election
      // first (1-2 s at its defaults), which a 3 s lease rides out only on a machine that is not
      // loaded (docs/controller.md).
      const members = await a.cluster.health();
      const follower = members.findIndex((m) => m.healthy && !m.leader);
      expect(follower).toBeGreaterThanOrEqual(0);
      await etcd.kill(follower);
      for (let i = 0; i < 10; i++) {
        await a.store.setSetting('rebalance', i % 2 ? 'auto' : 'manual');
        await sleep(200);
      }
      expect(a.leadership.leading()).toBe(true);
      expect(a.leadership.epoch()).toBe(epoch);
      expect((await a.cluster.health()).map((m) => m.healthy)).toEqual(members.map((_, i) => i !== follower));

      await etcd.kill(follower === 0 ? 1 : 0);
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

  it('on TLS, a controller with a client certificate of the CA leads; one without is refused by etcd', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vipshift-etcd-pki-'));
    const other = mkdtempSync(path.join(tmpdir(), 'vipshift-etcd-pki-'));
    const secure = await startEtcd(1, { tls: { dir, clients: ['ctl1'] } });
    const settings = (tls: { ca: string; cert: string; key: string }) => ({ endpoints: secure.endpoints, prefix: '/t4/', leaseSeconds: 3, tls });
    const good = new EtcdCluster(settings(etcdClientFiles(dir, 'ctl1')));
    const leadership = new EtcdLeadership(good, { name: 'ctl1', api: 'http://ctl1' }, logger);
    // A certificate of another CA (trusting ours): etcd refuses the handshake.
    await createEtcdPki(other, { members: [], clients: ['ctl2'] });
    const stranger = new EtcdCluster(settings({ ...etcdClientFiles(other, 'ctl2'), ca: etcdClientFiles(dir, 'ctl1').ca }));
    // No certificate at all, our CA trusted.
    const bare = new Etcd3({ hosts: secure.endpoints, credentials: { rootCertificate: readFileSync(etcdClientFiles(dir, 'ctl1').ca) }, defaultCallOptions: () => ({ deadline: Date.now() + 3000 }) });
    try {
      leadership.start();
      await until('ctl1 leads over TLS', () => leadership.leading());
      await new EtcdStore(good, leadership).setSetting('rebalance', 'manual');
      expect((await good.health())[0]).toMatchObject({ healthy: true, version: expect.stringMatching(/^3\./) });

      const refusedStranger = await stranger.ns.get('settings/rebalance').string().then(() => 'read', (e: Error) => e.message);
      // etcd's TLS alert 42 (bad_certificate, RFC 5246 7.2.2): the server refused us, not we it.
      expect(refusedStranger).toMatch(/alert bad certificate/);
      expect((await stranger.health())[0]!.healthy).toBe(false);
      const refusedBare = await bare.namespace('/t4/').get('settings/rebalance').string().then(() => 'read', (e: Error) => e.message);
      expect(refusedBare).toMatch(/alert bad certificate/);
    } finally {
      await leadership.stop();
      good.close();
      stranger.close();
      bare.close();
      await secure.stop();
      rmSync(dir, { recursive: true, force: true });
      rmSync(other, { recursive: true, force: true });
    }
  }, 60_000);
});
