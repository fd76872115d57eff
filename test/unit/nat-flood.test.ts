import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/load.js';
import { parseApplianceConfig } from '../../src/config/appliance.js';
import { SYNPROXY_ACK_MARK, floodCommands, synproxyEngageCommands, synproxyPortsOf } from '../../src/nat/flood.js';
import { HOLD_MARK, VIP_ID_MASK } from '../../src/nat/ruleset.js';
import type { NftBatch, NftCommand } from '../../src/kernel/nft.js';

const configWith = (flood?: unknown) =>
  parseApplianceConfig(
    JSON.stringify({
      appliance: 'lb1',
      api: { listen: '192.0.2.11:8441' },
      interfaces: { external: 'ext0', internal: 'int0' },
      vips: [
        { name: 'vip1', id: 1, address: '203.0.113.10', insideAddress: '198.18.0.10', ports: [7, 80], mode: 'dnat', servers: [{ address: '198.18.0.101' }], owner: 'lb1' },
        { name: 'vip4', id: 4, address: '203.0.113.13', insideAddress: '198.18.0.13', ports: [80], mode: 'fullnat', snatPorts: '20000-29999', servers: [{ address: '198.18.0.101' }], owner: 'lb1' },
      ],
      ...(flood === undefined ? {} : { flood }),
    }),
    'lb1.json',
  );

const added = (cmds: NftCommand[], kind: string) => cmds.flatMap((c) => (c.add?.[kind] ? [c.add[kind] as Record<string, unknown>] : []));
const chains = (cmds: NftCommand[]) => added(cmds, 'chain').map((c) => c.name);

describe('the SYN flood section of the ruleset', () => {
  it('is on by default: SYNPROXY above 2,000 SYN/s per VIP port, limits per VIP port and per client address', () => {
    const config = configWith();
    expect(config.flood).toEqual({
      synproxy: { enabled: true, aboveRate: 2000, holdSeconds: 30, mss: 1460, wscale: 7, timestamp: true, sackPerm: true },
      newConnectionsPerVip: 50_000,
      connectionsPerSource: 20_000,
    });
    const cmds = floodCommands(config, 'vipshift');
    expect(chains(cmds)).toEqual(['syn_raw', 'synproxy_in', 'nat_output', 'synproxy_ack_out', 'synproxy_ack', 'mgmt_in', 'mgmt_out', 'flood_limits', 'limits_in', 'limits_out']);
    expect(JSON.stringify(cmds)).toContain('"right":"192.0.2.11"}},{"notrack":null}');
    const text = JSON.stringify(cmds);
    expect(text).toContain('"synproxy":{"mss":1460,"wscale":7,"flags":["timestamp","sack-perm"]}');
    expect(text).toContain('"rate":2000,"burst":2000');
    expect(text).toContain('"ct count":{"val":20000,"inv":true}');
    // The cookie ACK is let through the reject chain, first in it.
    const insert = cmds.find((c) => c.insert)!.insert!.rule as { chain: string; expr: unknown[] };
    expect(insert.chain).toBe('reject');
    expect(JSON.stringify(insert.expr)).toContain('@synproxy_active');
    // One counter per VIP and kind, reached through maps keyed by each VIP port.
    expect(added(cmds, 'counter').map((c) => c.name)).toEqual([
      'synproxied_vip1', 'synproxied_vip4', 'limited_vip_vip1', 'limited_vip_vip4', 'limited_source_vip1', 'limited_source_vip4',
    ]);
    const map = added(cmds, 'map').find((m) => m.name === 'synproxied_counters')!;
    expect((map.elem as unknown[]).length).toBe(3);
  });

  it("keeps a flood's SYNs out of the hold: a held VIP port whose address is here meters SYNs, and over the rate they go to SYNPROXY instead of the queue", () => {
    const cmds = floodCommands(configWith(), 'vipshift');
    const hold = cmds.flatMap((c) => (c.insert ? [c.insert.rule as { chain: string; expr: unknown[]; comment: string }] : [])).filter((r) => r.chain === 'hold');
    // Each is inserted at the head: the meter, inserted last, runs first.
    expect(hold.map((r) => r.comment)).toEqual(['not held: SYNPROXY answers it (syn_raw, synproxy_in)', 'SYNs over the rate at a held VIP port (a short burst): SYNPROXY on']);
    const [pass, meter] = hold.map((r) => JSON.stringify(r.expr));
    for (const e of [pass!, meter!]) {
      expect(e).toContain('"right":"@vips_migrating"');
      expect(e).toContain('{"fib":{"result":"type","flags":["daddr"]}},"right":"local"');
    }
    expect(pass).toContain('"right":"@synproxy_active"');
    expect(pass).toContain('{"accept":null}');
    // Its own meter, whose burst is a tenth of a second at the rate, not the normal meter's second:
    // a flood's SYNs held before SYNPROXY engages lengthen the hold and can fill its queue.
    expect(meter).toContain('"set":"@held_syn_rate"');
    expect(meter).toContain('"rate":2000,"burst":200');
    expect(meter).toContain('"set":"@synproxy_active"');
    expect(JSON.stringify(floodCommands(configWith({ synproxy: { aboveRate: 5 } }), 'vipshift'))).toContain('"rate":5,"burst":1,');
    expect(JSON.stringify(floodCommands(configWith({ synproxy: { enabled: false } }), 'vipshift'))).not.toContain('"chain":"hold"');
  });

  it("zeroes the TSecr of SYNPROXY's ACK to the server after the kernel's own timestamp shift, and touches nothing else", () => {
    const cmds = floodCommands(configWith(), 'vipshift');
    const chain = (name: string) => added(cmds, 'chain').find((c) => c.name === name)!;
    const rules = (name: string) => added(cmds, 'rule').filter((r) => r.chain === name).map((r) => JSON.stringify(r.expr));
    // Marked in output: a pure ACK this appliance sends from an address that is not its own.
    expect(chain('synproxy_ack_out')).toMatchObject({ hook: 'output', type: 'filter' });
    const [mark] = rules('synproxy_ack_out');
    expect(mark).toContain('{"fib":{"result":"type","flags":["saddr"]}},"right":"local"');
    expect(mark).toContain('"op":"!="');
    expect(mark).toContain('"right":"ack"');
    expect(mark).toContain(`{"|":[{"meta":{"key":"mark"}},${SYNPROXY_ACK_MARK}]}`);
    // Zeroed in postrouting after the SYNPROXY hook (INT_MAX - 1), which shifts it.
    expect(chain('synproxy_ack')).toMatchObject({ hook: 'postrouting', prio: 2147483647 });
    const [zero] = rules('synproxy_ack');
    expect(zero).toContain(`"right":${SYNPROXY_ACK_MARK}`);
    expect(zero).toContain('{"mangle":{"key":{"tcp option":{"name":"timestamp","field":"tsecr"}},"value":0}}');
    // The mark shares no bit with the hold's.
    expect(SYNPROXY_ACK_MARK & (HOLD_MARK | VIP_ID_MASK)).toBe(0);
    // Without timestamps SYNPROXY shifts nothing: no chains.
    expect(chains(floodCommands(configWith({ synproxy: { timestamp: false } }), 'vipshift'))).not.toContain('synproxy_ack');
  });

  it('leaves out what is switched off', () => {
    const cmds = floodCommands(configWith({ synproxy: { enabled: false }, newConnectionsPerVip: 0, connectionsPerSource: 0 }), 'vipshift');
    expect(chains(cmds)).toEqual(['mgmt_in', 'mgmt_out']);
    const onlySource = floodCommands(configWith({ synproxy: { enabled: false }, newConnectionsPerVip: 0 }), 'vipshift');
    expect(chains(onlySource)).toEqual(['mgmt_in', 'mgmt_out', 'flood_limits', 'limits_in', 'limits_out']);
    expect(JSON.stringify(onlySource)).not.toContain('vip_new_rate');
  });

  it('options the servers do not support are left out of the SYN-ACK', () => {
    const text = JSON.stringify(floodCommands(configWith({ synproxy: { mss: 1400, wscale: 0, timestamp: false, sackPerm: false } }), 'vipshift'));
    expect(text).toContain('"synproxy":{"mss":1400,"wscale":0}');
  });

  it('a bad value names the file, line and field', () => {
    expect(() => configWith({ synproxy: { aboveRate: 0 } })).toThrow(ConfigError);
    expect(() => configWith({ synproxy: { aboveRate: 0 } })).toThrow(/flood\.synproxy\.aboveRate: expected a SYN rate in 1\.\.10000000 SYN\/s/);
    expect(() => configWith({ synproxy: { wscale: 15 } })).toThrow(/flood\.synproxy\.wscale/);
    expect(() => configWith({ connectionsPerSource: -1 })).toThrow(/flood\.connectionsPerSource/);
    expect(() => configWith({ synproxi: {} })).toThrow(/flood/);
  });
});

