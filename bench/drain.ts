/**
 * `make bench-drain`: `vipshift drain lb1` of an appliance that owns VIPS VIPs (default 125,
 * the half of 250) with ENTRIES entries each (default 1,000), on a lab whose site has
 * VIPS − 3 extra fullnat VIPs on lb1 beside the four (site.ts, extraVip). Needs root and a build.
 * Writes bench/results/<OUT>.json (default drain).
 *
 * Order: lab up → synthetic ESTABLISHED entries on lb1 for every VIP (before the traffic, so
 * that the live connections' SNAT ports avoid theirs) → lb1's mirror rebuilt (they were made
 * behind its back) → echo traffic on SAMPLE VIPs (vip1, vip4 and extra ones spread over the
 * list; CONNECTIONS each) → the drain through the controller's API → traffic summaries.
 *
 * Reported: the drain's total time, per migration its steps 1–4 (the VIP's packets are held
 * from step 2 to step 4) and pre-copy, and per sampled VIP the longest pause a live connection
 * saw and its resets (must be 0); lb1 and lb2 each run 2 × VIPS VRRP instances.
 *
 * Environment: VIPS (125), ENTRIES (1000), SAMPLE (6), CONNECTIONS (20), BFD_MS (the lab's 50), OUT (drain).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT, type UpOptions } from '../src/lab/lab.js';
import { addressOn, apiUrl } from '../src/lab/site.js';
import type { TrafficRun, TrafficSummary } from '../src/lab/traffic.js';
import type { MigrationProgress } from '../src/migration/migration.js';
import { Conntrack } from '../src/netlink/conntrack.js';
import { withLab } from '../test/helpers/lab.js';
import { apiCall, rebuildMirror } from '../test/integration/helpers/replication-lab.js';
import { syntheticRecords } from './synthetic-entries.js';

const VIPS = Number(process.env.VIPS ?? 125);
const ENTRIES = Number(process.env.ENTRIES ?? 1000);
const SAMPLE = Number(process.env.SAMPLE ?? 6);
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 20);
const SOURCE = 'lb1';
/** The default site's VIPs on lb1: vip1, vip2, vip4. */
const DEFAULT_ON_SOURCE = 3;
const round2 = (x: number) => Math.round(x * 100) / 100;

interface DrainAnswer {
  migrations: MigrationProgress[];
  waiting: { vip: string; reason: string }[];
  remaining: string[];
}

const startLoad = os.loadavg().map(round2);
const t0 = performance.now();
/**
 * BFD_MS: the appliances' BFD intervals (ms, × 3) instead of the lab's 50. One BFD session per
 * interface and peer speaks for every VRRP instance on it: when it times out (a stalled
 * process on a loaded machine), all of them — 2 × VIPS — declare the master down at once.
 */
const BFD_MS = process.env.BFD_MS ? Number(process.env.BFD_MS) : undefined;
const configure: UpOptions['configure'] = BFD_MS
  ? {
      appliance: (_name, config) => ({
        ...config,
        vrrp: config.vrrp && { ...config.vrrp, instances: (config.vrrp.instances ?? []).map((i) => ({ ...i, bfd: { minTxMs: BFD_MS, minRxMs: BFD_MS, multiplier: 3 } })) },
      }),
    }
  : {};
