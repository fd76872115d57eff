/**
 * The speaker's receive and act paths without root: frames go through an in-memory link and
 * addresses into a map; the clock is manual. The real link and rtnetlink are covered by the
 * integration tests against keepalived.
 */
import { describe, expect, it } from 'vitest';
import { decodeAdvertisementFrame, encodeAdvertisementFrame, type Advertisement } from '../../src/vrrp/advert.js';
import { decodeArpFrame, encodeArpFrame } from '../../src/packet/arp.js';
import { parseVrrpConfig, type VrrpConfigInput } from '../../src/config/vrrp.js';
import type { Link } from '../../src/kernel/pcap-link.js';
import type { AddressTable } from '../../src/vrrp/addresses.js';
import { Speaker } from '../../src/vrrp/speaker.js';
import { FakeClock } from '../support/vrrp-fake-clock.js';
import { prng } from '../support/prng.js';
import { withV2Checksum, withVrrpChecksum } from '../support/vrrp-frames.js';

class MemoryLink implements Link {
  readonly sent: Buffer[] = [];
  private listener: ((frame: Buffer, at: number) => void) | undefined;
  constructor(readonly ifname: string) {}
  send(frame: Buffer): void {
    this.sent.push(frame);
  }
  onFrame(listener: (frame: Buffer, at: number) => void): void {
    this.listener = listener;
  }
  deliver(frame: Buffer): void {
    this.listener?.(frame, Date.now());
  }
  close(): void {}
}

class MemoryAddresses implements AddressTable {
  readonly on = new Map<string, Set<string>>();
  async add(ifname: string, cidr: string) {
    if (!this.on.has(ifname)) this.on.set(ifname, new Set());
    this.on.get(ifname)?.add(cidr);
  }
  async remove(ifname: string, cidr: string) {
    this.on.get(ifname)?.delete(cidr);
  }
  has(ifname: string, cidr: string) {
    return this.on.get(ifname)?.has(cidr) ?? false;
  }
}

function speaker(vrrp: VrrpConfigInput, leftovers: [string, string][] = []) {
  const clock = new FakeClock();
  const links = new Map<string, MemoryLink>();
  const addresses = new MemoryAddresses();
  for (const [ifname, cidr] of leftovers) void addresses.add(ifname, cidr);
  const facts: Record<string, { mac: string; addresses: string[] }> = {
    ext0: { mac: '02:00:00:00:00:03', addresses: ['203.0.113.3'] },
    int0: { mac: '02:00:00:00:01:03', addresses: ['198.18.0.3'] },
  };
  const up = new Set(['ext0', 'int0']);
  const vmacs = new Map<string, { base: string; mac: string }>();
  const s = new Speaker(parseVrrpConfig(vrrp), {
    addresses,
    clock,
    virtualMacs: { create: (base, name, mac) => vmacs.set(name, { base, mac }), remove: (name) => vmacs.delete(name) },
    openLink: (ifname) => {
      const l = new MemoryLink(ifname);
      links.set(ifname, l);
      return l;
    },
    interfaceFacts: (ifname) => facts[ifname] as { mac: string; addresses: string[] },
    linkIsUp: (ifname) => up.has(ifname),
  });
  s.start();
  const link = (ifname: string) => links.get(ifname) as MemoryLink;
  /** Let the address work (promises) settle after a clock step. */
  const settle = () => new Promise((r) => setImmediate(r));
  return { s, clock, link, addresses, up, settle, vmacs };
}

const vip1 = { name: 'vip1', interface: 'ext0', vrid: 10, priority: 100, advertIntervalSeconds: 0.1, addresses: ['203.0.113.10/24'] };
const master = (over: Partial<Advertisement> = {}) =>
  encodeAdvertisementFrame({ vrid: 10, priority: 200, maxAdverInt: 10, addresses: ['203.0.113.10'], ...over }, { source: '203.0.113.2' });

