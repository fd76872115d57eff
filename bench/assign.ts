/**
 * make bench-assign: the default assignment algorithm on 64 appliances × 4,096 VIPs with Zipf
 * load, and a simulated cluster (no kernel) comparing replication traffic of table copies sent
 * to each connection's server (the patent) with a full mesh between appliances.
 * Prints tables; writes bench/results/assign.json.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MinMaxLoad } from '../src/controller/assignment.js';
import type { AssignmentInput, VipState } from '../src/controller/assignment.js';
import { prng, randomCluster } from '../test/support/workload.js';

const APPLIANCES = 64;
const VIPS = 4096;
const THRESHOLD = 0.1;
const SEEDS = 20;
const NOW = 1_700_000_000_000;

const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]!;
const median = (xs: number[]) => quantile(xs, 0.5);

/**
 * Fewest moves for every appliance to carry at most (1 + threshold) × its fair share, or one
 * VIP alone if that is more: each appliance must give away at least its excess, and a move
 * carries one VIP, so it sheds its largest VIPs first — or keeps its largest and sheds the
 * others, whichever takes fewer moves.
 */
function lowerBound(input: AssignmentInput): number {
  const total = input.vips.reduce((a, v) => a + v.load, 0);
  const capacity = input.appliances.reduce((a, x) => a + x.capacity, 0);
  const shed = (loads: number[], limit: number) => {
    let excess = loads.reduce((x, y) => x + y, 0) - limit;
    let k = 0;
    for (; excess > 1e-9 && k < loads.length; k++) excess -= loads[k]!;
    return k;
  };
  let moves = 0;
  for (const a of input.appliances) {
    const loads = input.vips.filter((v) => v.owner === a.name).map((v) => v.load).sort((x, y) => y - x);
    const share = (1 + THRESHOLD) * (total / capacity) * a.capacity;
    const keepLargest = loads.length > 0 && loads[0]! > share ? shed(loads.slice(1), 0) : Infinity;
    moves += Math.min(shed(loads, share), keepLargest);
  }
  return moves;
}

/**
 * Fewest moves that take off every appliance at least as much load as the plan took off it:
 * a bound for any plan ending with no appliance busier than this one leaves it.
 */
function sameEndLowerBound(input: AssignmentInput, after: Record<string, { after: number }>): number {
  let moves = 0;
  for (const a of input.appliances) {
    const loads = input.vips.filter((v) => v.owner === a.name).map((v) => v.load).sort((x, y) => y - x);
    let shed = loads.reduce((x, y) => x + y, 0) - after[a.name]!.after * a.capacity;
    for (let i = 0; shed > 1e-6 * (1 + Math.abs(shed)) && i < loads.length; i++, moves++) shed -= loads[i]!;
  }
  return moves;
}

/** Whether a placement meets the lower bound's goal (so that comparing with it is fair). */
function meetsGoal(input: AssignmentInput, owners: Map<string, string>): boolean {
  const total = input.vips.reduce((a, v) => a + v.load, 0);
  const capacity = input.appliances.reduce((a, x) => a + x.capacity, 0);
  const load = new Map<string, number>();
  const largest = new Map<string, number>();
  for (const v of input.vips) {
    const o = owners.get(v.name)!;
    load.set(o, (load.get(o) ?? 0) + v.load);
    largest.set(o, Math.max(largest.get(o) ?? 0, v.load));
  }
  return input.appliances.every((a) => (load.get(a.name) ?? 0) <= Math.max((1 + THRESHOLD) * (total / capacity) * a.capacity, largest.get(a.name) ?? 0) + 1e-6);
}

interface Scenario {
  name: string;
  zipf: number;
  uniformOwners: boolean;
}

