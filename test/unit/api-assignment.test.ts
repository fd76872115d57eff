/** The default assignment algorithm: examples, then properties over seeded random clusters. */
import { describe, expect, it } from 'vitest';
import { MinMaxLoad, algorithms } from '../../src/controller/assignment.js';
import type { ApplianceState, AssignmentInput, AssignmentSettings, Plan, VipState } from '../../src/controller/assignment.js';
import { prng, randomCluster } from '../support/workload.js';

const NOW = 1_700_000_000_000;
const settings = (s: Partial<AssignmentSettings> = {}): AssignmentSettings => ({ threshold: 0.1, coolDownSeconds: 300, maxConcurrent: 4, now: NOW, ...s });
const appliance = (name: string, a: Partial<ApplianceState> = {}): ApplianceState => ({ name, capacity: 1, up: true, maintenance: false, ...a });
const vip = (name: string, owner: string, load: number, v: Partial<VipState> = {}): VipState => ({ name, owner, load, pinned: false, lastMovedAt: null, ...v });
const plan = (input: AssignmentInput): Plan => new MinMaxLoad().plan(input);

describe('min-max-load', () => {
  it('moves one of two busy VIPs to the idle appliance and says why', () => {
    const p = plan({ appliances: [appliance('lb1'), appliance('lb2')], vips: [vip('vip1', 'lb1', 100), vip('vip2', 'lb1', 100), vip('vip3', 'lb2', 0)], settings: settings() });
    expect(p.moves).toHaveLength(1);
    const [m] = p.moves;
    expect([m!.vip, m!.from, m!.to, m!.reason]).toEqual(['vip1', 'lb1', 'lb2', 'rebalance']);
    expect(m!.loads).toEqual({ lb1: { before: 200, after: 100 }, lb2: { before: 0, after: 100 } });
    expect(p.imbalance).toEqual({ before: 1, after: 0 });
    expect(p.loads.lb1).toEqual({ before: 200, after: 100 });
    expect(m!.why).toMatch(/lb1 is the busiest/);
  });

  it('does nothing while the imbalance is within the threshold', () => {
    const p = plan({ appliances: [appliance('lb1'), appliance('lb2')], vips: [vip('vip1', 'lb1', 105), vip('vip2', 'lb2', 95), vip('vip3', 'lb1', 5)], settings: settings({ threshold: 0.15 }) });
    expect(p.moves).toEqual([]);
    expect(p.notes.join()).toMatch(/within the threshold/);
  });

  it('balances relative to capacity', () => {
    const vips = ['a', 'b', 'c', 'd'].map((n) => vip(n, 'lb1', 10));
    const p = plan({ appliances: [appliance('lb1'), appliance('lb2', { capacity: 3 })], vips, settings: settings({ threshold: 0 }) });
    expect(p.moves.map((m) => m.to)).toEqual(['lb2', 'lb2', 'lb2']);
    expect(p.loads.lb1!.after).toBe(10);
    expect(p.loads.lb2!.after).toBe(10);
  });

  it('never moves a pinned, cooling-down or migrating VIP', () => {
    const vips = [
      vip('pinned', 'lb1', 100, { pinned: true }),
      vip('recent', 'lb1', 100, { lastMovedAt: NOW - 60_000 }),
      vip('busy', 'lb1', 100, { migrating: true }),
    ];
    const p = plan({ appliances: [appliance('lb1'), appliance('lb2')], vips, settings: settings() });
    expect(p.moves).toEqual([]);
    expect(p.notes.join()).toMatch(/no single move relieves lb1/);
    // once the cool-down is over, the recent one may go
    const later = plan({ appliances: [appliance('lb1'), appliance('lb2')], vips, settings: settings({ now: NOW + 241_000 }) });
    expect(later.moves.map((m) => m.vip)).toEqual(['recent']);
  });

  it('sets aside an appliance no move can relieve and balances the others', () => {
    const vips = [vip('giant', 'lb1', 1000), vip('tag', 'lb1', 10), vip('a', 'lb2', 60), vip('b', 'lb2', 50), vip('c', 'lb2', 40), vip('d', 'lb3', 10)];
    const p = plan({ appliances: ['lb1', 'lb2', 'lb3'].map((n) => appliance(n)), vips, settings: settings({ threshold: 0.1 }) });
    expect(p.moves.map((m) => [m.vip, m.from, m.to])).toEqual([
      ['tag', 'lb1', 'lb3'],
      ['a', 'lb2', 'lb3'],
    ]);
    expect(p.loads).toEqual({ lb1: { before: 1010, after: 1000 }, lb2: { before: 150, after: 90 }, lb3: { before: 10, after: 80 } });
    expect(p.notes.join()).toMatch(/no single move relieves lb1 \(2\.56×\)/);
    expect(p.notes.join()).toMatch(/among the others now within the threshold/);
  });

  it('plans no more than maxConcurrent migrations, counting those under way', () => {
    const vips = Array.from({ length: 10 }, (_, i) => vip(`vip${i}`, 'lb1', 10));
    const appliances = ['lb1', 'lb2', 'lb3', 'lb4'].map((n) => appliance(n));
    expect(plan({ appliances, vips, settings: settings({ maxConcurrent: 2 }) }).moves).toHaveLength(2);
    vips[0]!.migrating = true;
    const p = plan({ appliances, vips, settings: settings({ maxConcurrent: 2 }) });
    expect(p.moves).toHaveLength(1);
    expect(p.notes.join()).toMatch(/2 migrations at once/);
  });

  it('drains an appliance in maintenance, largest VIPs first, and gives it nothing', () => {
    const vips = [vip('big', 'lb1', 50), vip('small', 'lb1', 5), vip('pin', 'lb1', 1, { pinned: true }), vip('other', 'lb2', 40), vip('x', 'lb3', 1)];
    const p = plan({ appliances: [appliance('lb1', { maintenance: true }), appliance('lb2'), appliance('lb3')], vips, settings: settings({ threshold: 10 }) });
    expect(p.moves.map((m) => [m.vip, m.to, m.reason])).toEqual([
      ['big', 'lb3', 'drain'],
      ['small', 'lb2', 'drain'],
    ]);
    expect(p.waiting).toEqual([{ vip: 'pin', reason: 'lb1 is in maintenance but pin is pinned' }]);
  });

  it('never moves to a down appliance and leaves the VIPs of a down one to failover', () => {
    const vips = [vip('a', 'lb1', 100), vip('b', 'lb1', 100), vip('c', 'lb3', 100)];
    const p = plan({ appliances: [appliance('lb1'), appliance('lb2', { up: false }), appliance('lb3', { up: false })], vips, settings: settings() });
    expect(p.moves).toEqual([]);
    expect(p.waiting).toEqual([{ vip: 'c', reason: 'lb3 is down: failover moves c' }]);
  });

  it('names the wrong field of a bad input', () => {
    const bad = (input: Partial<AssignmentInput>) => () => plan({ appliances: [appliance('lb1')], vips: [], settings: settings(), ...input });
    expect(bad({ vips: [vip('a', 'lb9', 1)] })).toThrow(/vips\[0\]\.owner: unknown appliance 'lb9'/);
    expect(bad({ appliances: [appliance('lb1', { capacity: 0 })] })).toThrow(/appliances\[0\]\.capacity/);
    expect(bad({ vips: [vip('a', 'lb1', Number.NaN)] })).toThrow(/vips\[0\]\.load/);
    expect(bad({ settings: settings({ maxConcurrent: -1 }) })).toThrow(/settings\.maxConcurrent/);
  });

  it('is registered under its name', () => {
    expect(algorithms['min-max-load']!().name).toBe('min-max-load');
  });
});

