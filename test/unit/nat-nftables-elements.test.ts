import { describe, expect, it } from 'vitest';
import { parseApplianceConfig } from '../../src/config/appliance.js';
import { elementChanges } from '../../src/nat/nft-elements.js';
import { buildModeChange, buildPoolChange } from '../../src/nat/ruleset.js';
import { poolTable } from '../../src/nat/pool.js';
import { type NftBatch } from '../../src/kernel/nft.js';
import { parseAttributes, parseMessages, type Attribute } from '../../src/netlink/message.js';
import { encodeSetElementBatch, markValue } from '../../src/netlink/nftables.js';

const config = parseApplianceConfig(
  JSON.stringify({
    appliance: 'lb1',
    api: { listen: '192.0.2.11:8441' },
    interfaces: { external: 'ext0', internal: 'int0' },
    vips: [
      { name: 'vip1', id: 1, address: '203.0.113.10', insideAddress: '198.18.0.10', ports: [7, 80], mode: 'dnat', backends: [{ address: '198.18.0.101' }], owner: 'lb1' },
      {
        name: 'vip4', id: 4, address: '203.0.113.13', insideAddress: '198.18.0.13', ports: [80], mode: 'fullnat', snatPorts: '20000-29999',
        backends: [{ address: '198.18.0.101' }, { address: '198.18.0.102' }], owner: 'lb1',
      },
    ],
  }),
  'test.json',
);
const vip = (name: string) => config.vips.find((v) => v.name === name)!;
const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const only = (attrs: Attribute[], type: number): Attribute => {
  const found = attrs.filter((a) => a.type === type);
  expect(found).toHaveLength(1);
  return found[0]!;
};
/** The elements of one set-element message: [key bytes, data attribute] per element. */
function elementsOf(payload: Buffer): { key: Buffer; data?: Attribute }[] {
  const top = parseAttributes(payload, 4);
  const list = only(top, 3); // NFTA_SET_ELEM_LIST_ELEMENTS
  expect(list.nested).toBe(true);
  return parseAttributes(list.value).map((elem) => {
    expect(elem.type).toBe(1); // NFTA_LIST_ELEM
    const attrs = parseAttributes(elem.value);
    const key = only(parseAttributes(only(attrs, 1).value), 1).value; // NFTA_SET_ELEM_KEY → NFTA_DATA_VALUE
    const data = attrs.find((a) => a.type === 2); // NFTA_SET_ELEM_DATA
    return { key, ...(data ? { data } : {}) };
  });
}

