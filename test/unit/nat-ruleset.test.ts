import { describe, expect, it } from 'vitest';
import { parseApplianceConfig } from '../../src/config/appliance.js';
import { HOLD_MARK, buildModeChange, buildRuleset } from '../../src/nat/ruleset.js';
import { type NftBatch, type NftCommand } from '../../src/kernel/nft.js';

const config = parseApplianceConfig(
  JSON.stringify({
    appliance: 'lb1',
    api: { listen: '192.0.2.11:8441' },
    interfaces: { external: 'ext0', internal: 'int0' },
    vips: [
      { name: 'vip1', id: 1, address: '203.0.113.10', insideAddress: '198.18.0.10', ports: [7, 80], mode: 'dnat', backends: [{ address: '198.18.0.101' }], owner: 'lb1' },
      { name: 'vip3', id: 3, address: '203.0.113.12', insideAddress: '198.18.0.12', ports: [7], mode: 'dnat', backends: [{ address: '198.18.0.103' }], owner: 'lb2' },
      {
        name: 'vip4', id: 4, address: '203.0.113.13', insideAddress: '198.18.0.13', ports: [80], mode: 'fullnat', scheduler: 'sourcehash', snatPorts: '20000-29999',
        backends: [{ address: '198.18.0.101' }, { address: '198.18.0.102', weight: 2 }], owner: 'lb1',
      },
    ],
  }),
  'test.json',
);
const vip = (name: string) => config.vips.find((v) => v.name === name)!;

const of = (batch: NftBatch, verb: string, kind: string): Record<string, unknown>[] =>
  batch.nftables.flatMap((c: NftCommand) => (c[verb]?.[kind] ? [c[verb]![kind] as Record<string, unknown>] : []));
/** Elements added to a set or map, rendered as strings for comparison. */
const elementsOf = (batch: NftBatch, verb: string, set: string): string[] =>
  of(batch, verb, 'element').filter((e) => e.name === set).flatMap((e) => (e.elem as unknown[]).map((x) => JSON.stringify(x)));
const key = (...k: unknown[]) => ({ concat: k });
const rulesOf = (batch: NftBatch, chain: string) => of(batch, 'add', 'rule').filter((r) => r.chain === chain).map((r) => JSON.stringify(r.expr));

