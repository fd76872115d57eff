/**
 * Which appliance should own which VIP (the patent's control mechanism 52; variant 11: the
 * algorithm is pluggable). Pure: the controller passes the inventory, the measured loads and
 * the clock in, and gets a plan of moves back, each with its reason and the loads before and
 * after. Carrying the plan out (the four-step migration) is the controller's business.
 *
 * Loads are relative to capacity: an appliance's load is the sum of its VIPs' loads divided by
 * its capacity weight. Imbalance = busiest appliance's load / the perfectly balanced load − 1
 * (0.25: the busiest carries 25 % more than its share).
 */

import type { AssignmentAlgorithmName } from '../config/controller.js';

export interface ApplianceState {
  name: string;
  /** Capacity weight (> 0): an appliance of weight 2 is meant to carry twice the load. */
  capacity: number;
  /** Answering its agent API and VRRP: may give and take VIPs. */
  up: boolean;
  /** Going down for maintenance: gets nothing, and its VIPs are drained off. */
  maintenance: boolean;
}

export interface VipState {
  name: string;
  owner: string;
  /** Measured load in any unit common to all VIPs (packets/s, new connections/s...), ≥ 0. */
  load: number;
  /** An operator fixed it to its owner: never moved. */
  pinned: boolean;
  /** When it last moved (ms since the epoch, the clock of settings.now); null if never. */
  lastMovedAt: number | null;
  /** A migration of it is under way: not moved, and counts against maxConcurrent. */
  migrating?: boolean;
}

export interface AssignmentSettings {
  /** Hysteresis: no rebalancing move unless the imbalance exceeds this (0.1 = 10 %). */
  threshold: number;
  /** A VIP that moved less than this ago stays where it is. */
  coolDownSeconds: number;
  /** Migrations at once, those under way included. */
  maxConcurrent: number;
  /** ms since the epoch. */
  now: number;
}

export interface AssignmentInput {
  appliances: ApplianceState[];
  vips: VipState[];
  settings: AssignmentSettings;
}

export interface LoadChange {
  before: number;
  after: number;
}

export interface PlannedMove {
  vip: string;
  from: string;
  to: string;
  load: number;
  /** `drain`: off an appliance in maintenance; `rebalance`: off the busiest appliance. */
  reason: 'drain' | 'rebalance';
  /** Relative loads of the two appliances, just before and just after this move. */
  loads: Record<string, LoadChange>;
  why: string;
}

export interface Plan {
  algorithm: string;
  moves: PlannedMove[];
  /** Relative load of every appliance (down ones included, for display) before and after the plan. */
  loads: Record<string, LoadChange>;
  imbalance: LoadChange;
  /** VIPs that should move but may not yet, with the reason (drain blocked by a pin, cool-down...). */
  waiting: { vip: string; reason: string }[];
  /** Why the plan stops where it does. */
  notes: string[];
}

export interface AssignmentAlgorithm {
  readonly name: string;
  plan(input: AssignmentInput): Plan;
}

/** Input checks shared by every algorithm: errors name the field. */
export function validateInput(input: AssignmentInput): void {
  const names = new Set<string>();
  input.appliances.forEach((a, i) => {
    if (names.has(a.name)) throw new Error(`appliances[${i}].name: duplicate appliance '${a.name}'`);
    names.add(a.name);
    if (!(Number.isFinite(a.capacity) && a.capacity > 0)) throw new Error(`appliances[${i}].capacity: must be a number > 0 (got ${a.capacity})`);
  });
  const vips = new Set<string>();
  input.vips.forEach((v, i) => {
    if (vips.has(v.name)) throw new Error(`vips[${i}].name: duplicate VIP '${v.name}'`);
    vips.add(v.name);
    if (!names.has(v.owner)) throw new Error(`vips[${i}].owner: unknown appliance '${v.owner}'`);
    if (!(Number.isFinite(v.load) && v.load >= 0)) throw new Error(`vips[${i}].load: must be a number ≥ 0 (got ${v.load})`);
  });
  const s = input.settings;
  if (!(s.threshold >= 0)) throw new Error(`settings.threshold: must be ≥ 0 (got ${s.threshold})`);
  if (!(s.coolDownSeconds >= 0)) throw new Error(`settings.coolDownSeconds: must be ≥ 0 (got ${s.coolDownSeconds})`);
  if (!(Number.isInteger(s.maxConcurrent) && s.maxConcurrent >= 0)) throw new Error(`settings.maxConcurrent: must be an integer ≥ 0 (got ${s.maxConcurrent})`);
  if (!Number.isFinite(s.now)) throw new Error('settings.now: must be a time in ms');
}

const round = (x: number) => Math.round(x * 1e6) / 1e6;
const pct = (x: number) => `${(x * 100).toFixed(1)} %`;

