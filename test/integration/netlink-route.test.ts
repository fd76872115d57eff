import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetlinkError } from '../../src/netlink/socket.js';
import { Addresses } from '../../src/netlink/route.js';
import { createNs, deleteNs, inNs, removeLeftovers } from './netlink-netns.js';

describe('Addresses (rtnetlink) in a namespace', () => {
  let ns: string;
  let addresses: Addresses;

  beforeAll(() => {
    removeLeftovers();
    ns = createNs('r');
    inNs(ns, 'ip', ['link', 'add', 'ext0', 'type', 'veth', 'peer', 'name', 'ext0p']); // no dummy module on every kernel
    inNs(ns, 'ip', ['link', 'set', 'ext0', 'up']);
    addresses = new Addresses({ netns: ns });
  });
  afterAll(() => {
    addresses?.close();
    if (ns) deleteNs(ns);
  });

  it('adds, lists and removes a VIP, idempotently', async () => {
    expect(await addresses.add('ext0', '203.0.113.10/24', 'ext0:vip1')).toBe(true);
    expect(await addresses.add('ext0', '203.0.113.10/24')).toBe(false);
    expect(await addresses.add('ext0', '203.0.113.11/32')).toBe(true);
    const listed = await addresses.list('ext0');
    expect(listed.map((a) => `${a.address}/${a.prefixLength}`)).toEqual(['203.0.113.10/24', '203.0.113.11/32']);
    expect(listed[0]!.label).toBe('ext0:vip1');
    expect(inNs(ns, 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'ext0'])).toContain('203.0.113.11/32');
    expect(await addresses.remove('ext0', '203.0.113.10/24')).toBe(true);
    expect(await addresses.remove('ext0', '203.0.113.10/24')).toBe(false);
    expect((await addresses.list('ext0')).map((a) => a.address)).toEqual(['203.0.113.11']);
    // The host's namespace was never touched.
    expect(inNs(ns, 'ip', ['-4', '-o', 'addr', 'show', 'dev', 'ext0'])).not.toContain('203.0.113.10/');
  });

  it('names the interface and errno of a missing interface', async () => {
    const err = await addresses.add('nosuch0', '203.0.113.12/24').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetlinkError);
    expect((err as NetlinkError).message).toMatch(/RTM_GETLINK nosuch0: ENODEV/);
  });
});
