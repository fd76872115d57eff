/**
 * Mode changes through the nf_tables netlink path against the real kernel: the elements must
 * be exactly what `nft` itself writes for the same change (a second namespace gets the same
 * changes through `nft -j -f`), and a transaction the kernel refuses changes nothing.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseApplianceConfig } from '../../src/config/appliance.js';
import { NetlinkElementWriter } from '../../src/nat/nft-elements.js';
import { MODE_SETS, buildModeChange, buildRuleset, type VipMode } from '../../src/nat/ruleset.js';
import { type NftBatch } from '../../src/kernel/nft.js';
import { Proc } from './helpers/nat-lab.js';

const PREFIX = 'vtnfl';
const sh = (cmd: string, args: string[]): string => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

const site = {
  appliance: 'lb1',
  api: { listen: '192.0.2.11:8441' },
  interfaces: { external: 'ext0', internal: 'int0' },
  vips: [
    { name: 'vip1', id: 1, address: '203.0.113.10', insideAddress: '198.18.0.10', ports: [7, 80], mode: 'dnat', backends: [{ address: '198.18.0.101' }], owner: 'lb1' },
    {
      name: 'vip4', id: 4, address: '203.0.113.13', insideAddress: '198.18.0.13', ports: [80], mode: 'fullnat', snatPorts: '20000-29999',
      backends: [{ address: '198.18.0.101' }, { address: '198.18.0.102' }], owner: 'lb2',
    },
  ],
};
const config = parseApplianceConfig(JSON.stringify(site), 'test.json');
const vip = (name: string) => config.vips.find((v) => v.name === name)!;

let dir = '';
let byNetlink = ''; // namespace whose mode changes go through the netlink path
let byNft = ''; // namespace whose mode changes go through `nft -j -f`
let byEngine = ''; // namespace of a whole NatEngine (its own process)
let writer: NetlinkElementWriter | undefined;
let engine: Proc | undefined;

function nftApply(ns: string, batch: NftBatch): void {
  if (batch.nftables.length === 0) return;
  const file = join(dir, `${ns}.json`);
  writeFileSync(file, JSON.stringify(batch));
  sh('ip', ['netns', 'exec', ns, 'nft', '-j', '-f', file]);
}

/** Every mode set's elements, each rendered as JSON and sorted (listing order follows the hash). */
function modeSets(ns: string): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [name, d] of Object.entries(MODE_SETS)) {
    const listing = JSON.parse(sh('ip', ['netns', 'exec', ns, 'nft', '-j', 'list', d.map ? 'map' : 'set', 'ip', 'vipshift', name])) as NftBatch;
    const body = listing.nftables.map((c) => (c.set ?? c.map) as { elem?: unknown[] } | undefined).find((b) => b !== undefined);
    out[name] = (body?.elem ?? []).map((e) => JSON.stringify(e)).sort();
  }
  return out;
}

beforeAll(() => {
  for (const line of sh('ip', ['netns', 'list']).split('\n')) {
    const name = line.split(' ')[0];
    if (name?.startsWith(PREFIX)) sh('ip', ['netns', 'del', name]);
  }
  dir = mkdtempSync(join(tmpdir(), 'vtnfl-'));
  byNetlink = `${PREFIX}${randomBytes(3).toString('hex')}`;
  byNft = `${PREFIX}${randomBytes(3).toString('hex')}`;
  byEngine = `${PREFIX}${randomBytes(3).toString('hex')}`;
  for (const ns of [byNetlink, byNft, byEngine]) sh('ip', ['netns', 'add', ns]);
  for (const ns of [byNetlink, byNft]) nftApply(ns, buildRuleset(config, new Map(), { hold: 'drop', queueNumber: 1 }));
  writer = new NetlinkElementWriter({ netns: byNetlink });
});