function planBench(s: Scenario) {
  const algorithm = new MinMaxLoad();
  const oneShot = { ms: [] as number[], moves: [] as number[], bound: [] as number[], sameEnd: [] as number[], metGoal: 0, before: [] as number[], after: [] as number[] };
  const rounds = { ms: [] as number[], plans: [] as number[], moves: [] as number[] };
  for (let seed = 1; seed <= SEEDS; seed++) {
    const cluster = randomCluster({ appliances: APPLIANCES, vips: VIPS, zipf: s.zipf, uniformOwners: s.uniformOwners, capacities: [1, 1, 2] }, prng(seed));
    const input: AssignmentInput = { ...cluster, settings: { threshold: THRESHOLD, coolDownSeconds: 300, maxConcurrent: VIPS, now: NOW } };
    // the whole way to balance in one plan; a controller plans again and again, so warm up first
    if (seed === 1) for (let i = 0; i < 5; i++) algorithm.plan(input);
    const t0 = process.hrtime.bigint();
    const plan = algorithm.plan(input);
    oneShot.ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
    oneShot.moves.push(plan.moves.length);
    oneShot.bound.push(lowerBound(input));
    oneShot.sameEnd.push(sameEndLowerBound(input, plan.loads));
    oneShot.before.push(plan.imbalance.before);
    oneShot.after.push(plan.imbalance.after);
    const owners = new Map(input.vips.map((v) => [v.name, v.owner]));
    for (const m of plan.moves) owners.set(m.vip, m.to);
    if (meetsGoal(input, owners)) oneShot.metGoal++;

    // as the controller runs it: 8 migrations per plan, a plan a minute, 5 min cool-down
    const vips: VipState[] = cluster.vips.map((v) => ({ ...v }));
    let now = NOW;
    let total = 0;
    let plans = 0;
    for (;;) {
      const t = process.hrtime.bigint();
      const p = algorithm.plan({ appliances: cluster.appliances, vips, settings: { threshold: THRESHOLD, coolDownSeconds: 300, maxConcurrent: 8, now } });
      rounds.ms.push(Number(process.hrtime.bigint() - t) / 1e6);
      plans++;
      if (p.moves.length === 0 || plans > 2000) break;
      const byName = new Map(vips.map((v) => [v.name, v]));
      for (const m of p.moves) {
        byName.get(m.vip)!.owner = m.to;
        byName.get(m.vip)!.lastMovedAt = now;
      }
      total += p.moves.length;
      now += 60_000;
    }
    rounds.plans.push(plans);
    rounds.moves.push(total);
  }
  return {
    scenario: s,
    onePlan: {
      msMedian: median(oneShot.ms),
      msP95: quantile(oneShot.ms, 0.95),
      msMax: Math.max(...oneShot.ms),
      movesMedian: median(oneShot.moves),
      sameEndLowerBoundMedian: median(oneShot.sameEnd),
      movesOverSameEndBound: median(oneShot.moves.map((m, i) => m / Math.max(1, oneShot.sameEnd[i]!))),
      shareLowerBoundMedian: median(oneShot.bound),
      metGoal: `${oneShot.metGoal}/${SEEDS}`,
      imbalanceBefore: median(oneShot.before),
      imbalanceAfter: median(oneShot.after),
    },
    eightPerPlan: {
      msMedian: median(rounds.ms),
      msMax: Math.max(...rounds.ms),
      plansMedian: median(rounds.plans),
      movesMedian: median(rounds.moves),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Replication: where the copies of the access table go.

/** Bytes of one entry copy on the wire (tuple, reply tuple, NAT binding, timeout, mark, state). */
const RECORD_BYTES = 96;
/** Bytes of one batch besides its records: HTTP request line and headers, signature headers. */
const BATCH_BYTES = 520;
const TICK_MS = 100;
/** New connections per second on each appliance; each gives a copy when new and when destroyed. */
const CONNECTIONS_PER_S = 5_000;
const VIPS_PER_APPLIANCE = 8;
const SERVERS_PER_VIP = 3;

function replication(appliances: number, random: () => number) {
  const servers = 4 * appliances; // the site grows with its appliances
  const vipServers = Array.from({ length: appliances * VIPS_PER_APPLIANCE }, () => Array.from({ length: SERVERS_PER_VIP }, () => Math.floor(random() * servers)));
  const keeperSent = new Array<number>(appliances).fill(0);
  const keeperBatches = new Array<number>(appliances).fill(0);
  const serverReceived = new Array<number>(servers).fill(0);
  const meshSent = new Array<number>(appliances).fill(0);
  const meshReceived = new Array<number>(appliances).fill(0);
  const ticks = 1000 / TICK_MS; // one simulated second
  const perTick = (2 * CONNECTIONS_PER_S) / ticks;
  for (let tick = 0; tick < ticks; tick++) {
    for (let a = 0; a < appliances; a++) {
      // copies of this tick, by keeper: each connection's copy goes to its own server only
      const byServer = new Map<number, number>();
      for (let e = 0; e < perTick; e++) {
        const vip = a * VIPS_PER_APPLIANCE + Math.floor(random() * VIPS_PER_APPLIANCE);
        const server = vipServers[vip]![Math.floor(random() * SERVERS_PER_VIP)]!;
        byServer.set(server, (byServer.get(server) ?? 0) + 1);
      }
      for (const [server, records] of byServer) {
        const bytes = records * RECORD_BYTES + BATCH_BYTES;
        keeperSent[a]! += bytes;
        keeperBatches[a]! += 1;
        serverReceived[server]! += bytes;
      }
      // full mesh: the whole tick's copies to every other appliance
      const meshBatch = perTick * RECORD_BYTES + BATCH_BYTES;
      meshSent[a]! += meshBatch * (appliances - 1);
      for (let b = 0; b < appliances; b++) if (b !== a) meshReceived[b]! += meshBatch;
    }
  }
  const mean = (xs: number[]) => xs.reduce((x, y) => x + y, 0) / xs.length;
  return {
    appliances,
    servers,
    keeper: {
      sentPerApplianceMBps: mean(keeperSent) / 1e6,
      batchesPerAppliancePerS: mean(keeperBatches),
      receivedPerServerMaxMBps: Math.max(...serverReceived) / 1e6,
    },
    fullMesh: {
      sentPerApplianceMBps: mean(meshSent) / 1e6,
      receivedPerApplianceMBps: mean(meshReceived) / 1e6,
    },
  };
}

// ---------------------------------------------------------------------------------------------

const scenarios: Scenario[] = [
  { name: 'zipf 1.0, VIPs on 16 of 64 appliances', zipf: 1.0, uniformOwners: false },
  { name: 'zipf 1.0, VIPs on all 64 at random', zipf: 1.0, uniformOwners: true },
  { name: 'zipf 0.6, VIPs on 16 of 64 appliances', zipf: 0.6, uniformOwners: false },
];
const plans = scenarios.map(planBench);
const random = prng(42);
const repl = [2, 4, 8, 16, 32, 64].map((n) => replication(n, random));

const f = (x: number, d = 1) => x.toFixed(d);
console.log(`\nassignment: ${APPLIANCES} appliances (capacity 1 or 2) × ${VIPS} VIPs, threshold ${THRESHOLD * 100} %, ${SEEDS} seeds (medians)`);
console.log('lower bound A: fewest moves taking off each appliance what the plan took off it (largest VIPs first)');
console.log('lower bound B: fewest moves to bring each appliance to ≤ 1.1× its share or its largest VIP; "met": plans reaching that goal');
console.log('scenario                                 | one plan to balance: ms (p95, max) | moves | bound A | bound B (met) | imbalance before → after | 8 per plan: ms/plan, plans, moves');
for (const p of plans) {
  const o = p.onePlan;
  const e = p.eightPerPlan;
  console.log(
    `${p.scenario.name.padEnd(40)} | ${f(o.msMedian, 2).padStart(6)} (${f(o.msP95, 2)}, ${f(o.msMax, 2)})`.padEnd(78) +
      ` | ${String(o.movesMedian).padStart(5)} | ${String(o.sameEndLowerBoundMedian).padStart(7)} | ${String(o.shareLowerBoundMedian).padStart(6)} (${o.metGoal})`.padEnd(42) +
      ` | ${f(o.imbalanceBefore * 100)} % → ${f(o.imbalanceAfter * 100)} %`.padEnd(27) +
      ` | ${f(e.msMedian, 2)}, ${e.plansMedian}, ${e.movesMedian}`,
  );
}
console.log(`\nreplication, simulated: ${CONNECTIONS_PER_S} new connections/s per appliance, a copy on new and on destroy, ${RECORD_BYTES} B a record, batches every ${TICK_MS} ms`);
console.log('appliances | servers | to keepers: MB/s sent per appliance, batches/s, max MB/s into a server | full mesh: MB/s sent per appliance, received per appliance');
for (const r of repl) {
  console.log(
    `${String(r.appliances).padStart(10)} | ${String(r.servers).padStart(7)} | ${f(r.keeper.sentPerApplianceMBps, 2).padStart(8)} ${f(r.keeper.batchesPerAppliancePerS, 0).padStart(8)} ${f(r.keeper.receivedPerServerMaxMBps, 2).padStart(8)}`.padEnd(92) +
      ` | ${f(r.fullMesh.sentPerApplianceMBps, 2).padStart(8)} ${f(r.fullMesh.receivedPerApplianceMBps, 2).padStart(8)}`,
  );
}

const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'assign.json');
mkdirSync(dirname(out), { recursive: true });
writeFileSync(
  out,
  `${JSON.stringify({ date: new Date().toISOString(), node: process.version, appliances: APPLIANCES, vips: VIPS, threshold: THRESHOLD, seeds: SEEDS, plans, replication: { connectionsPerS: CONNECTIONS_PER_S, recordBytes: RECORD_BYTES, batchBytes: BATCH_BYTES, tickMs: TICK_MS, results: repl } }, null, 2)}\n`,
);
console.log(`\nwrote ${out}`);