describe('nf_tables set-element batch', () => {
  it('frames the changes between BATCH_BEGIN and BATCH_END for the nftables subsystem', () => {
    const { buffer, count } = encodeSetElementBatch(elementChanges(buildModeChange(vip('vip1'), 'normal', 'migrating')), 1000);
    const messages = parseMessages(buffer);
    // delete vips_normal, delete vip_dnat, add vips_migrating, add replies_migrating
    expect(count).toBe(4);
    expect(messages.map((m) => [m.type, m.flags, m.seq])).toEqual([
      [0x10, 0x001, 1000], // NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST
      [0x0a0e, 0x005, 1001], // NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK
      [0x0a0e, 0x005, 1002],
      [0x0a0c, 0x405, 1003], // NFT_MSG_NEWSETELEM, ... | NLM_F_CREATE
      [0x0a0c, 0x405, 1004],
      [0x11, 0x001, 1005], // NFNL_MSG_BATCH_END
    ]);
    // nfgenmsg: AF_UNSPEC, NFNETLINK_V0, res_id NFNL_SUBSYS_NFTABLES big-endian.
    expect(messages[0]!.payload).toEqual(hex('00 00 000a'));
    expect(messages[5]!.payload).toEqual(hex('00 00 000a'));
    // Element messages: NFPROTO_IPV4, version 0, res_id 0.
    expect(messages[1]!.payload.subarray(0, 4)).toEqual(hex('02 00 0000'));
  });

  it('lays out a set key exactly: address . proto . service, each in a 4-byte register', () => {
    const batch: NftBatch = { nftables: [{ add: { element: { family: 'ip', table: 'vipshift', name: 'vips_normal', elem: [{ concat: ['203.0.113.10', 'tcp', 7] }] } } }] };
    const encoded = encodeSetElementBatch(elementChanges(batch), 7).buffer;
    // The message after the 20-byte BATCH_BEGIN, byte for byte.
    const expected = hex(`
      50000000 0c0a 0504 08000000 00000000
      02 00 0000
      0d00 0100 7669707368696674 00 000000
      1000 0200 766970735f6e6f726d616c 00
      1c00 0380 1800 0180 1400 0180 1000 0100
      cb00710a 06000000 00070000`);
    expect(encoded.subarray(20, 20 + expected.length)).toEqual(expected);
    expect(encoded.length).toBe(20 + expected.length + 20);
  });

  it('maps to a mark in host byte order, and the inside address key has two registers', () => {
    const changes = elementChanges(buildModeChange(vip('vip4'), 'absent', 'migrating'));
    expect(changes.map((c) => [c.verb, c.set])).toEqual([['add', 'vips_migrating'], ['add', 'inside_migrating']]);
    const messages = parseMessages(encodeSetElementBatch(changes, 1).buffer);
    const [migrating] = elementsOf(messages[1]!.payload);
    expect(migrating!.key).toEqual(hex('cb00710d 06000000 00500000'));
    const markValue = only(parseAttributes(migrating!.data!.value), 1).value; // NFTA_DATA_VALUE
    const expectedMark = Buffer.alloc(4);
    expectedMark.writeUInt32LE(0x40000004); // this machine is little-endian (x86)
    expect(markValue).toEqual(expectedMark);
    const [inside] = elementsOf(messages[2]!.payload);
    expect(inside!.key).toEqual(hex('c612000d 06000000'));
  });

  it('maps to a goto verdict: NFTA_DATA_VERDICT { code NFT_GOTO big-endian, chain }', () => {
    const changes = elementChanges(buildModeChange(vip('vip1'), 'absent', 'normal'));
    expect(changes.map((c) => [c.verb, c.set, c.elements.length])).toEqual([['add', 'vips_normal', 2], ['add', 'vip_dnat', 2]]);
    const messages = parseMessages(encodeSetElementBatch(changes, 1).buffer);
    const elements = elementsOf(messages[2]!.payload);
    expect(elements.map((e) => e.key)).toEqual([hex('cb00710a 06000000 00070000'), hex('cb00710a 06000000 00500000')]);
    const verdict = only(parseAttributes(elements[0]!.data!.value), 2); // NFTA_DATA_VERDICT
    expect(verdict.nested).toBe(true);
    const v = parseAttributes(verdict.value);
    expect(only(v, 1).value).toEqual(hex('fffffffc')); // NFTA_VERDICT_CODE = NFT_GOTO (-4)
    expect(only(v, 2).value).toEqual(Buffer.from('vip_vip1\0')); // NFTA_VERDICT_CHAIN
  });

  it('writes a pool change: slots and targets by mark, ports by mark . service, a lone service as two bytes', () => {
    const v = vip('vip4');
    const from = poolTable(v);
    const to = poolTable({ ...v, backends: [v.backends[0]!, { address: '198.18.0.103', port: 8080, weight: 1 }] });
    const changes = elementChanges(buildPoolChange(v, from, to));
    const bySet = (verb: string, set: string) => changes.find((c) => c.verb === verb && c.set === set);
    // Target 1 changes: its address and its port for VIP port 80; no slot changes hands.
    expect(changes.map((c) => `${c.verb} ${c.set}`)).toEqual(['delete pool_vip4', 'delete ports_vip4', 'add pool_vip4', 'add ports_vip4']);
    expect(bySet('delete', 'pool_vip4')!.elements).toEqual([{ key: markValue(1) }]);
    expect(bySet('add', 'pool_vip4')!.elements).toEqual([{ key: markValue(1), data: hex('c6120067') }]);
    expect(bySet('add', 'ports_vip4')!.elements).toEqual([{ key: Buffer.concat([markValue(1), hex('00500000')]), data: hex('1f90') }]);
    const drained = elementChanges(buildPoolChange(v, from, poolTable({ ...v, backends: [v.backends[0]!, { ...v.backends[1]!, weight: 0 }] })));
    const slots = drained.find((c) => c.verb === 'add' && c.set === 'slots_vip4')!.elements;
    expect(slots.length).toBe(128);
    expect(slots.every((e) => e.key.length === 4 && (e.data as Buffer).equals(markValue(0)))).toBe(true);
  });

  it('splits a change whose element list would not fit one attribute (16-bit length) over several messages', () => {
    const elements = Array.from({ length: 10_000 }, (_, i) => ({ key: markValue(i), data: markValue(i % 10) }));
    const { buffer, count, changes } = encodeSetElementBatch([{ verb: 'add', table: 'vipshift', set: 'slots_big', elements }], 1);
    expect(count).toBeGreaterThan(1);
    expect(changes.reduce((n, c) => n + c.elements.length, 0)).toBe(10_000);
    const messages = parseMessages(buffer);
    expect(messages).toHaveLength(count + 2);
    const keys = messages.slice(1, -1).flatMap((m) => elementsOf(m.payload).map((e) => e.key));
    expect(keys).toEqual(elements.map((e) => e.key));
  });

  it('leaves out changes without elements', () => {
    const { buffer, count } = encodeSetElementBatch([{ verb: 'add', table: 'vipshift', set: 'vips_normal', elements: [] }], 5);
    expect(count).toBe(0);
    expect(parseMessages(buffer).map((m) => [m.type, m.seq])).toEqual([[0x10, 5], [0x11, 6]]);
  });

  it('refuses what it does not know, naming the set', () => {
    const el = (name: string, elem: unknown[]): NftBatch => ({ nftables: [{ add: { element: { family: 'ip', table: 'vipshift', name, elem } } }] });
    expect(() => elementChanges(el('traffic_counters', [[1, 'traffic_vip1']]))).toThrow(/set traffic_counters: not a set a mode or pool change writes/);
    expect(() => elementChanges(el('vips_normal', [{ concat: ['203.0.113.10', 'tcp'] }]))).toThrow(/set vips_normal: .* not a concatenation of ipv4_addr \. inet_proto \. inet_service/);
    expect(() => elementChanges(el('vips_normal', [{ concat: ['203.0.113.300', 'tcp', 7] }]))).toThrow(/set vips_normal: "203.0.113.300" is not an ipv4_addr/);
    expect(() => elementChanges(el('vips_normal', [{ concat: ['203.0.113.10', 'sctp', 7] }]))).toThrow(/set vips_normal: "sctp" is not an inet_proto/);
    expect(() => elementChanges(el('vips_migrating', [[{ concat: ['203.0.113.10', 'tcp', 7] }, 'x']]))).toThrow(/set vips_migrating: "x" is not a mark/);
    expect(() => elementChanges(el('vip_dnat', [[{ concat: ['203.0.113.10', 'tcp', 7] }, { accept: null }]]))).toThrow(/set vip_dnat: .* not a goto or jump verdict/);
    expect(() => elementChanges({ nftables: [{ add: { rule: { family: 'ip', table: 'vipshift', chain: 'hold', expr: [] } } }] })).toThrow(/not a set element command/);
  });
});