/**
 * The default: minimise the load of the busiest appliance, relative to capacity.
 * 1. drain: every VIP of an appliance in maintenance (largest first) goes to the appliance
 *    that will be least loaded with it;
 * 2. rebalance, while the imbalance exceeds the threshold: from the busiest appliance, the one
 *    move (VIP, target) that leaves the pair's higher load lowest, if that is below the busiest's
 *    load now. An appliance with no such move is set aside and the rest are balanced among
 *    themselves. Each VIP moves at most once per plan, so a plan is never a cycle.
 * Pinned, cooling-down and migrating VIPs stay; down and maintenance appliances get nothing;
 * VIPs of a down appliance are left to failover (its standby takes them over by VRRP).
 * Appliances are numbered and their loads kept in arrays: a plan of 2,000 moves over 64
 * appliances looks at every appliance for every move.
 */
export class MinMaxLoad implements AssignmentAlgorithm {
  readonly name = 'min-max-load';

  plan(input: AssignmentInput): Plan {
    validateInput(input);
    const { settings } = input;
    const apps = input.appliances;
    const index = new Map(apps.map((a, i) => [a.name, i]));
    const capacity = Float64Array.from(apps, (a) => a.capacity);
    const load = new Float64Array(apps.length);
    for (const v of input.vips) load[index.get(v.owner)!]! += v.load;
    const rel = (i: number) => load[i]! / capacity[i]!;
    const before = apps.map((_, i) => rel(i));

    /** Up and out of maintenance: may take VIPs, and are what we balance. */
    const eligible = apps.flatMap((a, i) => (a.up && !a.maintenance ? [i] : []));
    /** Set aside: appliances no single move relieves (see below). */
    const stuck = new Uint8Array(apps.length);
    /** Imbalance among the eligible appliances not set aside (all of them if `all`), and the busiest of them. */
    const measure = (all: boolean): { imbalance: number; busiest: number; share: number } => {
      let total = 0;
      let cap = 0;
      let busiest = -1;
      for (const i of eligible) {
        if (!all && stuck[i]) continue;
        total += load[i]!;
        cap += capacity[i]!;
        if (busiest < 0 || rel(i) > rel(busiest)) busiest = i;
      }
      const share = cap === 0 ? 0 : total / cap;
      return { imbalance: total === 0 ? 0 : rel(busiest) / share - 1, busiest, share };
    };
    const imbalanceBefore = measure(true).imbalance;
    const share = measure(true).share;
    /** An appliance's load for people: as a multiple of the balanced load. */
    const shareOf = (i: number) => (share === 0 ? '0' : `${(rel(i) / share).toFixed(2)}×`);

    const moves: PlannedMove[] = [];
    const waiting: Plan['waiting'] = [];
    const notes: string[] = [];
    let budget = settings.maxConcurrent - input.vips.filter((v) => v.migrating).length;
    const coolingUntil = (v: VipState) => (v.lastMovedAt === null ? -Infinity : v.lastMovedAt + settings.coolDownSeconds * 1000);
    const blocked = (v: VipState): string | undefined => {
      if (v.pinned) return 'pinned';
      if (v.migrating) return 'migrating';
      if (coolingUntil(v) > settings.now) return `cooling down for ${Math.ceil((coolingUntil(v) - settings.now) / 1000)} s`;
      return undefined;
    };
    const move = (v: VipState, from: number, to: number, reason: PlannedMove['reason'], why: string) => {
      const f = apps[from]!.name;
      const t = apps[to]!.name;
      const loads: Record<string, LoadChange> = { [f]: { before: round(rel(from)), after: 0 }, [t]: { before: round(rel(to)), after: 0 } };
      load[from]! -= v.load;
      load[to]! += v.load;
      loads[f]!.after = round(rel(from));
      loads[t]!.after = round(rel(to));
      moves.push({ vip: v.name, from: f, to: t, load: v.load, reason, loads, why });
      budget--;
    };

    // 1. Drain.
    const draining = input.vips
      .filter((v) => apps[index.get(v.owner)!]!.maintenance && apps[index.get(v.owner)!]!.up)
      .sort((x, y) => y.load - x.load || x.name.localeCompare(y.name));
    for (const v of draining) {
      const why = blocked(v);
      if (why) {
        waiting.push({ vip: v.name, reason: `${v.owner} is in maintenance but ${v.name} is ${why}` });
        continue;
      }
      if (eligible.length === 0) {
        waiting.push({ vip: v.name, reason: `${v.owner} is in maintenance and no appliance is up to take ${v.name}` });
        continue;
      }
      if (budget <= 0) {
        waiting.push({ vip: v.name, reason: `${v.owner} is in maintenance; ${settings.maxConcurrent} migrations at once already` });
        continue;
      }
      let best = eligible[0]!;
      for (const t of eligible) if ((load[t]! + v.load) / capacity[t]! < (load[best]! + v.load) / capacity[best]!) best = t;
      move(v, index.get(v.owner)!, best, 'drain', `${v.owner} is in maintenance; ${apps[best]!.name} is the least loaded with it`);
    }
    for (const v of input.vips) {
      if (!apps[index.get(v.owner)!]!.up) waiting.push({ vip: v.name, reason: `${v.owner} is down: failover moves ${v.name}` });
    }

    // 2. Rebalance: movable VIPs of each appliance, by load ascending (for the binary search).
    const moved = new Set(moves.map((m) => m.vip));
    const movable: VipState[][] = apps.map(() => []);
    for (const v of input.vips) {
      const i = index.get(v.owner)!;
      if (!moved.has(v.name) && apps[i]!.up && !apps[i]!.maintenance && !blocked(v)) movable[i]!.push(v);
    }
    for (const list of movable) list.sort((x, y) => x.load - y.load || x.name.localeCompare(y.name));

    // An appliance no single move can relieve (say it carries one VIP bigger than a fair share)
    // is set aside and the rest are balanced among themselves: it stays the busiest, so the
    // peak is as low as it gets, and the others still get even.
    let aside = 0;
    if (eligible.length < 2) notes.push('fewer than two appliances up and out of maintenance: nothing to balance');
    else if (imbalanceBefore <= settings.threshold) notes.push(`imbalance ${pct(imbalanceBefore)} within the threshold ${pct(settings.threshold)}`);
    while (eligible.length - aside >= 2) {
      const { imbalance, busiest } = measure(false);
      if (imbalance <= settings.threshold) {
        if (moves.some((m) => m.reason === 'rebalance')) notes.push(`imbalance ${pct(imbalance)}${aside ? ' among the others' : ''} now within the threshold ${pct(settings.threshold)}`);
        break;
      }
      if (budget <= 0) {
        notes.push(`stopped at ${settings.maxConcurrent} migrations at once; imbalance still ${pct(imbalance)}${aside ? ' among the others' : ''}`);
        break;
      }
      const best = bestMove(busiest, movable[busiest]!, eligible, load, capacity);
      if (!best) {
        stuck[busiest] = 1;
        aside++;
        continue;
      }
      const fromShare = shareOf(busiest);
      const toShare = shareOf(best.to);
      move(best.vip, busiest, best.to, 'rebalance', `${apps[busiest]!.name} is the busiest${aside ? ' of those a move can relieve' : ''} (${fromShare} the balanced load); ${apps[best.to]!.name} is at ${toShare}`);
      const list = movable[busiest]!;
      list.splice(list.indexOf(best.vip), 1);
      // Only two loads changed: the target may now need relief itself, and a set-aside appliance
      // may now have a move to the source, which got lighter.
      if (stuck[best.to]) (stuck[best.to] = 0), aside--;
      for (const i of eligible) if (stuck[i] && bestMove(i, movable[i]!, [busiest], load, capacity)) (stuck[i] = 0), aside--;
    }
    if (aside > 0) {
      const names = eligible.filter((i) => stuck[i]).map((i) => `${apps[i]!.name} (${shareOf(i)})`);
      notes.push(`no single move relieves ${names.join(', ')} (load as a multiple of the balanced load): their movable VIPs are too large or none are left`);
    }

    return {
      algorithm: this.name,
      moves,
      loads: Object.fromEntries(apps.map((a, i) => [a.name, { before: round(before[i]!), after: round(rel(i)) }])),
      imbalance: { before: round(imbalanceBefore), after: round(measure(true).imbalance) },
      waiting,
      notes,
    };
  }
}

