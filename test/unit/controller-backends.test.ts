import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { AgentStatus } from '../../src/appliance/agent-api.js';
import { backendChanges, backendReplay, type ConfiguredBackend } from '../../src/controller/backends.js';
import { pino } from 'pino';
import { ApiError } from '../../src/api/client.js';
import { controllerConfigSchema } from '../../src/config/controller.js';
import type { BackendChange } from '../../src/config/edit.js';
import { Controller, type ApplianceAgent } from '../../src/controller/controller.js';
import { SqliteStore } from '../../src/controller/sqlite-store.js';

const dir = mkdtempSync(join(tmpdir(), 'vipshift-ctl-backends-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let stores = 0;
/** A controller store of its own on disk for each site. */
const newStore = () => new SqliteStore(join(dir, `controller-${++stores}.sqlite`));
const config = controllerConfigSchema.parse({
  controller: 'ctl',
  api: { listen: '127.0.0.1:1' },
  appliances: [{ name: 'lb1', api: 'http://127.0.0.1:1' }, { name: 'lb2', api: 'http://127.0.0.1:2' }],
  vips: [],
});

const check = (state: 'up' | 'down', transitions: number, reason: string) => ({
  type: 'tcp' as const,
  checkPort: 7,
  inter: 2000,
  state,
  reason,
  passesInRow: 0,
  failuresInRow: 0,
  checks: { pass: 0, fail: 0, timeout: 0 },
  transitions,
  since: 0,
  applied: true,
});

function status(...backends: { address: string; port?: number; check?: ReturnType<typeof check> }[]): AgentStatus {
  const counters = { entries: 0, packets: 0, bytes: 0, newConnections: 0, rejected: 0, synproxied: 0, limitedVip: 0, limitedSource: 0, unavailable: 0, held: 0, released: 0, overflowed: 0, dropped: 0 };
  return {
    appliance: 'lb1',
    vrrp: [],
    vips: [{ name: 'vip4', address: '203.0.113.13', mode: 'normal', ...counters, backends: backends.map((b) => ({ weight: 1, state: b.check?.state ?? 'up', reason: '', connections: 0, ...b })) }],
  };
}

describe('backend changes seen by the controller', () => {
  it('announces a backend whose check changed state, with the reason', () => {
    const before = status({ address: '198.18.0.101', check: check('up', 0, 'connect ok') }, { address: '198.18.0.102', port: 8080, check: check('up', 0, 'connect ok') });
    const after = status({ address: '198.18.0.101', check: check('up', 0, 'connect ok') }, { address: '198.18.0.102', port: 8080, check: check('down', 1, '3 failed checks: connect refused') });
    expect(backendChanges('lb1', undefined, after)).toEqual([]);
    expect(backendChanges('lb1', before, before)).toEqual([]);
    expect(backendChanges('lb1', before, after)).toEqual([
      { appliance: 'lb1', vip: 'vip4', backend: '198.18.0.102:8080', from: 'up', to: 'down', transitions: 1, reason: '3 failed checks: connect refused' },
    ]);
  });

  it('sees a backend that went down and came back between two polls, and an appliance that restarted', () => {
    const before = status({ address: '198.18.0.101', check: check('up', 2, 'connect ok') });
    expect(backendChanges('lb1', before, status({ address: '198.18.0.101', check: check('up', 4, '2 passed checks: connect ok') }))).toMatchObject([{ from: 'up', to: 'up', transitions: 2 }]);
    expect(backendChanges('lb1', before, status({ address: '198.18.0.101', check: check('up', 0, 'not checked yet') }))).toEqual([]);
    expect(backendChanges('lb1', before, status({ address: '198.18.0.101', check: check('down', 1, '3 failed checks: no answer in 1000 ms') }))).toMatchObject([{ to: 'down', transitions: 1 }]);
    // Not checked (check: enabled false): nothing to say.
    expect(backendChanges('lb1', status({ address: '198.18.0.103' }), status({ address: '198.18.0.103' }))).toEqual([]);
  });
});

describe('a backend change sent by the controller', () => {
  function site(refuse: Record<string, Error> = {}) {
    const order: string[] = [];
    const box = (name: string) => ({
      name,
      changeBackend: async (vip: string, change: BackendChange) => {
        order.push(`${name} ${change.action}`);
        if (refuse[name]) throw refuse[name];
        return { vip, backends: [] };
      },
    });
    const agents = new Map(['lb1', 'lb2'].map((n) => [n, box(n) as unknown as ApplianceAgent]));
    const keepers = new Map(['srv1', 'srv2', 'srv3'].map((n) => [n, box(n)]));
    const controller = new Controller(config, agents, newStore(), pino({ level: 'silent' }), { keepers });
    return { controller, order };
  }

  it('reaches every appliance and keeper; an added backend the keepers first, any other change the appliances first', async () => {
    const a = site();
    const added = await a.controller.changeBackend('vip4', { action: 'add', address: '198.18.0.104' });
    expect(a.order).toEqual(['srv1 add', 'srv2 add', 'srv3 add', 'lb1 add', 'lb2 add']);
    expect([...added.appliances, ...added.keepers].every((o) => o.ok)).toBe(true);
    a.order.length = 0;
    await a.controller.changeBackend('vip4', { action: 'remove', address: '198.18.0.104' });
    expect(a.order).toEqual(['lb1 remove', 'lb2 remove', 'srv1 remove', 'srv2 remove', 'srv3 remove']);
  });

  it('reports each box: a keeper without the VIP skipped, one refusing or away refused, the others done', async () => {
    const { controller } = site({
      srv1: new ApiError(404, "VIP 'vip4' is not in this keeper's configuration", 'vip'),
      srv2: new ApiError(0, 'POST /v1/vips/vip4/backends: connect ECONNREFUSED'),
      lb2: new ApiError(400, 'lb2.yaml: vips[3].backends: VIP vip4 has no backend 198.18.0.109'),
    });
    const r = await controller.changeBackend('vip4', { action: 'drain', address: '198.18.0.109' });
    expect(r.appliances.map((o) => [o.appliance, o.ok])).toEqual([['lb1', true], ['lb2', false]]);
    expect(r.keepers.map((o) => [o.keeper, o.ok, o.skipped !== undefined, o.error])).toEqual([
      ['srv1', true, true, undefined],
      ['srv2', false, false, 'POST /v1/vips/vip4/backends: connect ECONNREFUSED (queued: sent again when it answers)'],
      ['srv3', true, false, undefined],
    ]);
  });
});

describe('the difference replayed to an appliance', () => {
  const b = (address: string, weight = 1, port?: number): ConfiguredBackend => ({ address, weight, ...(port === undefined ? {} : { port }) });

  it('adds what is missing, sets weights, removes the rest, in that order; nothing when equal', () => {
    expect(backendReplay([b('198.18.0.101'), b('198.18.0.102', 3)], [b('198.18.0.102', 3), b('198.18.0.101')])).toEqual([]);
    expect(backendReplay([b('198.18.0.101', 0), b('198.18.0.104', 2, 8443)], [b('198.18.0.103'), b('198.18.0.101'), b('198.18.0.104', 2)])).toEqual([
      { action: 'add', address: '198.18.0.104', port: 8443, weight: 2 },
      { action: 'weight', address: '198.18.0.101', weight: 0 },
      { action: 'remove', address: '198.18.0.103' },
      { action: 'remove', address: '198.18.0.104' },
    ]);
  });
});

describe('a box away while backends changed gets the changes when it is back', () => {
  const away = (what: string) => new ApiError(0, `${what}: connect ECONNREFUSED`);

  /** An appliance keeping vip4's backends as its file would: refuses what its edit would refuse. */
  class Box {
    down = false;
    backends: ConfiguredBackend[] = [{ address: '198.18.0.101', weight: 1 }, { address: '198.18.0.102', weight: 1 }];
    readonly taken: string[] = [];
    constructor(readonly name: string) {}
    async changeBackend(vip: string, change: BackendChange) {
      if (this.down) throw away(`POST /v1/vips/${vip}/backends`);
      const i = this.backends.findIndex((x) => x.address === change.address && x.port === change.port);
      if (change.action === 'add') {
        if (i >= 0) throw new ApiError(400, `VIP ${vip} already has backend ${change.address}`, 'backends');
        this.backends.push({ address: change.address, ...(change.port === undefined ? {} : { port: change.port }), weight: change.weight ?? 1 });
      } else {
        if (i < 0) throw new ApiError(400, `VIP ${vip} has no backend ${change.address}`, 'backends');
        if (change.action === 'remove') this.backends.splice(i, 1);
        else this.backends[i]!.weight = change.action === 'drain' ? 0 : change.weight!;
      }
      this.taken.push(`${change.action} ${change.address}`);
      return { vip, backends: this.backends.map((x) => ({ ...x })) };
    }
    async status(): Promise<AgentStatus> {
      if (this.down) throw away('GET /v1/status');
      const s = status(...this.backends);
      s.appliance = this.name;
      s.vips[0]!.backends.forEach((x, i) => (x.weight = this.backends[i]!.weight));
      return s;
    }
  }

  /** A keeper: takes any change when up. */
  class Keeper {
    down = false;
    readonly taken: string[] = [];
    constructor(readonly name: string) {}
    async changeBackend(vip: string, change: BackendChange) {
      if (this.down) throw away(`POST /v1/vips/${vip}/backends`);
      if (change.address === '198.18.0.199') throw new ApiError(400, `VIP ${vip} has no backend 198.18.0.199`, 'backends');
      this.taken.push(`${change.action} ${change.address}`);
      return { vip };
    }
  }

  function site(store = newStore(), boxes = [new Box('lb1'), new Box('lb2')], keeper = new Keeper('srv1')) {
    const agents = new Map(boxes.map((x) => [x.name, x as unknown as ApplianceAgent]));
    const controller = new Controller(config, agents, store, pino({ level: 'silent' }), { keepers: new Map([[keeper.name, keeper]]) });
    return { controller, store, lb1: boxes[0]!, lb2: boxes[1]!, keeper };
  }

  it('an appliance down during an add and a drain is given both at its first poll back, and only then', async () => {
    const { controller, lb1, lb2 } = site();
    lb2.down = true;
    const added = await controller.changeBackend('vip4', { action: 'add', address: '198.18.0.104', weight: 2 });
    expect(added.appliances.map((o) => [o.appliance, o.ok])).toEqual([['lb1', true], ['lb2', false]]);
    await controller.changeBackend('vip4', { action: 'drain', address: '198.18.0.101' });
    await controller.poll();
    expect(lb2.taken).toEqual([]);

    lb2.down = false;
    await controller.poll();
    expect(lb2.taken).toEqual(['add 198.18.0.104', 'weight 198.18.0.101']);
    expect(lb2.backends).toEqual(lb1.backends);
    expect(lb1.taken).toEqual(['add 198.18.0.104', 'drain 198.18.0.101']);
    // In step: later polls send nothing.
    await controller.poll();
    expect(lb2.taken).toHaveLength(2);
  });

  it('the backends last set are in the store: a controller started afterwards (a new leader) replays them', async () => {
    const first = site();
    first.lb2.down = true;
    await first.controller.changeBackend('vip4', { action: 'remove', address: '198.18.0.102' });
    const second = site(first.store, [first.lb1, first.lb2]);
    first.lb2.down = false;
    await second.controller.poll();
    expect(first.lb2.taken).toEqual(['remove 198.18.0.102']);
    expect(first.lb2.backends).toEqual([{ address: '198.18.0.101', weight: 1 }]);
  });

  it('a VIP never changed through the controller is left as each appliance\'s file says', async () => {
    const { controller, lb1, lb2 } = site();
    lb2.backends.push({ address: '198.18.0.103', weight: 1 });
    await controller.poll();
    expect([...lb1.taken, ...lb2.taken]).toEqual([]);
  });

  it('a keeper away keeps its changes in order, a later change queued behind them, sent when it answers; one it refuses is dropped', async () => {
    const { controller, keeper } = site();
    keeper.down = true;
    const r = await controller.changeBackend('vip4', { action: 'add', address: '198.18.0.104' });
    expect(r.keepers).toEqual([{ keeper: 'srv1', ok: false, error: 'POST /v1/vips/vip4/backends: connect ECONNREFUSED (queued: sent again when it answers)' }]);
    await controller.poll();
    keeper.down = false;
    // Queued behind the add although the keeper answers now: it must not overtake it.
    const later = await controller.changeBackend('vip4', { action: 'remove', address: '198.18.0.199' });
    expect(later.keepers[0]).toMatchObject({ ok: false, error: expect.stringMatching(/^queued behind 1 earlier change/) });
    await controller.changeBackend('vip4', { action: 'weight', address: '198.18.0.104', weight: 3 });
    expect(keeper.taken).toEqual([]);
    await controller.poll();
    expect(keeper.taken).toEqual(['add 198.18.0.104', 'weight 198.18.0.104']);
    // The backlog is empty: the next change goes straight through.
    await controller.changeBackend('vip4', { action: 'drain', address: '198.18.0.104' });
    expect(keeper.taken.at(-1)).toBe('drain 198.18.0.104');
  });
});
