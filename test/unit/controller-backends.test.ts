import { describe, expect, it } from 'vitest';
import type { AgentStatus } from '../../src/appliance/agent-api.js';
import { backendChanges } from '../../src/controller/backends.js';
import { pino } from 'pino';
import { ApiError } from '../../src/api/client.js';
import { controllerConfigSchema } from '../../src/config/controller.js';
import type { BackendChange } from '../../src/config/edit.js';
import { Controller, type ApplianceAgent } from '../../src/controller/controller.js';
import type { ControllerStore } from '../../src/controller/store.js';

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
  const config = controllerConfigSchema.parse({
    controller: 'ctl',
    api: { listen: '127.0.0.1:1' },
    appliances: [{ name: 'lb1', api: 'http://127.0.0.1:1' }, { name: 'lb2', api: 'http://127.0.0.1:2' }],
    vips: [],
  });
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
    const controller = new Controller(config, agents, {} as ControllerStore, pino({ level: 'silent' }), { keepers });
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
      ['srv2', false, false, 'POST /v1/vips/vip4/backends: connect ECONNREFUSED'],
      ['srv3', true, false, undefined],
    ]);
  });
});
