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
const num = (x: number) => (Math.abs(x) >= 100 ? x.toFixed(0) : x.toPrecision(3));

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
 */
export class MinMaxLoad implements AssignmentAlgorithm {
  readonly name = 'min-max-load';

  plan(input: AssignmentInput): Plan {
    validateInput(input);
    const { settings } = input;
    const capacity = new Map(input.appliances.map((a) => [a.name, a.capacity]));
    const load = new Map(input.appliances.map((a) => [a.name, 0]));
    for (const v of input.vips) load.set(v.owner, load.get(v.owner)! + v.load);
    const rel = (a: string) => load.get(a)! / capacity.get(a)!;
    const before = new Map(input.appliances.map((a) => [a.name, rel(a.name)]));

    const byName = new Map(input.appliances.map((a) => [a.name, a]));
    /** Up and out of maintenance: may take VIPs, and are what we balance. */
    const eligible = input.appliances.filter((a) => a.up && !a.maintenance).map((a) => a.name);
    const imbalance = (among: readonly string[] = eligible): number => {
      let total = 0;
      let cap = 0;
      let max = 0;
      for (const a of among) {
        total += load.get(a)!;
        cap += capacity.get(a)!;
        max = Math.max(max, rel(a));
      }
      return total === 0 ? 0 : max / (total / cap) - 1;
    };
    const imbalanceBefore = imbalance();
    /** How far an appliance is above the perfectly balanced load of the eligible ones (0.25 = 25 %). */
    const overShare = (a: string): number => {
      let total = 0;
      let cap = 0;
      for (const e of eligible) {
        total += load.get(e)!;
        cap += capacity.get(e)!;
      }
      return total === 0 ? 0 : rel(a) / (total / cap) - 1;
    };

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
    const move = (v: VipState, to: string, reason: PlannedMove['reason'], why: string) => {
      const from = v.owner;
      const loads: Record<string, LoadChange> = { [from]: { before: round(rel(from)), after: 0 }, [to]: { before: round(rel(to)), after: 0 } };
      load.set(from, load.get(from)! - v.load);
      load.set(to, load.get(to)! + v.load);
      loads[from]!.after = round(rel(from));
      loads[to]!.after = round(rel(to));
      moves.push({ vip: v.name, from, to, load: v.load, reason, loads, why });
      budget--;
    };

    // 1. Drain.
    const draining = input.vips
      .filter((v) => byName.get(v.owner)!.maintenance && byName.get(v.owner)!.up)
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
      for (const t of eligible) {
        const after = (load.get(t)! + v.load) / capacity.get(t)!;
        const bestAfter = (load.get(best)! + v.load) / capacity.get(best)!;
        if (after < bestAfter || (after === bestAfter && t < best)) best = t;
      }
      move(v, best, 'drain', `${v.owner} is in maintenance; ${best} is the least loaded with it`);
    }
    for (const v of input.vips) {
      if (!byName.get(v.owner)!.up) waiting.push({ vip: v.name, reason: `${v.owner} is down: failover moves ${v.name}` });
    }

    // 2. Rebalance: movable VIPs of each appliance, by load ascending (for the binary search).
    const moved = new Set(moves.map((m) => m.vip));
    const movable = new Map<string, VipState[]>(eligible.map((a) => [a, []]));
    for (const v of input.vips) {
      if (!moved.has(v.name) && movable.has(v.owner) && !blocked(v)) movable.get(v.owner)!.push(v);
    }
    for (const list of movable.values()) list.sort((x, y) => x.load - y.load || x.name.localeCompare(y.name));