describe('ruleset generator', () => {
  const modes = new Map([['vip1', 'normal' as const], ['vip4', 'migrating' as const]]);
  const batch = buildRuleset(config, modes, { hold: 'iptables-queue', queueNumber: 5 });

  it('rebuilds one table atomically: add, delete, add', () => {
    expect(batch.nftables.slice(0, 3)).toEqual([
      { add: { table: { family: 'ip', name: 'vipshift' } } },
      { delete: { table: { family: 'ip', name: 'vipshift' } } },
      { add: { table: { family: 'ip', name: 'vipshift' } } },
    ]);
  });

  it('puts each VIP of the mode table in its sets, and absent VIPs nowhere', () => {
    expect(elementsOf(batch, 'add', 'vips_normal')).toEqual([key('203.0.113.10', 'tcp', 7), key('203.0.113.10', 'tcp', 80)].map((k) => JSON.stringify(k)));
    expect(elementsOf(batch, 'add', 'vip_dnat')).toEqual(
      [7, 80].map((p) => JSON.stringify([key('203.0.113.10', 'tcp', p), { goto: { target: 'vip_vip1' } }])),
    );
    const mark4 = (HOLD_MARK | 4) >>> 0;
    expect(elementsOf(batch, 'add', 'vips_migrating')).toEqual([JSON.stringify([key('203.0.113.13', 'tcp', 80), mark4])]);
    expect(elementsOf(batch, 'add', 'inside_migrating')).toEqual([JSON.stringify([key('198.18.0.13', 'tcp'), mark4])]);
    const modeSets = ['vips_normal', 'vip_dnat', 'vips_migrating', 'replies_migrating', 'inside_migrating'];
    const all = of(batch, 'add', 'element').filter((e) => modeSets.includes(e.name as string)).map((e) => JSON.stringify(e)).join();
    expect(all).not.toContain('203.0.113.12'); // vip3 is not ours
  });

  it('DNATs each new connection by its slot: numgen or a jhash of the client seeded by the VIP id, into the pool maps', () => {
    const [dnat] = rulesOf(batch, 'vip_vip1');
    expect(JSON.parse(dnat!)).toEqual([
      { counter: 'new_vip1' },
      { mangle: { key: { ct: { key: 'mark' } }, value: 1 } },
      { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'tcp' } },
      { mangle: { key: { meta: { key: 'mark' } }, value: { numgen: { mode: 'inc', mod: 256, offset: 0 } } } },
      { mangle: { key: { meta: { key: 'mark' } }, value: { map: { key: { meta: { key: 'mark' } }, data: '@slots_vip1' } } } },
      {
        dnat: {
          family: 'ip',
          addr: { map: { key: { meta: { key: 'mark' } }, data: '@pool_vip1' } },
          port: { map: { key: { concat: [{ meta: { key: 'mark' } }, { payload: { protocol: 'th', field: 'dport' } }] }, data: '@ports_vip1' } },
        },
      },
    ]);
    expect(rulesOf(batch, 'vip_vip4')[0]).toContain('{"jhash":{"mod":256,"seed":4,"expr":{"payload":{"protocol":"ip","field":"saddr"}}}}');
    // vip1: one backend in all 256 slots, each VIP port to itself.
    expect(elementsOf(batch, 'add', 'slots_vip1')).toEqual(Array.from({ length: 256 }, (_, i) => JSON.stringify([i, 0])));
    expect(elementsOf(batch, 'add', 'pool_vip1')).toEqual([JSON.stringify([0, '198.18.0.101'])]);
    expect(elementsOf(batch, 'add', 'ports_vip1')).toEqual([7, 80].map((p) => JSON.stringify([key(0, p), p])));
    // vip4: weights 1 and 2 by repetition (source hash).
    const shares = [0, 0];
    for (const e of elementsOf(batch, 'add', 'slots_vip4')) shares[JSON.parse(e)[1]]!++;
    expect(shares).toEqual([86, 170]);
    expect(rulesOf(batch, 'snat_vip4').join()).toContain('"snat":{"addr":"198.18.0.13","port":{"range":[20000,29999]}}');
    expect(elementsOf(batch, 'add', 'snat_chains')).toEqual([JSON.stringify([4, { goto: { target: 'snat_vip4' } }])]);
  });

  it('rejects unknown TCP accesses to normal VIPs with a reset, counted per VIP', () => {
    const [reject] = rulesOf(batch, 'reject');
    expect(reject).toContain('"right":"invalid"');
    expect(reject).toContain('"right":"@vips_normal"');
    expect(reject).toContain('"data":"@rejected_counters"');
    expect(reject).toContain('{"reject":{"type":"tcp reset"}}');
    const chain = of(batch, 'add', 'chain').find((c) => c.name === 'reject');
    expect(chain).toMatchObject({ hook: 'prerouting', prio: -150 });
  });

  it('holds before conntrack: marks at −310 when iptables-nft queues, queues itself at −300 with nft queue', () => {
    expect(of(batch, 'add', 'chain').find((c) => c.name === 'hold')).toMatchObject({ hook: 'prerouting', prio: -310 });
    expect(rulesOf(batch, 'hold').join()).not.toContain('queue');
    const nftQueue = buildRuleset(config, modes, { hold: 'nft-queue', queueNumber: 5 });
    expect(of(nftQueue, 'add', 'chain').find((c) => c.name === 'hold')).toMatchObject({ prio: -300 });
    expect(rulesOf(nftQueue, 'hold').at(-1)).toContain('{"queue":{"num":5}}');
    const drop = buildRuleset(config, modes, { hold: 'drop', queueNumber: 5 });
    expect(rulesOf(drop, 'hold').at(-1)).toContain('{"drop":null}');
  });

  it('changes a mode by set elements only, in one batch', () => {
    const change = buildModeChange(vip('vip1'), 'normal', 'migrating');
    expect(change.nftables.every((c) => Object.values(c)[0]!.element !== undefined)).toBe(true);
    expect(elementsOf(change, 'delete', 'vips_normal')).toHaveLength(2);
    expect(elementsOf(change, 'delete', 'vip_dnat')).toHaveLength(2);
    expect(elementsOf(change, 'add', 'vips_migrating')).toHaveLength(2);
    // dnat: its server's replies towards clients are held too.
    expect(elementsOf(change, 'add', 'replies_migrating')).toEqual(
      [7, 80].map((p) => JSON.stringify([key('198.18.0.101', 'tcp', p), (HOLD_MARK | 1) >>> 0])),
    );
    expect(buildModeChange(vip('vip1'), 'normal', 'normal').nftables).toEqual([]);
    const gone = buildModeChange(vip('vip4'), 'migrating', 'absent');
    expect(of(gone, 'add', 'element')).toEqual([]);
    expect(elementsOf(gone, 'delete', 'inside_migrating')).toHaveLength(1);
  });
});
