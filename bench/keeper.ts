/**
 * The keeper's hot paths: 100,000 copies of one VIP upserted in batches of 1,000 straight
 * into the store and over the authenticated API (a keeper on loopback), re-upserted (the
 * periodic refresh: every row exists), read back as entry records, deleted in batches.
 * Run: npx tsx bench/keeper.ts [copies] — prints a table, writes bench/results/keeper.json.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { createClusterCredentials, loadCredentials } from '../src/api/auth.js';
import { keysOfRecords } from '../src/keeper/batch.js';
import { KeeperClient } from '../src/keeper/client.js';
import { parseKeeperConfig } from '../src/config/keeper.js';
import { Keeper } from '../src/keeper/keeper.js';
import { CopyStore } from '../src/keeper/store.js';
import { IPPROTO_TCP, IPS_ASSURED, IPS_DST_NAT, IPS_SEEN_REPLY, TCP_CONNTRACK_ESTABLISHED } from '../src/netlink/ctnetlink.js';
import { RECORD_SIZE, writeRecord } from '../src/netlink/entry-record.js';

const N = Number(process.argv[2] ?? 100_000);
const BATCH = 1000;
const RUNS = 3;
const VIP = '203.0.113.10';
/** The keeper stores copies of its configured VIPs only. */
const BENCH_VIPS = 'vips: [{ name: vip1, id: 1, address: 203.0.113.10, insideAddress: 198.18.0.10, ports: [80], mode: dnat, backends: [{ address: 198.18.0.101 }], owner: lb1 }]\n';
const none = Buffer.alloc(0);

function makeRecords(n: number): Buffer {
  const b = Buffer.alloc(n * RECORD_SIZE);
  for (let i = 0; i < n; i++) {
    writeRecord(b, i * RECORD_SIZE, {
      client: { address: `198.51.${100 + (i >> 16)}.${(i >> 8) & 255}`, port: 1024 + (i & 255) },
      vip: { address: VIP, port: 80 },
      server: { address: '198.18.0.101', port: 80 },
      proto: IPPROTO_TCP,
      tcpState: TCP_CONNTRACK_ESTABLISHED,
      tcpWindow: { wscaleOriginal: 7, wscaleReply: 7, flagsOriginal: 3, flagsReply: 3 },
      status: IPS_SEEN_REPLY | IPS_ASSURED | IPS_DST_NAT,
      timeout: 432000,
      mark: 1,
    });
  }
  return b;
}

const batches = (b: Buffer, unit: number): Buffer[] => Array.from({ length: Math.ceil(b.length / (BATCH * unit)) }, (_, i) => b.subarray(i * BATCH * unit, (i + 1) * BATCH * unit));
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round = (x: number): number => Math.round(x * 10) / 10;

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'vipshift-bench-keeper-'));
  // Wall time, and this process's CPU time (keeper and client both run here): on a machine
  // shared with other work the CPU time is the steadier figure.
  const results: Record<string, { wall: number[]; cpu: number[] }> = {};
  const time = async (name: string, fn: () => unknown): Promise<void> => {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await fn();
    const wall = performance.now() - t0;
    const c = process.cpuUsage(c0);
    const r = (results[name] ??= { wall: [], cpu: [] });
    r.wall.push(round(wall));
    r.cpu.push(round((c.user + c.system) / 1000));
  };
  const records = makeRecords(N);
  const keys = keysOfRecords(records);
  let dbBytes = 0;
  try {
    createClusterCredentials(join(dir, 'pki'), { srv1: 'keeper', lb1: 'appliance' });
    for (let run = 0; run < RUNS; run++) {
      const store = new CopyStore(join(dir, `store-${run}.sqlite`));
      await time(`store: upsert ${N} new, batches of ${BATCH}`, () => batches(records, RECORD_SIZE).forEach((b) => store.apply({ upserts: b, deletes: none }, 'lb1')));
      await time(`store: upsert ${N} existing (refresh), batches of ${BATCH}`, () => batches(records, RECORD_SIZE).forEach((b) => store.apply({ upserts: b, deletes: none }, 'lb1')));
      await time(`store: upsert ${N} new, one batch`, () => {
        store.deleteVip(VIP);
        store.apply({ upserts: records, deletes: none }, 'lb1');
      });
      await time(`store: read all ${N} of the VIP as records`, () => {
        if (store.recordsOfVip(VIP).length !== records.length) throw new Error('store lost copies');
      });
      dbBytes = store.databaseBytes();
      await time(`store: delete ${N}, batches of ${BATCH}`, () => batches(keys, 16).forEach((k) => store.apply({ upserts: none, deletes: k })));
      store.close();

      const config = parseKeeperConfig(`keeper: srv1\napi: { listen: "127.0.0.1:0" }\ndatabase: ${join(dir, `api-${run}.sqlite`)}\naddresses: [198.18.0.101]\n${BENCH_VIPS}`, 'bench.yaml');
      const keeper = await Keeper.start(config, { credentials: loadCredentials(join(dir, 'pki'), 'srv1'), logger: pino({ level: 'silent' }), metrics: new Registry() });
      const lb1 = new KeeperClient(keeper.url, loadCredentials(join(dir, 'pki'), 'lb1'), { peer: 'srv1' });
      await time(`API: upsert ${N} new, batches of ${BATCH}, one at a time`, async () => {
        for (const b of batches(records, RECORD_SIZE)) await lb1.push({ upserts: b, deletes: none });
      });
      await time(`API: upsert ${N} existing, batches of ${BATCH}, 4 in flight`, async () => {
        const all = batches(records, RECORD_SIZE);
        let next = 0;
        await Promise.all(Array.from({ length: 4 }, async () => {
          while (next < all.length) await lb1.push({ upserts: all[next++]!, deletes: none });
        }));
      });
      await time(`API: read all ${N} of the VIP (signed stream)`, async () => {
        if ((await lb1.copies(VIP, 'copies')).length !== records.length) throw new Error('API lost copies');
      });
      lb1.close();
      await keeper.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const rows = Object.entries(results).map(([name, r]) => ({
    name,
    medianMs: median(r.wall),
    medianCpuMs: median(r.cpu),
    runsMs: r.wall,
    runsCpuMs: r.cpu,
    perSecond: Math.round((N / median(r.wall)) * 1000),
  }));
  const load = loadavg()[0]!;
  const out = { bench: 'keeper', copies: N, batch: BATCH, runs: RUNS, databaseBytes: dbBytes, loadAverage: round(load), kernel: release(), node: process.version, date: new Date().toISOString(), results: rows };
  mkdirSync('bench/results', { recursive: true });
  writeFileSync('bench/results/keeper.json', `${JSON.stringify(out, null, 2)}\n`);
  const width = Math.max(...rows.map((r) => r.name.length));
  console.log(`${'keeper'.padEnd(width)}  wall ms   CPU ms   per second   (${N} copies, ${RUNS} runs, medians, database ${(dbBytes / 1e6).toFixed(1)} MB, load ${round(load)})`);
  for (const r of rows) console.log(`${r.name.padEnd(width)}  ${String(r.medianMs).padStart(7)}  ${String(r.medianCpuMs).padStart(7)}   ${String(r.perSecond).padStart(10)}`);
}

await main();