describe('VRRP speaker', () => {
  it('becomes master: advert from the virtual MAC, addresses added, gratuitous ARPs from the interface MAC', async () => {
    const { s, clock, link, addresses, settle } = speaker({ instances: [{ ...vip1, garpRepeat: 3, garpIntervalSeconds: 0.5 }] });
    clock.advance(361);
    await settle();
    expect(s.state()[0]?.state).toBe('master');
    expect(addresses.has('ext0', '203.0.113.10/24')).toBe(true);
    const sent = link('ext0').sent;
    const advert = decodeAdvertisementFrame(sent[0] as Buffer);
    expect(advert.ok && advert.advert).toMatchObject({ vrid: 10, priority: 100, maxAdverInt: 10, source: '203.0.113.3', sourceMac: '00:00:5e:00:01:0a' });
    const garps = () => sent.map((f) => decodeArpFrame(f)).filter((a) => a !== undefined);
    expect(garps()).toHaveLength(1);
    expect(garps()[0]).toMatchObject({ senderProtocolAddress: '203.0.113.10', senderHardwareAddress: '02:00:00:00:00:03' });
    clock.advance(1000);
    expect(garps()).toHaveLength(3); // garpRepeat 3, garpIntervalSeconds 0.5
    expect(s.counters().garpsSent).toBe(3);
  });

  it('a flood of malformed adverts leaves the state unchanged, each one counted by reason', async () => {
    const { s, clock, link, settle } = speaker({ instances: [vip1] });
    const rnd = prng(0x5eed);
    const kinds: [string, () => Buffer][] = [
      ['ttl', () => ((f) => ((f[22] = 64), f))(master({ priority: 255 }))],
      ['checksum', () => ((f) => ((f[36] = 255), f))(master())], // priority raised after the checksum
      ['version', () => ((f) => ((f[34] = 0x11), withVrrpChecksum(f)))(master({ priority: 255 }))],
      ['vrid', () => master({ vrid: 11, priority: 255 })],
      ['length', () => ((f) => ((f[37] = 2), withVrrpChecksum(f)))(master({ priority: 255 }))], // Count 2, one address
      ['ip-header', () => master({ priority: 255 }).subarray(0, 44)],
      ['truncated', () => Buffer.from(Array.from({ length: Math.floor(rnd() * 42) }, () => Math.floor(rnd() * 256)))],
    ];
    let expected = 0;
    // A valid master (priority 200 > 100) advertises every 100 ms amid 200 bad frames each time.
    for (let round = 0; round < 50; round++) {
      link('ext0').deliver(master());
      for (let i = 0; i < 200; i++) {
        const [, make] = kinds[Math.floor(rnd() * kinds.length)] as [string, () => Buffer];
        link('ext0').deliver(make());
        expected++;
      }
      clock.advance(100);
    }
    await settle();
    const c = s.counters();
    expect(s.state()[0]?.state).toBe('backup');
    expect(c.advertsReceived).toBe(50);
    expect(Object.values(c.badAdverts).reduce((a, b) => a + (b ?? 0), 0)).toBe(expected);
    expect(Object.keys(c.badAdverts).sort()).toEqual(['checksum', 'ip-header', 'length', 'truncated', 'ttl', 'version', 'vrid']);
    expect(c.transitions.master).toBe(0);

    // As master: forged higher-priority adverts that fail §7.1 do not make it step down.
    clock.advance(1000);
    expect(s.state()[0]?.state).toBe('master');
    for (let i = 0; i < 1000; i++) link('ext0').deliver(((f) => ((f[22] = 1), f))(master({ priority: 255 })));
    expect(s.state()[0]?.state).toBe('master');
    expect(s.counters().badAdverts.ttl).toBeGreaterThanOrEqual(1000);
  });

  it('VRRPv2 (vrrp_version 2): sends v2 adverts, follows a v2 master, drops v3 and other intervals, warns on PASS once', async () => {
    const v2 = { ...vip1, version: 2 as const, advertIntervalSeconds: 1 };
    const { s, clock, link, settle } = speaker({ instances: [v2] });
    const v2master = (over: Partial<Advertisement> = {}) => master({ version: 2, maxAdverInt: 100, ...over });
    // RFC 3768 §6.1: Master_Down_Interval = 3 × 1 s + (256 − 100)/256 s = 3609.375 ms.
    expect(s.state()[0]).toMatchObject({ version: 2, masterDownInterval: 3609.375 });
    for (let i = 0; i < 5; i++) {
      link('ext0').deliver(v2master());
      link('ext0').deliver(master({ priority: 255 })); // a VRRPv3 advert on a v2 VRID
      link('ext0').deliver(v2master({ priority: 255, maxAdverInt: 200 })); // Adver Int 2 s, ours is 1 s
      clock.advance(1000);
    }
    const pass = v2master();
    pass[34 + 4] = 1;
    pass.write('secret', 34 + 16, 'latin1');
    link('ext0').deliver(withV2Checksum(pass));
    link('ext0').deliver(withV2Checksum(Buffer.from(pass)));
    await settle();
    expect(s.state()[0]?.state).toBe('backup');
    expect(s.counters()).toMatchObject({ advertsReceived: 7, authenticationIgnored: 2, badAdverts: { version: 5, interval: 5 } });
    clock.advance(3610);
    await settle();
    expect(s.state()[0]?.state).toBe('master');
    const sent = decodeAdvertisementFrame(link('ext0').sent.find((f) => decodeAdvertisementFrame(f).ok) as Buffer);
    expect(sent.ok && sent.advert).toMatchObject({ version: 2, authType: 0, maxAdverInt: 100, priority: 100 });
  });

  it('useVmac: the addresses go on vrrp.{VRID} with 00-00-5E-00-01-{VRID}; adverts and gratuitous ARPs carry it; stop deletes it', async () => {
    const { s, clock, link, addresses, settle, vmacs } = speaker({
      instances: [{ ...vip1, useVmac: true, addresses: ['203.0.113.10/24', { address: '198.18.0.10/24', dev: 'int0' }] }],
    });
    expect(vmacs.get('vrrp.10')).toEqual({ base: 'ext0', mac: '00:00:5e:00:01:0a' });
    expect(s.state()[0]?.virtualMacInterface).toBe('vrrp.10');
    clock.advance(400);
    await settle();
    expect(addresses.has('vrrp.10', '203.0.113.10/24')).toBe(true);
    expect(addresses.has('int0', '198.18.0.10/24')).toBe(true); // another dev keeps its interface
    const arps = link('ext0').sent.map((f) => decodeArpFrame(f)).filter((a) => a !== undefined);
    expect(arps[0]).toMatchObject({ sourceMac: '00:00:5e:00:01:0a', senderHardwareAddress: '00:00:5e:00:01:0a', senderProtocolAddress: '203.0.113.10' });
    const inside = link('int0').sent.map((f) => decodeArpFrame(f)).filter((a) => a !== undefined);
    expect(inside[0]).toMatchObject({ senderHardwareAddress: '02:00:00:00:01:03' });
    const advert = decodeAdvertisementFrame(link('ext0').sent[0] as Buffer);
    expect(advert.ok && advert.advert.sourceMac).toBe('00:00:5e:00:01:0a');
    await s.stop();
    expect(vmacs.size).toBe(0);
    expect(() => parseVrrpConfig({ instances: [{ ...vip1, useVmac: true }, { ...vip1, name: 'vip2', interface: 'int0', useVmac: true }] })).toThrow(/vrrp\.10 already used/);
  });

  it('removes addresses left behind by a crashed run when it starts as backup', async () => {
    const { s, addresses, settle } = speaker({ instances: [vip1] }, [['ext0', '203.0.113.10/24']]);
    await settle();
    expect(s.state()[0]?.state).toBe('backup');
    expect(addresses.has('ext0', '203.0.113.10/24')).toBe(false);
    expect(() => s.start()).toThrow('the VRRP speaker starts once');
  });

  it('exposes its counters as Prometheus metrics', async () => {
    const { Registry } = await import('prom-client');
    const { registerVrrpMetrics } = await import('../../src/vrrp/metrics.js');
    const { s, clock, link, settle } = speaker({ instances: [vip1] });
    const registry = new Registry();
    registerVrrpMetrics(s, registry);
    clock.advance(400);
    await settle();
    clock.advance(1); // the gARP repeats (garpInterval 0) run on the clock too
    link('ext0').deliver(((f) => ((f[22] = 1), f))(master()));
    const text = await registry.metrics();
    expect(text).toContain('vipshift_vrrp_adverts_sent_total{instance="vip1"} 1');
    expect(text).toContain('vipshift_vrrp_bad_adverts_total{reason="ttl"} 1');
    expect(text).toContain('vipshift_vrrp_gratuitous_arps_sent_total 5');
  });

  it('release: priority-0 advert and addresses removed before it resolves; claim takes them back', async () => {
    const { s, clock, link, addresses, settle } = speaker({ instances: [vip1] });
    clock.advance(400);
    await settle();
    expect(addresses.has('ext0', '203.0.113.10/24')).toBe(true);
    await s.release('vip1');
    expect(addresses.has('ext0', '203.0.113.10/24')).toBe(false);
    const last = decodeAdvertisementFrame(link('ext0').sent.at(-1) as Buffer);
    expect(last.ok && last.advert.priority).toBe(0);
    expect(s.state()[0]?.state).toBe('backup');
    await s.claim('vip1');
    expect(addresses.has('ext0', '203.0.113.10/24')).toBe(true);
    await expect(s.release('nope')).rejects.toThrow(/no VRRP instance or sync group named 'nope'/);
  });

  it('a sync group moves the VIP and its inside address together, and release acts on the group', async () => {
    const { s, clock, link, addresses, settle } = speaker({
      instances: [vip1, { name: 'vip1-inside', interface: 'int0', vrid: 10, priority: 100, advertIntervalSeconds: 0.1, addresses: ['198.18.0.10/24'] }],
      syncGroups: [{ name: 'vip1-group', instances: ['vip1', 'vip1-inside'] }],
    });
    clock.advance(400); // vip1 (ext0) times out first, vip1-inside follows it at once
    await settle();
    expect(s.state().map((i) => i.state)).toEqual(['master', 'master']);
    expect(s.state()[1]?.transitions.master).toBe(1);
    expect([addresses.has('ext0', '203.0.113.10/24'), addresses.has('int0', '198.18.0.10/24')]).toEqual([true, true]);
    await s.release('vip1'); // a member's name releases its whole group
    expect(s.state().map((i) => i.state)).toEqual(['backup', 'backup']);
    expect([addresses.has('ext0', '203.0.113.10/24'), addresses.has('int0', '198.18.0.10/24')]).toEqual([false, false]);
    await s.claim('vip1-group');
    expect(s.state().map((i) => i.state)).toEqual(['master', 'master']);
    // A higher-priority master on the inside only: the whole group steps down.
    link('int0').deliver(encodeAdvertisementFrame({ vrid: 10, priority: 200, maxAdverInt: 10, addresses: ['198.18.0.10'] }, { source: '198.18.0.2' }));
    await settle();
    expect(s.state().map((i) => i.state)).toEqual(['backup', 'backup']);
    expect(addresses.has('ext0', '203.0.113.10/24')).toBe(false);
  });

  it('interface tracking: link down → fault (addresses removed), link up → backup again', async () => {
    const { s, clock, addresses, up, settle } = speaker({ instances: [{ ...vip1, trackInterfaces: ['int0'] }] });
    clock.advance(400);
    await settle();
    expect(s.state()[0]?.state).toBe('master');
    up.delete('int0');
    clock.advance(100);
    await settle();
    expect(s.state()[0]?.state).toBe('fault');
    expect(addresses.has('ext0', '203.0.113.10/24')).toBe(false);
    await expect(s.claim('vip1')).rejects.toThrow('cannot claim vip1: vip1 is fault');
    up.add('int0');
    clock.advance(100);
    expect(s.state()[0]?.state).toBe('backup');
  });

  it('interface tracking in a sync group: one member\'s tracked link down → the whole group in fault', async () => {
    const { s, clock, addresses, up, settle } = speaker({
      instances: [vip1, { name: 'vip1-inside', interface: 'int0', vrid: 10, priority: 100, advertIntervalSeconds: 0.1, addresses: ['198.18.0.10/24'] }],
      syncGroups: [{ name: 'vip1-group', instances: ['vip1', 'vip1-inside'] }],
    });
    clock.advance(400);
    await settle();
    expect(s.state().map((i) => i.state)).toEqual(['master', 'master']);
    up.delete('int0');
    clock.advance(100);
    await settle();
    expect(s.state().map((i) => i.state)).toEqual(['fault', 'fault']);
    clock.advance(5000); // no member's down timer may bring it back while the link is down
    await settle();
    expect(s.state().map((i) => i.state)).toEqual(['fault', 'fault']);
    expect([addresses.has('ext0', '203.0.113.10/24'), addresses.has('int0', '198.18.0.10/24')]).toEqual([false, false]);
    up.add('int0');
    clock.advance(100);
    expect(s.state().map((i) => i.state)).toEqual(['backup', 'backup']);
    clock.advance(400);
    expect(s.state().map((i) => i.state)).toEqual(['master', 'master']);
  });

  it('unicast peers: ARP for the peer first, then adverts to its MAC; adverts from others are dropped', async () => {
    const { s, clock, link, settle } = speaker({ instances: [{ ...vip1, unicastPeers: ['203.0.113.2'] }] });
    clock.advance(400);
    await settle();
    expect(s.state()[0]?.state).toBe('master');
    const request = decodeArpFrame(link('ext0').sent[0] as Buffer);
    expect(request).toMatchObject({ operation: 1, targetProtocolAddress: '203.0.113.2', senderProtocolAddress: '203.0.113.3' });
    expect(s.counters().peersUnresolved).toBe(1);
    link('ext0').deliver(
      encodeArpFrame({ destinationMac: '02:00:00:00:00:03', sourceMac: '02:00:00:00:00:02', operation: 2, senderHardwareAddress: '02:00:00:00:00:02', senderProtocolAddress: '203.0.113.2', targetHardwareAddress: '02:00:00:00:00:03', targetProtocolAddress: '203.0.113.3' }),
    );
    clock.advance(100);
    const last = link('ext0').sent.at(-1) as Buffer;
    const advert = decodeAdvertisementFrame(last);
    expect(advert.ok && advert.advert).toMatchObject({ source: '203.0.113.3', destination: '203.0.113.2', priority: 100 });
    expect(last.subarray(0, 12).toString('hex')).toBe('020000000002' + '020000000003');
    const unicast = (source: string) =>
      encodeAdvertisementFrame({ vrid: 10, priority: 200, maxAdverInt: 10, addresses: ['203.0.113.10'] }, { source, destination: '203.0.113.3', destinationMac: '02:00:00:00:00:03' });
    link('ext0').deliver(unicast('203.0.113.9')); // not a configured peer
    expect(s.counters().badAdverts).toEqual({ peer: 1 });
    expect(s.state()[0]?.state).toBe('master');
    link('ext0').deliver(unicast('203.0.113.2'));
    expect(s.state()[0]?.state).toBe('backup');
  });
});

