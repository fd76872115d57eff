/**
 * The cost of a migration's journal writes (begin, the four steps, the commit point, the end)
 * on the controller's two stores: the SQLite file (WAL, synchronous=FULL) and etcd (three
 * members on loopback, every write a fenced transaction of the leader).
 * Run: npx tsx bench/controller-journal.ts [migrations] — prints a table, writes
 * bench/results/controller-journal.json.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { EtcdCluster, EtcdLeadership, EtcdStore } from '../src/controller/etcd-store.js';
import { SqliteStore } from '../src/controller/sqlite-store.js';
import type { ControllerStore } from '../src/controller/store.js';
import { startEtcd } from '../test/integration/helpers/etcd.js';

const migrations = Number(process.argv[2] ?? 50);

async function journalOf(store: ControllerStore, n: number): Promise<number[]> {
  await store.syncConfiguration([{ name: 'lb1', api: 'http://a', capacity: 1 }, { name: 'lb2', api: 'http://b', capacity: 1 }], [{ name: 'vip1', owner: 'lb1' }]);
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const id = `m${i}`;
    const t0 = performance.now();
    await store.begin({ id, vip: 'vip1', source: i % 2 ? 'lb2' : 'lb1', target: i % 2 ? 'lb1' : 'lb2', reason: 'operator' });
    for (const step of ['prepare', 'move_address', 'move_entries'] as const) await store.step(id, step);
    await store.commit(id);
    await store.step(id, 'activate');
    await store.end(id, { state: 'done' });
    ms.push(performance.now() - t0);
  }
  return ms;
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  return { median: +q(0.5).toFixed(2), p95: +q(0.95).toFixed(2), max: +s[s.length - 1]!.toFixed(2) };
};

const dir = mkdtempSync(path.join(tmpdir(), 'vipshift-bench-journal-'));
const etcd = await startEtcd(3);
try {
  const sqlite = new SqliteStore(path.join(dir, 'c.sqlite'));
  const onSqlite = await journalOf(sqlite, migrations);
  await sqlite.close();
  const cluster = new EtcdCluster({ endpoints: etcd.endpoints, prefix: '/bench/', leaseSeconds: 3 });
  const leadership = new EtcdLeadership(cluster, { name: 'bench', api: 'http://bench' }, pino({ level: 'silent' }));
  leadership.start();
  while (!leadership.leading()) await new Promise((r) => setTimeout(r, 20));
  const onEtcd = await journalOf(new EtcdStore(cluster, leadership), migrations);
  await leadership.stop();
  cluster.close();
  const result = { migrations, writesPerMigration: 7, sqliteMs: stats(onSqlite), etcdMs: stats(onEtcd), loadavg: loadavg().map((x) => +x.toFixed(2)), at: new Date().toISOString() };
  console.log(`journal writes of one migration (7 records), ${migrations} migrations, load ${result.loadavg.join(' ')}`);
  console.log(`  sqlite  median ${result.sqliteMs.median} ms  p95 ${result.sqliteMs.p95} ms  max ${result.sqliteMs.max} ms`);
  console.log(`  etcd    median ${result.etcdMs.median} ms  p95 ${result.etcdMs.p95} ms  max ${result.etcdMs.max} ms`);
  mkdirSync('bench/results', { recursive: true });
  writeFileSync('bench/results/controller-journal.json', `${JSON.stringify(result, null, 2)}\n`);
} finally {
  await etcd.stop();
  rmSync(dir, { recursive: true, force: true });
}
