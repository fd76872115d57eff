/**
 * The migration journal and the recovery of a controller killed in the middle of each step,
 * against a model of the appliances (controller-model.ts). A "kill" leaves the first
 * controller frozen for ever inside the step (its pause hook never returns); a second one
 * opens the same database file, as a restarted process would.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Controller, pauseFromEnv, type ApplianceAgent } from '../../src/controller/controller.js';
import { controllerConfigSchema } from '../../src/config/controller.js';
import { SqliteStore } from '../../src/controller/sqlite-store.js';
import { PHASES, type Phase } from '../../src/migration/migration.js';
import { ModelSite } from './controller-model.js';

const logger = pino({ level: 'silent' });
let dir: string;
let path: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'vipshift-journal-'));
  path = join(dir, 'controller.sqlite');
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const config = (journal: string) =>
  controllerConfigSchema.parse({
    controller: 'ctl',
    api: { listen: '127.0.0.1:0' },
    journal,
    appliances: [
      { name: 'lb1', api: 'http://lb1.model' },
      { name: 'lb2', api: 'http://lb2.model' },
    ],
    vips: [
      { name: 'vip1', owner: 'lb1' },
      { name: 'vip2', owner: 'lb1' },
    ],
    rebalance: { mode: 'manual' },
  });

function controllerOn(site: ModelSite, pause?: (step: Phase) => Promise<void>) {
  const agents = new Map<string, ApplianceAgent>(site.appliances.map((a) => [a, site.agent(a)]));
  const journal = new SqliteStore(path);
  return { controller: new Controller(config(path), agents, journal, logger, pause ? { pause } : {}), journal, agents };
}

describe('journal', () => {
  it('creates its schema, keeps owners across a reopen, and refuses a newer schema', async () => {
    const j = new SqliteStore(path);
    expect(await j.schemaVersion()).toBe(1);
    await j.syncConfiguration([{ name: 'lb1', api: 'http://a', capacity: 1 }, { name: 'lb2', api: 'http://b', capacity: 2 }], [{ name: 'vip1', owner: 'lb1' }]);
    await j.begin({ id: 'm1', vip: 'vip1', source: 'lb1', target: 'lb2', reason: 'operator' });
    await j.step('m1', 'prepare');
    await expect(j.begin({ id: 'm2', vip: 'vip1', source: 'lb1', target: 'lb2', reason: 'operator' })).rejects.toThrow(/UNIQUE/);
    await j.step('m1', 'move_address');
    await j.step('m1', 'move_entries');
    await j.commit('m1'); // step 4's record too
    await j.end('m1', { state: 'done' });
    await j.close();

    const again = new SqliteStore(path);
    // The configuration's initial owner does not override what the journal recorded.
    await again.syncConfiguration([{ name: 'lb1', api: 'http://a', capacity: 1 }, { name: 'lb2', api: 'http://b', capacity: 3 }], [{ name: 'vip1', owner: 'lb1' }]);
    expect((await again.owners()).get('vip1')).toBe('lb2');
    expect((await again.appliances()).find((a) => a.name === 'lb2')?.capacity).toBe(3);
    expect((await again.events('m1')).map((e) => `${e.event}${e.step ? ` ${e.step}` : ''}`)).toEqual([
      'begin',
      'step prepare',
      'step move_address',
      'step move_entries',
      'commit move_entries',
      'end activate',
    ]);
    await again.close();

    const raw = new Database(path);
    raw.prepare('UPDATE schema_version SET version = 99').run();
    raw.close();
    expect(() => new SqliteStore(path)).toThrow(/schema version 99 is newer/);
  });

  it('parses the pause hook strictly and only when set', () => {
    expect(pauseFromEnv(undefined)).toBeUndefined();
    expect(pauseFromEnv('move_entries:10')).toBeTypeOf('function');
    expect(() => pauseFromEnv('move-entries')).toThrow(/VIPSHIFT_TEST_PAUSE_STEP=move-entries: expected STEP\[:MS\]/);
    expect(() => pauseFromEnv('activate:soon')).toThrow(/expected/);
  });

  it('ends a pause early on SIGUSR2, and outlives the signal outside a pause', async () => {
    const pause = pauseFromEnv('prepare:60000')!;
    process.kill(process.pid, 'SIGUSR2');
    const t0 = performance.now();
    const paused = pause('prepare');
    await new Promise((r) => setTimeout(r, 50));
    process.kill(process.pid, 'SIGUSR2');
    await paused;
    expect(performance.now() - t0).toBeLessThan(10_000);
  });
});

describe('recovery of a controller killed in the middle of a step', () => {
  const expected: Record<Phase, { state: 'done' | 'aborted'; owner: 'lb1' | 'lb2' }> = {
    precopy: { state: 'aborted', owner: 'lb1' },
    prepare: { state: 'aborted', owner: 'lb1' },
    move_address: { state: 'aborted', owner: 'lb1' },
    move_entries: { state: 'aborted', owner: 'lb1' },
    activate: { state: 'done', owner: 'lb2' },
  };

  it.each(PHASES)('killed in %s: the VIP ends on exactly one appliance with all its connections', async (step) => {
    const site = new ModelSite(['lb1', 'lb2'], [
      { name: 'vip1', owner: 'lb1', connections: 500 },
      { name: 'vip2', owner: 'lb1', connections: 7 },
    ]);
    let paused!: () => void;
    const reached = new Promise<void>((r) => (paused = r));
    const first = controllerOn(site, (at) => (at === step ? (paused(), new Promise<void>(() => {})) : Promise.resolve()));
    await first.controller.open();
    await first.controller.start('vip1', 'lb2');
    await reached;
    // Clients keep sending while the controller is dead: whoever has the address forwards or holds.
    site.send('vip1', 10);
    expect(site.resets).toBe(0);
    const journalled = (await first.journal.unfinished());
    expect(journalled).toHaveLength(1);
    expect(journalled[0]).toMatchObject({ vip: 'vip1', step, committed: step === 'activate' });

    const second = controllerOn(site);
    await second.controller.open();

    expect(await second.journal.unfinished()).toEqual([]);
    const record = (await second.journal.migration(journalled[0]!.id))!;
    expect(record).toMatchObject({ state: expected[step].state, recovered: true });
    expect((await second.journal.events(record.id)).map((e) => e.event)).toContain('recover');
    const owner = expected[step].owner;
    expect(site.owners('vip1')).toEqual([owner]);
    expect([...site.addresses.get('vip1')!]).toEqual([owner]);
    expect(await second.controller.owner('vip1')).toBe(owner);
    expect(site.entries.get(owner)!.get('vip1')).toBe(500);
    for (const a of site.appliances) if (a !== owner) expect(site.modes.get(a)!.has('vip1')).toBe(false);
    // Exactly one table: the other appliance keeps no entry (pre-copied or imported), and no change journal is left.
    for (const a of site.appliances) if (a !== owner) expect(site.entries.get(a)!.has('vip1'), a).toBe(false);
    for (const a of site.appliances) expect([...site.tracking.get(a)!], a).toEqual([]);
    // The other VIP was never touched.
    expect(site.owners('vip2')).toEqual(['lb1']);
    site.send('vip1', 10);
    site.send('vip2', 10);
    expect(site.resets).toBe(0);
    // A restarted controller can move it again.
    const next = await (await second.controller.start('vip1', owner === 'lb1' ? 'lb2' : 'lb1')).done;
    expect(next.state).toBe('done');
  });

  it('an appliance that does not answer at restart: the migration stays open, its VIP does not move, the next poll ends it', async () => {
    const site = new ModelSite(['lb1', 'lb2'], [{ name: 'vip1', owner: 'lb1', connections: 40 }, { name: 'vip2', owner: 'lb1', connections: 1 }]);
    let paused!: () => void;
    const reached = new Promise<void>((r) => (paused = r));
    const first = controllerOn(site, (at) => (at === 'move_address' ? (paused(), new Promise<void>(() => {})) : Promise.resolve()));
    await first.controller.open();
    await first.controller.start('vip1', 'lb2');
    await reached;

    site.down.add('lb2');
    const second = controllerOn(site);
    // Its API listens before the journal is read: a migration asked for then is refused, not run beside the unfinished one.
    await expect(second.controller.start('vip1', 'lb2')).rejects.toThrow(/still reading its journal/);
    await second.controller.open();
    expect(await second.journal.unfinished()).toHaveLength(1);
    expect((await second.journal.events((await second.journal.unfinished())[0]!.id)).map((e) => e.event)).toContain('recover_failed');
    await expect(second.controller.start('vip1', 'lb2')).rejects.toThrow(/being migrated already/);
    expect((await second.controller.plan()).holdingBack).toMatch(/unfinished migration/);

    site.down.delete('lb2');
    await second.controller.poll();
    expect(await second.journal.unfinished()).toEqual([]);
    expect(site.owners('vip1')).toEqual(['lb1']);
    expect(site.entries.get('lb1')!.get('vip1')).toBe(40);
  });

  it('a failed migration whose give-back fails too stays open and is ended later', async () => {
    const site = new ModelSite(['lb1', 'lb2'], [{ name: 'vip1', owner: 'lb1', connections: 3 }]);
    const { controller, journal } = controllerOn(site, async (at) => {
      // lb1 stops answering after it released the address: the drill's give-back needs it to
      // claim the address again, which it cannot yet.
      if (at === 'move_address') site.down.add('lb1');
    });
    await controller.open();
    const final = await (await controller.start('vip1', 'lb2', { abortAt: 'move_address' })).done;
    expect(final).toMatchObject({ state: 'aborted', recoveryFailed: true });
    expect(await journal.unfinished()).toHaveLength(1);
    site.down.delete('lb1');
    await controller.poll();
    expect(await journal.unfinished()).toEqual([]);
    expect(site.owners('vip1')).toEqual(['lb1']);
  });

  it('restarted, it believes the appliances over the journal and over the configuration', async () => {
    const site = new ModelSite(['lb1', 'lb2'], [{ name: 'vip1', owner: 'lb2', connections: 3 }, { name: 'vip2', owner: 'lb1', connections: 0 }]);
    const { controller, journal } = controllerOn(site);
    await journal.syncConfiguration(config(path).appliances, config(path).vips);
    expect(await controller.owner('vip1')).toBe('lb1'); // the configuration's initial owner
    await controller.open();
    expect(await controller.owner('vip1')).toBe('lb2');
  });
});