afterAll(async () => {
  writer?.close();
  await engine?.stop();
  for (const ns of [byNetlink, byNft, byEngine]) if (ns) sh('ip', ['netns', 'del', ns]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('mode changes over nf_tables netlink', () => {
  it('writes exactly the elements nft writes, step by step: absent → normal → migrating → normal → absent', async () => {
    const steps: [string, VipMode | 'absent', VipMode | 'absent'][] = [];
    for (const name of ['vip1', 'vip4']) {
      steps.push([name, 'absent', 'normal'], [name, 'normal', 'migrating'], [name, 'migrating', 'normal'], [name, 'normal', 'absent']);
    }
    // vip4 starts while vip1 is normal, so each step also shows the other VIP's elements stay.
    nftApply(byNft, buildModeChange(vip('vip1'), 'absent', 'normal'));
    await writer!.apply(buildModeChange(vip('vip1'), 'absent', 'normal'));
    for (const [name, from, to] of steps.slice(1)) {
      const change = buildModeChange(vip(name), from, to);
      nftApply(byNft, change);
      await writer!.apply(change);
      const expected = modeSets(byNft);
      expect(modeSets(byNetlink), `${name} ${from} → ${to}`).toEqual(expected);
      if (to !== 'absent') expect(Object.values(expected).flat().length, `${name} ${to} has elements`).toBeGreaterThan(0);
    }
    // The last step left both VIPs absent: nothing in any mode set.
    expect(Object.values(modeSets(byNetlink)).flat()).toEqual([]);
  });

  it('is all or nothing: a refused element leaves every set as it was', async () => {
    await writer!.apply(buildModeChange(vip('vip1'), 'absent', 'normal'));
    const before = modeSets(byNetlink);
    // vip4 normal (good elements in two sets), then a delete of an element that is not there.
    const bad: NftBatch = {
      nftables: [
        ...buildModeChange(vip('vip4'), 'absent', 'normal').nftables,
        { delete: { element: { family: 'ip', table: 'vipshift', name: 'vips_migrating', elem: [[{ concat: ['203.0.113.99', 'tcp', 9] }, 5]] } } },
      ],
    };
    await expect(writer!.apply(bad)).rejects.toThrow(/delete element in set vipshift vips_migrating: ENOENT.*nothing was changed/);
    expect(modeSets(byNetlink)).toEqual(before);
    // A goto to a chain that does not exist: the kernel refuses it while checking the element.
    const noChain: NftBatch = {
      nftables: [
        ...buildModeChange(vip('vip4'), 'absent', 'migrating').nftables,
        { add: { element: { family: 'ip', table: 'vipshift', name: 'vip_dnat', elem: [[{ concat: ['203.0.113.99', 'tcp', 9] }, { goto: { target: 'vip_nosuch' } }]] } } },
      ],
    };
    await expect(writer!.apply(noChain)).rejects.toThrow(/add element in set vipshift vip_dnat: ENOENT/);
    expect(modeSets(byNetlink)).toEqual(before);
    // And the socket still works after a refusal.
    await writer!.apply(buildModeChange(vip('vip1'), 'normal', 'absent'));
    expect(Object.values(modeSets(byNetlink)).flat()).toEqual([]);
  });

  it('the engine: changes asked for at once end as asked, one bad change fails alone', async () => {
    engine = new Proc(byEngine, 'nat-appliance.ts');
    await engine.call('start', { config: site });
    expect(await engine.call('modeTable')).toEqual({ vip1: 'normal' });
    // The first change goes alone; the others queue behind it and go in one transaction.
    const asked = [
      engine.call('setMode', { vip: 'vip4', mode: 'normal' }),
      engine.call('setMode', { vip: 'vip1', mode: 'migrating' }),
      engine.call('setMode', { vip: 'vip4', mode: 'migrating' }),
      engine.call('setMode', { vip: 'nosuch', mode: 'normal' }),
      engine.call('setMode', { vip: 'vip1', mode: 'normal' }),
    ];
    const outcomes = await Promise.allSettled(asked);
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    expect(String((outcomes[3] as PromiseRejectedResult).reason)).toMatch(/no VIP named 'nosuch'/);
    expect(await engine.call('modeTable')).toEqual({ vip1: 'normal', vip4: 'migrating' });
    nftApply(byNft, buildRuleset(config, new Map([['vip1', 'normal'], ['vip4', 'migrating']]), { hold: 'drop', queueNumber: 1 }));
    expect(modeSets(byEngine)).toEqual(modeSets(byNft));

    // Someone removed one of vip1's elements behind the engine's back: vip1's next change is
    // refused by the kernel, and vip4's change queued with it still happens.
    const gone = ['delete', 'element', 'ip', 'vipshift', 'vips_normal', '{ 203.0.113.10 . tcp . 7 }'];
    for (const ns of [byEngine, byNft]) sh('ip', ['netns', 'exec', ns, 'nft', ...gone]);
    const [, refused, vip4] = await Promise.allSettled([
      engine.call('setMode', { vip: 'vip4', mode: 'normal' }),
      engine.call('setMode', { vip: 'vip1', mode: 'migrating' }),
      engine.call('setMode', { vip: 'vip4', mode: 'absent' }),
    ]);
    expect(refused.status).toBe('rejected');
    expect(String((refused as PromiseRejectedResult).reason)).toMatch(/delete element in set vipshift vips_normal: ENOENT/);
    expect(vip4.status).toBe('fulfilled');
    expect(await engine.call('modeTable')).toEqual({ vip1: 'normal' });
    nftApply(byNft, buildModeChange(vip('vip4'), 'migrating', 'absent'));
    expect(modeSets(byEngine)).toEqual(modeSets(byNft));
    await engine.call('stop');
  });
});
