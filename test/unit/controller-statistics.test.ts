/** Statistics derivation (statistics.ts) and the plan the controller shows ((await controller.plan())). */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Controller, type ApplianceAgent } from '../../src/controller/controller.js';
import { controllerConfigSchema, type ControllerConfigInput } from '../../src/config/controller.js';
import { SqliteStore } from '../../src/controller/sqlite-store.js';
import { TrafficMeter, rates, type ApplianceSample } from '../../src/controller/statistics.js';
import { ModelSite } from './controller-model.js';

const sample = (appliance: string, at: number, vips: ApplianceSample['vips']): ApplianceSample => ({ appliance, at, vips });
const c = (packets: number, bytes: number, newConnections: number, entries: number) => ({ packets, bytes, newConnections, entries });

describe('traffic statistics', () => {
  it('derives per-second rates and refuses a counter that went backwards', () => {
    expect(rates(c(100, 1000, 5, 0), c(600, 6000, 15, 0), 2)).toEqual({ packetsPerSecond: 250, bytesPerSecond: 2500, newConnectionsPerSecond: 5 });
    expect(rates(c(100, 1000, 5, 0), c(50, 6000, 15, 0), 2)).toBeNull();
    expect(rates(c(0, 0, 0, 0), c(1, 1, 1, 0), 0)).toBeNull();
  });

  it('needs two samples, sums a VIP over the appliances it passes (a migration), and counts entries once', () => {
    const meter = new TrafficMeter('packets', 1);
    expect(meter.update([sample('lb1', 0, { vip1: c(0, 0, 0, 10) }), sample('lb2', 0, { vip1: c(500, 0, 0, 0) })])).toEqual([]);
    // vip1 moved from lb1 to lb2 during this second: 300 packets on lb1, 200 on lb2; entries now on lb2.
    const [m] = meter.update([sample('lb1', 1000, { vip1: c(300, 30_000, 4, 0) }), sample('lb2', 1000, { vip1: c(700, 20_000, 0, 10) })]);
    expect(m).toEqual({ name: 'vip1', traffic: { packetsPerSecond: 500, bytesPerSecond: 50_000, newConnectionsPerSecond: 4, connections: 10 }, load: 500 });
  });

  it('a restarted appliance (counters back to zero) gives no rate that round; smoothing weighs the newest measurement', () => {
    const meter = new TrafficMeter('newConnections', 0.5);
    meter.update([sample('lb1', 0, { v: c(1000, 0, 100, 0) })]);
    expect(meter.update([sample('lb1', 1000, { v: c(2000, 0, 200, 0) })])[0]?.load).toBe(100);
    expect(meter.update([sample('lb1', 2000, { v: c(10, 0, 1, 0) })])).toEqual([]);
    expect(meter.update([sample('lb1', 3000, { v: c(20, 0, 301, 0) })])[0]?.load).toBe(200); // 0.5 × 300 + 0.5 × 100
    expect(() => new TrafficMeter('packets', 0)).toThrow(/smoothing/);
  });
});