describe("a pre-copy's source hands its target the ports SYNPROXY answers for", () => {
  const [vip1, vip4] = configWith().vips as [ReturnType<typeof configWith>['vips'][number], ReturnType<typeof configWith>['vips'][number]];
  // As nft 1.0 lists a set with timeouts (`nft -j list set ip vipshift synproxy_active`): seconds.
  const listing: NftBatch = {
    nftables: [
      { metainfo: { version: '1.0.6', json_schema_version: 1 } },
      {
        set: {
          family: 'ip', name: 'synproxy_active', table: 'vipshift', type: ['ipv4_addr', 'inet_proto', 'inet_service'], flags: ['timeout'],
          elem: [
            { elem: { val: { concat: ['203.0.113.10', 'tcp', 7] }, timeout: 30, expires: 21 } },
            { elem: { val: { concat: ['203.0.113.13', 'tcp', 80] }, timeout: 30, expires: 3 } },
            { elem: { val: { concat: ['203.0.113.10', 'tcp', 8080] }, timeout: 30, expires: 9 } }, // not a port of vip1
            { elem: { val: { concat: ['203.0.113.10', 'udp', 80] }, timeout: 30 } }, // not its protocol
            { nonsense: true },
          ],
        },
      },
    ],
  };

  it('reads the VIP\'s own ports and their seconds left from the listing', () => {
    expect(synproxyPortsOf(listing, vip1)).toEqual([{ port: 7, seconds: 21 }]);
    expect(synproxyPortsOf(listing, vip4)).toEqual([{ port: 80, seconds: 3 }]);
    expect(synproxyPortsOf({ nftables: [{ set: { name: 'synproxy_active' } }] }, vip1)).toEqual([]);
  });

  it('puts them in synproxy_active for those seconds (at least one), leaving out what is not the VIP\'s', () => {
    expect(synproxyEngageCommands(vip1, [{ port: 7, seconds: 21 }, { port: 80, seconds: 0 }, { port: 22, seconds: 5 }], 'vipshift')).toEqual([
      {
        add: {
          element: {
            family: 'ip', table: 'vipshift', name: 'synproxy_active',
            elem: [
              { elem: { val: { concat: ['203.0.113.10', 'tcp', 7] }, timeout: 21 } },
              { elem: { val: { concat: ['203.0.113.10', 'tcp', 80] }, timeout: 1 } },
            ],
          },
        },
      },
    ]);
    expect(synproxyEngageCommands(vip1, [{ port: 22, seconds: 5 }], 'vipshift')).toEqual([]);
  });
});