const result = await withLab({ prefix: 'vtdrn', extraVips: VIPS - DEFAULT_ON_SOURCE, readyTimeoutMs: 120_000, configure }, async (lab) => {
  const upMs = round2(performance.now() - t0);
  const owned = lab.site.vips.filter((v) => v.owner === SOURCE);
  if (owned.length !== VIPS) throw new Error(`${SOURCE} owns ${owned.length} VIPs, expected ${VIPS}`);
  const source = new Conntrack({ netns: lab.ns(SOURCE) });
  const runs: { vip: string; traffic: TrafficRun }[] = [];
  try {
    const timeout = Number((await lab.exec(SOURCE, ['sysctl', '-n', 'net.netfilter.nf_conntrack_tcp_timeout_established'])).stdout.trim());
    const tc = performance.now();
    for (const vip of owned) {
      const made = await source.createFromRecords(syntheticRecords(ENTRIES, vip, vip.servers.map((s) => addressOn(lab.site, s, 'int')), timeout));
      if (made.failures.length || made.created !== ENTRIES) throw new Error(`${vip.name}: ${made.created} of ${ENTRIES} entries created, failures ${JSON.stringify(made.failures.slice(0, 3))}`);
    }
    const createMs = round2(performance.now() - tc);
    const tr = performance.now();
    const mirror = await rebuildMirror(lab.site, SOURCE, 600_000);
    const rebuildMs = round2(performance.now() - tr);
    if (!mirror.synced || mirror.entries < VIPS * ENTRIES) throw new Error(`${SOURCE}'s mirror: synced ${mirror.synced}, ${mirror.entries} entries, expected ${VIPS * ENTRIES}`);

    // vip1 (dnat), vip4 (fullnat) and extra VIPs spread over the list.
    const extras = owned.filter((v) => v.id > 4);
    const sample = [owned.find((v) => v.name === 'vip1')!, owned.find((v) => v.name === 'vip4')!, ...Array.from({ length: Math.max(0, SAMPLE - 2) }, (_, i) => extras[Math.floor(((i + 1) * extras.length) / (SAMPLE - 1))]!)].filter(
      (v, i, all) => v && all.indexOf(v) === i,
    );
    for (const vip of sample) runs.push({ vip: vip.name, traffic: lab.traffic({ address: vip.address, port: lab.site.service.echoPort, connections: CONNECTIONS, intervalMs: 20 }) });
    for (const r of runs) {
      const up = await r.traffic.established;
      if (up.established !== CONNECTIONS) throw new Error(`traffic on ${r.vip}: ${up.established} of ${CONNECTIONS} connections up: ${JSON.stringify(up.errors)}`);
    }

    // The controller plans only with appliances whose status it has had answered (up).
    const tu = performance.now();
    for (;;) {
      const site = await apiCall<{ appliances: { name: string; up: boolean }[] }>(lab.site, apiUrl(lab.site.apis.controller), 'GET', '/v1/status', undefined, 60_000);
      if (site.appliances.every((a) => a.up)) break;
      if (performance.now() - tu > 300_000) throw new Error(`the controller does not see every appliance up after 300 s: ${JSON.stringify(site.appliances)}`);
      await new Promise((r) => setTimeout(r, 2000));
    }
    const controllerSawUpMs = round2(performance.now() - tu);
    const load = os.loadavg().map(round2);
    const td = performance.now();
    const drained = await apiCall<DrainAnswer>(lab.site, apiUrl(lab.site.apis.controller), 'POST', `/v1/appliances/${SOURCE}/drain`, {}, 3_600_000);
    const drainMs = round2(performance.now() - td);
    const loadAfter = os.loadavg().map(round2);
    await new Promise((r) => setTimeout(r, 1000)); // a late reset counts too
    const traffic: Record<string, { resets: number; other_errors: Record<string, number>; max_gap_ms: number }> = {};
    for (const r of runs.splice(0)) {
      const s: TrafficSummary = await r.traffic.stop();
      const { reset, ...others } = s.errors;
      traffic[r.vip] = { resets: reset, other_errors: Object.fromEntries(Object.entries(others).filter(([, n]) => n > 0)), max_gap_ms: s.gapMs.max };
    }
    const hold = (m: MigrationProgress) => (m.steps.move_address_ms ?? NaN) + (m.steps.move_entries_ms ?? NaN) + (m.steps.activate_ms ?? NaN);
    const steps = (m: MigrationProgress) => hold(m) + (m.steps.prepare_ms ?? NaN);
    const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
    const pct = (xs: number[], p: number) => round2(sorted(xs)[Math.min(xs.length - 1, Math.floor(p * xs.length))] ?? NaN);
    const done = drained.migrations.filter((m) => m.state === 'done');
    const holds = done.map(hold);
    const starts = drained.migrations.map((m) => Date.parse(m.startedAt));
    return {
      vips: VIPS,
      entries_per_vip: ENTRIES,
      vrrp_instances_per_appliance: 2 * lab.site.vips.length,
      bfd_ms: BFD_MS ?? 'the lab\'s (50 ms x 3)',
      lab_up_ms: upMs,
      create_entries_ms: createMs,
      mirror_rebuild_ms: rebuildMs,
      controller_saw_both_up_after_ms: controllerSawUpMs,
      drain_ms: drainMs,
      migrations: { done: done.length, failed: drained.migrations.length - done.length, remaining: drained.remaining, waiting: drained.waiting },
      migrations_started_within_ms: round2(Math.max(...starts) - Math.min(...starts)),
      steps_1_4_ms: { p50: pct(done.map(steps), 0.5), p99: pct(done.map(steps), 0.99), max: pct(done.map(steps), 1) },
      hold_steps_2_4_ms: { p50: pct(holds, 0.5), p99: pct(holds, 0.99), max: pct(holds, 1) },
      precopy_ms: { p50: pct(done.map((m) => m.precopy?.ms ?? NaN), 0.5), max: pct(done.map((m) => m.precopy?.ms ?? NaN), 1) },
      fallbacks: drained.migrations.filter((m) => m.fallback || m.precopy?.error).map((m) => ({ vip: m.vip, fallback: m.fallback, precopy_error: m.precopy?.error })),
      errors: drained.migrations.filter((m) => m.state !== 'done').map((m) => ({ vip: m.vip, state: m.state, error: m.error })),
      sampled_traffic: { connections_per_vip: CONNECTIONS, by_vip: traffic, resets: Object.values(traffic).reduce((n, t) => n + t.resets, 0) },
      load_avg: { start: startLoad, drain_start: load, drain_end: loadAfter },
    };
  } finally {
    for (const r of runs) await r.traffic.stop().catch(() => undefined);
    source.close();
  }
});

console.log(JSON.stringify(result, null, 2));
const out = path.join(REPO_ROOT, 'bench', 'results', `${process.env.OUT ?? 'drain'}.json`);
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify({ bench: 'drain', date: new Date().toISOString(), kernel: os.release(), machine: { cores: os.cpus().length, memory_gb: round2(os.totalmem() / 2 ** 30) }, ...result }, null, 2) + '\n');
console.log(`wrote ${path.relative(REPO_ROOT, out)}`);