/**
 * The move off `from` that leaves max(load of from, load of target) lowest; only moves that
 * put the target below `from`'s present load count. For a target, the best VIP load is the
 * one that would equalise the pair, so only its two neighbours in the sorted list are tried.
 * Ties (the source stays the peak): the target left lightest, then the smaller move.
 */
function bestMove(from: number, candidates: VipState[], targets: readonly number[], load: Float64Array, capacity: Float64Array): { vip: VipState; to: number } | undefined {
  if (candidates.length === 0) return undefined;
  const cFrom = capacity[from]!;
  const rFrom = load[from]! / cFrom;
  let best: { vip: VipState; to: number; peak: number; landed: number } | undefined;
  for (const to of targets) {
    if (to === from) continue;
    const cTo = capacity[to]!;
    const rTo = load[to]! / cTo;
    if (rTo >= rFrom) continue;
    const ideal = (rFrom - rTo) / (1 / cFrom + 1 / cTo);
    // first index with load ≥ ideal
    let lo = 0;
    let hi = candidates.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (candidates[mid]!.load < ideal) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo - 1; i <= lo; i++) {
      const v = candidates[i];
      if (!v || v.load === 0) continue;
      const landed = rTo + v.load / cTo;
      const peak = Math.max(rFrom - v.load / cFrom, landed);
      if (peak >= rFrom) continue;
      if (!best || peak < best.peak || (peak === best.peak && (landed < best.landed || (landed === best.landed && (v.load < best.vip.load || (v.load === best.vip.load && to < best.to)))))) {
        best = { vip: v, to, peak, landed };
      }
    }
  }
  return best;
}

/** Each configurable algorithm's implementation. */
export const algorithms: Record<AssignmentAlgorithmName, () => AssignmentAlgorithm> = {
  'min-max-load': () => new MinMaxLoad(),
};