    // An appliance no single move can relieve (say it carries one VIP bigger than a fair share)
    // is set aside and the rest are balanced among themselves: it stays the busiest, so the
    // peak is as low as it gets, and the others still get even.
    const stuck = new Set<string>();
    const rest = () => eligible.filter((a) => !stuck.has(a));
    if (eligible.length < 2) notes.push('fewer than two appliances up and out of maintenance: nothing to balance');
    else if (imbalance() <= settings.threshold) notes.push(`imbalance ${pct(imbalance())} within the threshold ${pct(settings.threshold)}`);
    for (let among = rest(); eligible.length >= 2 && among.length >= 2 && imbalance(among) > settings.threshold; among = rest()) {
      if (budget <= 0) {
        notes.push(`stopped at ${settings.maxConcurrent} migrations at once; imbalance still ${pct(imbalance(among))}${stuck.size ? ' among the others' : ''}`);
        break;
      }
      let busiest = among[0]!;
      for (const a of among) if (rel(a) > rel(busiest) || (rel(a) === rel(busiest) && a < busiest)) busiest = a;
      const best = this.bestMove(busiest, movable.get(busiest)!, eligible, load, capacity);
      if (!best) {
        stuck.add(busiest);
        continue;
      }
      const from = busiest;
      // Loads are in the site's unit (packets/s...) per unit of capacity; "over its share" is
      // relative to the perfectly balanced load.
      const why = `${from} is the busiest${stuck.size ? ' of those that can be relieved' : ''} (load ${num(rel(from))}, ${pct(overShare(from))} over its share); ${best.to} is at ${num(rel(best.to))}`;
      move(best.vip, best.to, 'rebalance', why);
      const list = movable.get(from)!;
      list.splice(list.indexOf(best.vip), 1);
      // Only two loads changed: the target may now need relief itself, and a set-aside appliance
      // may now have a move to the source, which got lighter.
      stuck.delete(best.to);
      for (const a of stuck) if (this.bestMove(a, movable.get(a)!, [from], load, capacity)) stuck.delete(a);
    }
    const among = rest();
    if (stuck.size > 0) {
      notes.push(`no single move relieves ${[...stuck].sort().map((a) => `${a} (load ${num(rel(a))}, ${pct(overShare(a))} over its share)`).join(', ')}: their movable VIPs are too large or none are left`);
    }
    if (moves.some((m) => m.reason === 'rebalance') && among.length >= 2 && imbalance(among) <= settings.threshold) {
      notes.push(`imbalance ${pct(imbalance(among))}${stuck.size ? ' among the others' : ''} now within the threshold ${pct(settings.threshold)}`);
    }

    const after = new Map(input.appliances.map((a) => [a.name, rel(a.name)]));
    return {
      algorithm: this.name,
      moves,
      loads: Object.fromEntries(input.appliances.map((a) => [a.name, { before: round(before.get(a.name)!), after: round(after.get(a.name)!) }])),
      imbalance: { before: round(imbalanceBefore), after: round(imbalance()) },
      waiting,
      notes,
    };
  }

  /**
   * The move off `from` that leaves max(load of from, load of target) lowest; only moves that
   * put the target below `from`'s present load count. For a target, the best VIP load is the
   * one that would equalise the pair, so only its two neighbours in the sorted list are tried.
   */
  private bestMove(
    from: string,
    candidates: VipState[],
    targets: string[],
    load: Map<string, number>,
    capacity: Map<string, number>,
  ): { vip: VipState; to: string } | undefined {
    if (candidates.length === 0) return undefined;
    const cFrom = capacity.get(from)!;
    const rFrom = load.get(from)! / cFrom;
    let best: { vip: VipState; to: string; peak: number; landed: number } | undefined;
    for (const to of targets) {
      if (to === from) continue;
      const cTo = capacity.get(to)!;
      const rTo = load.get(to)! / cTo;
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
      for (const i of [lo - 1, lo]) {
        const v = candidates[i];
        if (!v || v.load === 0) continue;
        const landed = rTo + v.load / cTo;
        const peak = Math.max(rFrom - v.load / cFrom, landed);
        if (peak >= rFrom) continue;
        // ties (the source stays the peak): the target left lightest, then the smaller move
        if (!best || peak < best.peak || (peak === best.peak && (landed < best.landed || (landed === best.landed && (v.load < best.vip.load || (v.load === best.vip.load && to < best.to)))))) {
          best = { vip: v, to, peak, landed };
        }
      }
    }
    return best;
  }
}

/** The algorithms a controller can be configured with (`assignment: min-max-load`). */
export const algorithms: Record<string, () => AssignmentAlgorithm> = {
  'min-max-load': () => new MinMaxLoad(),
};