describe('properties over random clusters', () => {
  /** A random cluster with random pins, cool-downs, migrations, down and maintenance appliances. */
  function randomInput(seed: number): AssignmentInput {
    const random = prng(seed);
    const { appliances, vips } = randomCluster(
      { appliances: 2 + Math.floor(random() * 10), vips: 1 + Math.floor(random() * 80), zipf: random() * 1.5, capacities: [1, 1, 2, 4], uniformOwners: random() < 0.5 },
      random,
    );
    for (const a of appliances) {
      a.up = random() > 0.15;
      a.maintenance = random() < 0.1;
    }
    for (const v of vips) {
      v.pinned = random() < 0.1;
      v.lastMovedAt = random() < 0.2 ? NOW - Math.floor(random() * 600_000) : null;
      v.migrating = random() < 0.03;
    }
    return { appliances, vips, settings: settings({ threshold: random() * 0.3, maxConcurrent: Math.floor(random() * 12), coolDownSeconds: 300 }) };
  }

  const seeds = Array.from({ length: 400 }, (_, i) => 1000 + i);
  const rel = (input: AssignmentInput, owners: Map<string, string>) => {
    const load = new Map(input.appliances.map((a) => [a.name, 0]));
    for (const v of input.vips) load.set(owners.get(v.name)!, load.get(owners.get(v.name)!)! + v.load);
    return new Map(input.appliances.map((a) => [a.name, load.get(a.name)! / a.capacity]));
  };

  it.each(seeds)('seed %i: respects pins, cool-down, budget, down and maintenance appliances', (seed) => {
    const input = randomInput(seed);
    const p = plan(input);
    const apps = new Map(input.appliances.map((a) => [a.name, a]));
    const vips = new Map(input.vips.map((v) => [v.name, v]));
    const underWay = input.vips.filter((v) => v.migrating).length;
    expect(p.moves.length).toBeLessThanOrEqual(Math.max(0, input.settings.maxConcurrent - underWay));
    expect(new Set(p.moves.map((m) => m.vip)).size).toBe(p.moves.length);
    for (const m of p.moves) {
      const v = vips.get(m.vip)!;
      expect(v.owner).toBe(m.from);
      expect(v.pinned).toBe(false);
      expect(v.migrating ?? false).toBe(false);
      if (v.lastMovedAt !== null) expect(input.settings.now - v.lastMovedAt).toBeGreaterThanOrEqual(input.settings.coolDownSeconds * 1000);
      expect(apps.get(m.to)!.up && !apps.get(m.to)!.maintenance).toBe(true);
      expect(apps.get(m.from)!.up).toBe(true);
      if (m.reason === 'rebalance') {
        expect(apps.get(m.from)!.maintenance).toBe(false);
        // the target ends below where the source was: the pair's peak went down
        expect(m.loads[m.to]!.after).toBeLessThan(m.loads[m.from]!.before);
      }
    }
    // the plan's loads are those of the VIPs where the plan puts them
    const owners = new Map(input.vips.map((v) => [v.name, v.owner]));
    for (const m of p.moves) owners.set(m.vip, m.to);
    const after = rel(input, owners);
    for (const [name, r] of after) expect(p.loads[name]!.after).toBeCloseTo(r, 3);
  });

  it.each(seeds)('seed %i: never leaves the busiest appliance busier, and stops only when it must', (seed) => {
    const input = randomInput(seed);
    for (const a of input.appliances) a.maintenance = false; // drains may raise the peak on purpose
    const p = plan(input);
    const live = input.appliances.filter((a) => a.up).map((a) => a.name);
    const peak = (which: 'before' | 'after') => Math.max(0, ...live.map((a) => p.loads[a]![which]));
    expect(peak('after')).toBeLessThanOrEqual(peak('before') + 1e-9);
    const budgetLeft = input.settings.maxConcurrent - input.vips.filter((v) => v.migrating).length - p.moves.length;
    if (budgetLeft <= 0) return;
    // The plan ends balanced except for its busiest k appliances, none of which any single move
    // of a movable VIP could relieve.
    const eligible = input.appliances.filter((a) => a.up && !a.maintenance).sort((a, b) => p.loads[b.name]!.after - p.loads[a.name]!.after);
    const imbalance = (among: ApplianceState[]) => {
      const total = among.reduce((x, a) => x + p.loads[a.name]!.after * a.capacity, 0);
      const cap = among.reduce((x, a) => x + a.capacity, 0);
      return total === 0 ? 0 : Math.max(...among.map((a) => p.loads[a.name]!.after)) / (total / cap) - 1;
    };
    let k = 0;
    while (eligible.length - k >= 2 && imbalance(eligible.slice(k)) > input.settings.threshold + 1e-9) k++;
    const moved = new Set(p.moves.map((m) => m.vip));
    for (const busy of eligible.slice(0, k)) {
      for (const v of input.vips) {
        if (v.owner !== busy.name || moved.has(v.name) || v.pinned || v.migrating || v.load === 0) continue;
        if (v.lastMovedAt !== null && NOW - v.lastMovedAt < 300_000) continue;
        for (const t of eligible) {
          if (t === busy) continue;
          expect(p.loads[t.name]!.after + v.load / t.capacity).toBeGreaterThanOrEqual(p.loads[busy.name]!.after - 1e-6);
        }
      }
    }
  });

  it('gives the same plan for the same input', () => {
    const input = randomInput(7);
    expect(plan(structuredClone(input))).toEqual(plan(structuredClone(input)));
  });
});
