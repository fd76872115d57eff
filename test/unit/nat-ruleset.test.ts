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
      { name: 'vip1', id: 1, address: '203.0.113.10', insideAddress: '198.18.0.10', ports: [7, 80], mode: 'dnat', servers: [{ address: '198.18.0.101' }], owner: 'lb1' },
      { name: 'vip3', id: 3, address: '203.0.113.12', insideAddress: '198.18.0.12', ports: [7], mode: 'dnat', servers: [{ address: '198.18.0.103' }], owner: 'lb2' },
      {
        name: 'vip4', id: 4, address: '203.0.113.13', insideAddress: '198.18.0.13', ports: [80], mode: 'fullnat', scheduler: 'sourcehash', snatPorts: '20000-29999',
        servers: [{ address: '198.18.0.101' }, { address: '198.18.0.102', weight: 2 }], owner: 'lb1',
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
    const all = batch.nftables.map((c) => JSON.stringify(c)).filter((c) => c.includes('"element"')).join();
    expect(all).not.toContain('203.0.113.12'); // vip3 is not ours
  });

  it('DNATs a dnat VIP to its server and a fullnat VIP to its weighted pool, counting and marking the connection', () => {
    expect(rulesOf(batch, 'vip_vip1')).toEqual([JSON.stringify([{ counter: 'new_vip1' }, { mangle: { key: { ct: { key: 'mark' } }, value: 1 } }, { dnat: { addr: '198.18.0.101' } }])]);
    const [fullnat] = rulesOf(batch, 'vip_vip4');
    expect(JSON.parse(fullnat!)).toEqual([
      { counter: 'new_vip4' },
      { mangle: { key: { ct: { key: 'mark' } }, value: 4 } },
      {
        dnat: {
          addr: {
            map: {
              key: { jhash: { mod: 3, expr: { payload: { protocol: 'ip', field: 'saddr' } } } },
              data: { set: [[0, '198.18.0.101'], [1, '198.18.0.102'], [2, '198.18.0.102']] },
            },
          },
        },
      },
    ]);
    expect(rulesOf(batch, 'nat_postrouting').join()).toContain('"snat":{"addr":"198.18.0.13","port":{"range":[20000,29999]}}');
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
