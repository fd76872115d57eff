import { describe, expect, it } from 'vitest';
import { SLOTS, slotTable, type Member } from '../../src/nat/scheduler.js';
import { poolTable } from '../../src/nat/pool.js';
import { buildPoolChange } from '../../src/nat/ruleset.js';
import { parseApplianceConfig } from '../../src/config/appliance.js';
import { prng } from '../support/prng.js';

const members = (n: number, weight = 1): Member[] => Array.from({ length: n }, (_, i) => ({ key: `198.18.1.${i + 1}`, weight }));
const shares = (table: number[], n: number): number[] => {
  const out = new Array<number>(n).fill(0);
  for (const i of table) out[i]!++;
  return out;
};
/** Slots that keep their backend (by name) from `before` to `after`. */
const kept = (before: number[], bm: Member[], after: number[], am: Member[]): number =>
  before.filter((i, slot) => bm[i]!.key === am[after[slot]!]!.key).length / before.length;

describe('slot tables', () => {
  it('round robin: shares follow the weights and consecutive slots go to different backends', () => {
    const m = [{ key: 'a', weight: 1 }, { key: 'b', weight: 2 }, { key: 'c', weight: 1 }];
    const t = slotTable('roundrobin', m);
    expect(t).toHaveLength(SLOTS.roundrobin);
    expect(shares(t, 3)).toEqual([64, 128, 64]);
    expect(t.slice(0, 4).sort()).toEqual([0, 1, 1, 2]);
    expect(t.every((x, i) => i === 0 || x !== t[i - 1] || x === 1)).toBe(true);
  });

  it('source hash is hash modulo the pool: one of ten going moves most clients', () => {
    const ten = members(10);
    const before = slotTable('sourcehash', ten);
    const nine = ten.filter((_, i) => i !== 3);
    const after = slotTable('sourcehash', nine);
    expect(kept(before, ten, after, nine)).toBeLessThan(0.5);
  });

  it('maglev: balanced within a few percent, and one of ten going keeps ≥ 85 % of slots (only its own share moves, nearly)', () => {
    const ten = members(10);
    const before = slotTable('maglev', ten);
    expect(before).toHaveLength(4093);
    for (const s of shares(before, 10)) expect(Math.abs(s - 409.3)).toBeLessThan(409.3 * 0.05);
    for (let gone = 0; gone < 10; gone++) {
      const nine = ten.filter((_, i) => i !== gone);
      const after = slotTable('maglev', nine);
      const share = kept(before, ten, after, nine);
      expect(share).toBeGreaterThanOrEqual(0.85);
      // Every slot that did not belong to the one gone mostly stays.
      const others = before.map((i, slot) => [i, slot] as const).filter(([i]) => i !== gone);
      const stay = others.filter(([i, slot]) => ten[i]!.key === nine[after[slot]!]!.key).length / others.length;
      expect(stay).toBeGreaterThan(0.95);
    }
  });

  it('maglev does not depend on the order backends are listed in, and follows weights', () => {
    const m = members(5);
    expect(slotTable('maglev', m).map((i) => m[i]!.key)).toEqual(slotTable('maglev', [...m].reverse()).map((i) => [...m].reverse()[i]!.key));
    const w = [{ key: 'a', weight: 3 }, { key: 'b', weight: 1 }];
    const s = shares(slotTable('maglev', w), 2);
    expect(s[0]! / s[1]!).toBeGreaterThan(2.5);
    expect(s[0]! / s[1]!).toBeLessThan(3.5);
  });

  it('refuses weight 0 members and non-prime Maglev sizes; no member, no slot', () => {
    expect(() => slotTable('roundrobin', [{ key: 'a', weight: 0 }])).toThrow(/weight above 0/);
    expect(() => slotTable('maglev', members(2), 1000)).toThrow(/prime/);
    expect(slotTable('maglev', [])).toEqual([]);
  });

  it('random pools: every slot is filled with a member, shares within the weights', () => {
    const rnd = prng(12);
    const int = (n: number) => Math.floor(rnd() * n);
    for (let round = 0; round < 50; round++) {
      const n = 1 + int(30);
      const m = Array.from({ length: n }, (_, i) => ({ key: `10.0.${round}.${i}`, weight: 1 + int(256) }));
      for (const scheduler of ['roundrobin', 'sourcehash', 'maglev'] as const) {
        const t = slotTable(scheduler, m);
        expect(t).toHaveLength(SLOTS[scheduler]);
        expect(t.every((i) => Number.isInteger(i) && i >= 0 && i < n)).toBe(true);
      }
    }
  });
});