describe('neighbours: bounded and aged', () => {
  const arpFrom = (address: string, mac: string) =>
    encodeArpFrame({ destinationMac: 'ff:ff:ff:ff:ff:ff', sourceMac: mac, operation: 1, senderHardwareAddress: mac, senderProtocolAddress: address, targetHardwareAddress: '00:00:00:00:00:00', targetProtocolAddress: '203.0.113.3' });

  it('an ARP flood of 1,000,000 sender addresses leaves the speaker\'s memory bounded', () => {
    const { s, link } = speaker({ instances: [{ ...vip1, unicastPeers: ['203.0.113.2'] }] });
    // Senders cycle through 198.18.0.0/15 (131,072 addresses, the lab's benchmarking range).
    const frame = arpFrom('198.18.0.0', '02:00:00:00:00:00');
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < 1_000_000; i++) {
      frame.writeUInt32BE((0xc6120000 + (i % 131_072)) >>> 0, 28); // sender protocol address
      frame.writeUInt32BE(i, 24); // and a MAC of its own (low bytes of the sender hardware address)
      link('ext0').deliver(frame);
    }
    expect(s.neighbourCount()).toBe(0);
    // Before the bound, 131,072 entries held ~20 MB; now nothing is kept per sender.
    expect(process.memoryUsage().heapUsed - before).toBeLessThan(16 << 20);
    link('ext0').deliver(arpFrom('203.0.113.2', '02:00:00:00:00:02'));
    expect(s.neighbourCount()).toBe(1);
  });

  it('a peer\'s MAC is re-asked after 30 s and forgotten after 120 s of silence, then learned anew', async () => {
    const { s, clock, link, settle } = speaker({ instances: [{ ...vip1, unicastPeers: ['203.0.113.2'] }] });
    clock.advance(400);
    await settle();
    link('ext0').deliver(arpFrom('203.0.113.2', '02:00:00:00:00:02'));
    // ARP requests for the peer (not the gratuitous ones for the VIP).
    const requests = () => link('ext0').sent.map((f) => decodeArpFrame(f)).filter((a) => a?.operation === 1 && a.targetProtocolAddress === '203.0.113.2').length;
    const asked = requests();
    clock.advance(29_000);
    expect(requests()).toBe(asked);
    clock.advance(2_000);
    expect(requests()).toBe(asked + 1); // re-asked, still used meanwhile
    const last = link('ext0').sent.at(-1) as Buffer;
    expect(last.subarray(0, 6).toString('hex')).toBe('020000000002');
    clock.advance(90_000);
    expect(s.neighbourCount()).toBe(0); // nobody answered: forgotten
    const unresolved = s.counters().peersUnresolved;
    clock.advance(100);
    expect(s.counters().peersUnresolved).toBe(unresolved + 1);
    link('ext0').deliver(arpFrom('203.0.113.2', '02:00:00:00:00:22')); // the peer's new box
    clock.advance(100);
    expect((link('ext0').sent.at(-1) as Buffer).subarray(0, 6).toString('hex')).toBe('020000000022');
  });
});

describe('startup delay (a backup that must not win a cold start)', () => {
  it('stays in initialize for startupDelaySeconds, then starts as backup and takes over a silent segment', async () => {
    const { s, clock, addresses, settle } = speaker({ instances: [{ ...vip1, startupDelaySeconds: 2 }] });
    clock.advance(1900);
    await settle();
    expect(s.state()[0]?.state).toBe('initialize');
    expect(addresses.has('ext0', '203.0.113.10/24')).toBe(false);
    clock.advance(100 + 400); // the delay, then Master_Down_Interval with no master heard
    await settle();
    expect(s.state()[0]?.state).toBe('master');
  });

  it('a claim during the delay makes the instance master at once', async () => {
    const { s, settle, addresses } = speaker({ instances: [{ ...vip1, startupDelaySeconds: 2 }] });
    await s.claim('vip1');
    await settle();
    expect(s.state()[0]?.state).toBe('master');
    expect(addresses.has('ext0', '203.0.113.10/24')).toBe(true);
  });
});
