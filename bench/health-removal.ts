/**
 * `make bench-health-removal`: how long a failed backend stays in the pool, and what that
 * costs the clients, by check interval. In the lab, vip4 (fullnat: srv1, srv2, srv3) gets a
 * new HTTP connection every 20 ms from the client; srv2's service is stopped (connections
 * refused), then, once it is back, srv2 is blackholed (nothing answers). For each: the time
 * from the failure to lb1's pool change (its `backend down` line), the new connections that
 * failed (all of them fall in that window plus the ones already on their way) or were only
 * delayed (a retransmitted SYN got through: the appliance deletes the entries of the
 * handshakes a backend left unanswered when it goes down, so the retry meets the new pool),
 * and the time from the repair to its return. The timeout is half the interval; rise 2, fall 3.
 *
 *   npx tsx bench/health-removal.ts [--intervals 200,500,1000,2000]
 * Writes bench/results/health-removal.json.
 */
import fs from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { labDown, labUp, siteFor } from '../src/lab/lab.js';
import { blackhole, pooledAt, probe, startService, stopService, waitForTransition, withCheck } from '../test/integration/helpers/health-lab.js';

const { values } = parseArgs({ options: { intervals: { type: 'string', default: '200,500,1000,2000' } } });
const intervals = values.intervals!.split(',').map(Number);
const name = 'hcbench';
const VIP4 = '203.0.113.13';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Row {
  inter: number;
  timeout: number;
  failure: 'service stopped' | 'blackholed';
  /** fall × inter, and + timeout for a silent backend: the bound the schedule gives. */
  boundMs: number;
  removalMs: number;
  /** Of which the pool change itself (after the deciding check), ms. */
  applyMs: number;
  failedConnections: number;
  /** Succeeded only after a retransmitted SYN (over 900 ms): a silent backend costs delay, not failure. */
  delayedConnections: number;
  failedAfterRemoval: number;
  probes: number;
  returnMs: number;
  load: number[];
}

const rows: Row[] = [];
try {
  for (const inter of intervals) {
    const check = { inter, timeout: Math.round(inter / 2), rise: 2, fall: 3 };
    await labUp({ name, configure: { appliance: withCheck(check) } });
    const site = siteFor(name);
    try {
      await sleep(Math.max(1500, 2 * inter));
      for (const failure of ['service stopped', 'blackholed'] as const) {
        const load = probe(site, [VIP4], 20);
        await sleep(Math.max(1000, inter));
        const failedAt = Date.now();
        if (failure === 'service stopped') await stopService(site, 'srv2');
        else await blackhole(site, 'srv2', true);
        const down = await waitForTransition(site, 'lb1', { msg: 'backend down', vip: 'vip4', backend: '198.18.0.102:7' }, failedAt, 10 * inter + 10_000);
        await sleep(Math.max(1000, inter));
        const mendedAt = Date.now();
        if (failure === 'service stopped') await startService(site, 'srv2');
        else await blackhole(site, 'srv2', false);
        const up = await waitForTransition(site, 'lb1', { msg: 'backend up', vip: 'vip4', backend: '198.18.0.102:7' }, mendedAt, 10 * inter + 10_000);
        const probes = await load.stop();
        const failed = probes.filter((p) => !p.ok);
        rows.push({
          inter,
          timeout: check.timeout,
          failure,
          boundMs: check.fall * inter + (failure === 'blackholed' ? check.timeout : 0),
          removalMs: down.time - failedAt,
          applyMs: down.applyMs ?? 0,
          failedConnections: failed.length,
          delayedConnections: probes.filter((p) => p.ok && p.ms > 900).length,
          // Opened after the pool change (200 ms for the ones already on their way): should be 0.
          failedAfterRemoval: failed.filter((p) => p.at > down.time + 200 && p.at < pooledAt(up)).length,
          probes: probes.length,
          returnMs: up.time - mendedAt,
          load: os.loadavg().map((x) => Math.round(x * 100) / 100),
        });
        console.log(JSON.stringify(rows.at(-1)));
        await sleep(Math.max(1000, inter));
      }
    } finally {
      await labDown({ name });
    }
  }
} finally {
  await labDown({ name }).catch(() => undefined);
}

console.log('\nFrom a backend failure to its removal from vip4\'s pool (lb1), new connections every 20 ms');
console.table(rows.map(({ load, ...r }) => ({ ...r, load: load[0] })));
fs.mkdirSync('bench/results', { recursive: true });
fs.writeFileSync('bench/results/health-removal.json', `${JSON.stringify({ bench: 'health-removal', date: new Date().toISOString(), host: { cpus: os.cpus().length }, rows }, null, 2)}\n`);
console.log('wrote bench/results/health-removal.json');