const config = parseApplianceConfig(
  JSON.stringify({
    appliance: 'lb1',
    api: { listen: '192.0.2.11:8441' },
    interfaces: { external: 'ext0', internal: 'int0' },
    vips: [
      {
        name: 'web', id: 9, address: '203.0.113.20', insideAddress: '198.18.0.20', ports: [443], mode: 'fullnat', scheduler: 'maglev', snatPorts: '20000-29999', owner: 'lb1',
        backends: Array.from({ length: 10 }, (_, i) => ({ address: `198.18.1.${i + 1}`, port: 8443 })),
      },
      { name: 'one', id: 10, address: '203.0.113.21', insideAddress: '198.18.0.21', ports: [80], mode: 'dnat', owner: 'lb1', backends: [{ address: '198.18.2.1' }], sorryServer: { address: '198.18.2.9', port: 8080 } },
    ],
  }),
  'lb1.json',
);

describe('pool changes', () => {
  const web = config.vips[0]!;
  it('a backend going down rewrites only the slots that change hands, as element commands', () => {
    const before = poolTable(web);
    const after = poolTable(web, new Map([['198.18.1.4:8443', { up: false, reason: 'connect refused' }]]));
    const batch = buildPoolChange(web, before, after);
    const moved = before.slots.filter((t, i) => t !== after.slots[i]).length;
    // Its own tenth of the 4,093 slots, and a few more.
    expect(moved).toBeGreaterThan(0.09 * 4093);
    expect(moved).toBeLessThan(0.12 * 4093);
    expect(batch.nftables.every((c) => Object.values(c)[0]!.element !== undefined)).toBe(true);
    const count = (verb: string, name: string) => batch.nftables.flatMap((c) => (c[verb]?.element as { name: string; elem: unknown[] } | undefined)?.name === name ? (c[verb]!.element as { elem: unknown[] }).elem : []).length;
    expect(count('delete', 'slots_web')).toBe(moved);
    expect(count('add', 'slots_web')).toBe(moved);
    // The targets do not change, only which slots point at them.
    expect(count('add', 'pool_web') + count('add', 'ports_web')).toBe(0);
    expect(buildPoolChange(web, after, after).nftables).toEqual([]);
  });

  it('no backend up: the VIP is unavailable (reset), or every slot goes to the sorry server', () => {
    const down = new Map(web.backends.map((b) => [`${b.address}:8443`, { up: false, reason: 'timeout' }]));
    const none = poolTable(web, down);
    expect(none).toMatchObject({ slots: [], unavailable: true });
    const batch = buildPoolChange(web, poolTable(web), none);
    expect(JSON.stringify(batch)).toContain('"name":"vips_unavailable","elem":[{"concat":["203.0.113.20","tcp",443]}]');
    const one = config.vips[1]!;
    const sorry = poolTable(one, new Map([['198.18.2.1', { up: false, reason: 'timeout' }]]));
    expect(sorry.unavailable).toBe(false);
    expect(new Set(sorry.slots.map((i) => `${sorry.targets[i]!.address}:${sorry.targets[i]!.port}`))).toEqual(new Set(['198.18.2.9:8080']));
  });

  it('weight 0 drains: the backend keeps no slot', () => {
    const drained = { ...web, backends: web.backends.map((b, i) => (i === 0 ? { ...b, weight: 0 } : b)) };
    expect(poolTable(drained).slots.some((i) => i === 0)).toBe(false);
  });
});