describe('the plan the controller shows', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'vipshift-plan-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function setup(extra: Partial<ControllerConfigInput> = {}) {
    const site = new ModelSite(['lb1', 'lb2', 'lb3'], [
      { name: 'vip1', owner: 'lb1', connections: 10 },
      { name: 'vip2', owner: 'lb1', connections: 10 },
      { name: 'vip3', owner: 'lb2', connections: 10 },
    ]);
    let now = 1_000_000;
    const config = controllerConfigSchema.parse({
      controller: 'ctl',
      api: { listen: '127.0.0.1:0' },
      journal: join(dir, 'c.sqlite'),
      appliances: site.appliances.map((name) => ({ name, api: `http://${name}.model` })),
      vips: [
        { name: 'vip1', owner: 'lb1' },
        { name: 'vip2', owner: 'lb1' },
        { name: 'vip3', owner: 'lb2' },
      ],
      statistics: { intervalSeconds: 1, downAfterPolls: 2, smoothing: 1 },
      rebalance: { mode: 'manual', threshold: 0.2, coolDownSeconds: 60, intervalSeconds: 1, maxConcurrent: 1, minLoad: 50 },
      ...extra,
    });
    const agents = new Map<string, ApplianceAgent>(site.appliances.map((a) => [a, site.agent(a)]));
    const journal = new SqliteStore(config.journal);
    const controller = new Controller(config, agents, journal, pino({ level: 'silent' }), { now: () => now });
    /** One second of traffic (packets per VIP), then a poll. */
    const second = async (traffic: Record<string, number>) => {
      for (const [vip, packets] of Object.entries(traffic)) site.send(vip, packets);
      now += 1000;
      await controller.poll();
    };
    return { site, controller, journal, second, advance: (ms: number) => (now += ms) };
  }

  it('explains a rebalancing move with loads before and after, and carries nothing out when idle', async () => {
    const { controller, second } = setup();
    await controller.open();
    await second({});
    await second({ vip1: 10, vip2: 10 });
    expect((await controller.plan()).holdingBack).toMatch(/nearly idle \(total load 20\.0 < rebalance\.minLoad 50 packets\/s\)/);

    await second({ vip1: 600, vip2: 400, vip3: 100 });
    const plan = (await controller.plan());
    expect(plan.holdingBack).toBeUndefined();
    expect(plan.mode).toBe('manual');
    expect(plan.moves).toHaveLength(1);
    const [move] = plan.moves;
    expect(move).toMatchObject({ vip: 'vip2', from: 'lb1', to: 'lb3', reason: 'rebalance', load: 400 });
    expect(move!.loads).toEqual({ lb1: { before: 1000, after: 600 }, lb3: { before: 0, after: 400 } });
    expect(move!.why).toBe('lb1 is the busiest (2.73× the balanced load); lb3 is at 0.00×');
    expect(plan.loads.lb1).toEqual({ before: 1000, after: 600 });
  });

  it('never plans to an appliance that missed downAfterPolls polls, and drains one in maintenance', async () => {
    const { site, controller, second } = setup();
    await controller.open();
    await second({});
    site.down.add('lb3');
    await second({ vip1: 600, vip2: 400, vip3: 100 });
    expect((await controller.plan()).moves.map((m) => m.to)).toEqual(['lb3']); // one missed poll: not down yet
    await second({ vip1: 600, vip2: 400, vip3: 100 });
    const plan = (await controller.plan());
    expect(plan.input.appliances.find((a) => a.name === 'lb3')?.up).toBe(false);
    expect(plan.moves.map((m) => `${m.vip}→${m.to}`)).toEqual(['vip2→lb2']);

    await controller.setMaintenance('lb2', true);
    const drain = (await controller.plan());
    expect(drain.moves.map((m) => `${m.vip}→${m.to} ${m.reason}`)).toEqual(['vip3→lb1 drain']);
    expect(drain.moves[0]!.why).toMatch(/lb2 is in maintenance/);
  });

  it('auto mode carries the plan out once, then the cool-down and the balance keep it still', async () => {
    const { site, controller, journal, second, advance } = setup({ rebalance: { mode: 'auto', threshold: 0.2, coolDownSeconds: 60, intervalSeconds: 1, maxConcurrent: 1, minLoad: 50 } });
    await controller.open();
    await second({});
    await second({ vip1: 600, vip2: 600, vip3: 0 });
    await controller.rebalanceOnce();
    await controller.idle();
    const moved = (await journal.history()).filter((m) => m.state === 'done');
    expect(moved).toHaveLength(1);
    expect(moved[0]).toMatchObject({ reason: 'rebalance', source: 'lb1' });
    // Many more rounds of the same load: nothing more moves (no flapping).
    for (let i = 0; i < 20; i++) {
      await second({ vip1: 600, vip2: 600, vip3: 0 });
      await controller.rebalanceOnce();
      await controller.idle();
      advance(5000);
    }
    expect(await journal.history()).toHaveLength(1);
    expect(site.resets).toBe(0);
  });

  it('pins and the operator\'s refusals name the field', async () => {
    const { controller } = setup();
    await controller.open();
    await controller.setPinned('vip1', true);
    await expect(controller.start('vip1', 'lb2')).rejects.toThrow(/vip1 is pinned to lb1/);
    await controller.setMaintenance('lb3', true);
    await expect(controller.start('vip2', 'lb3')).rejects.toThrow(/lb3 is in maintenance/);
    await expect(controller.setPinned('nope', true)).rejects.toThrow(/no VIP named 'nope'/);
    await expect(controller.setMaintenance('lb9', true)).rejects.toThrow(/no appliance named 'lb9'/);
  });

  it('drain moves every VIP off an appliance but the pinned one, which it names', async () => {
    const { site, controller, second } = setup();
    await controller.open();
    await second({});
    await second({ vip1: 100, vip2: 100, vip3: 100 });
    await controller.setPinned('vip2', true);
    const result = await controller.drain('lb1');
    expect(result.migrations.map((m) => `${m.vip} ${m.from}→${m.to} ${m.state}`)).toEqual(['vip1 lb1→lb3 done']);
    expect(result.remaining).toEqual(['vip2']);
    expect(result.waiting).toEqual([{ vip: 'vip2', reason: 'lb1 is in maintenance but vip2 is pinned' }]);
    expect(site.owners('vip1')).toEqual(['lb3']);
    await controller.setPinned('vip2', false);
    const again = await controller.drain('lb1');
    expect(again.remaining).toEqual([]);
    expect(site.resets).toBe(0);
  });
});
