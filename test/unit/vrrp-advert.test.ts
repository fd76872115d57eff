import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { AUTH_AH, AUTH_PASS, IPPROTO_AH, VRRP_MULTICAST_IPV4, addressesMatch, decodeAdvertisementFor, decodeAdvertisementFrame, encodeAdvertisement, encodeAdvertisementFrame, virtualMac, type Advertisement } from '../../src/vrrp/advert.js';
import { internetChecksum } from '../../src/packet/checksum.js';
import { ARPOP_REQUEST, decodeArpFrame, gratuitousArp, isGratuitous } from '../../src/packet/arp.js';
import { withV2Checksum, withVrrpChecksum } from '../support/vrrp-frames.js';

const advert: Advertisement = { vrid: 51, priority: 150, maxAdverInt: 100, addresses: ['203.0.113.10', '203.0.113.11'] };
const frame = (): Buffer => encodeAdvertisementFrame(advert, { source: '203.0.113.2' });

describe('VRRPv3 advertisement codec', () => {
  it('lays out the fields as RFC 5798 §5.1 says', () => {
    const f = frame();
    expect(f.subarray(0, 6).toString('hex')).toBe('01005e000012');
    expect(f.subarray(6, 12).toString('hex')).toBe('00005e000133'); // 00-00-5E-00-01-{VRID=0x33}
    expect(f.readUInt16BE(12)).toBe(0x0800);
    expect(f[14 + 8]).toBe(255); // TTL
    expect(f[14 + 9]).toBe(112); // protocol
    expect(internetChecksum(f.subarray(14, 34))).toBe(0); // IPv4 header checksum
    expect(f.subarray(30, 34).toString('hex')).toBe('e0000012'); // 224.0.0.18
    const vrrp = f.subarray(34);
    expect(vrrp[0]).toBe(0x31); // version 3, type 1
    expect([vrrp[1], vrrp[2], vrrp[3]]).toEqual([51, 150, 2]);
    expect(vrrp.readUInt16BE(4)).toBe(100);
    expect(vrrp.length).toBe(8 + 2 * 4);
  });

  it('round-trips through encode and decode', () => {
    const r = decodeAdvertisementFrame(frame());
    expect(r).toEqual({
      ok: true,
      advert: { ...advert, version: 3, source: '203.0.113.2', destination: VRRP_MULTICAST_IPV4, ttl: 255, sourceMac: virtualMac(51) },
    });
  });

  it('checksums over the pseudo-header (§5.2.8): the same packet to another destination differs', () => {
    const a = encodeAdvertisement(advert, '203.0.113.2', '224.0.0.18');
    const b = encodeAdvertisement(advert, '203.0.113.2', '203.0.113.3');
    expect(a.readUInt16BE(6)).not.toBe(b.readUInt16BE(6));
    expect(a.subarray(0, 6)).toEqual(b.subarray(0, 6));
  });

  it('decodes a unicast advert to a peer (keepalived unicast_peer)', () => {
    const f = encodeAdvertisementFrame(advert, { source: '203.0.113.2', destination: '203.0.113.3', destinationMac: '02:00:00:00:00:03' });
    const r = decodeAdvertisementFrame(f);
    expect(r.ok && r.advert.destination).toBe('203.0.113.3');
  });

  it('accepts Ethernet padding after the IP packet', () => {
    const f = Buffer.concat([encodeAdvertisementFrame({ ...advert, addresses: ['203.0.113.10'] }, { source: '203.0.113.2' }), Buffer.alloc(18)]);
    expect(decodeAdvertisementFrame(f).ok).toBe(true);
  });

  it('refuses to encode out-of-range fields', () => {
    expect(() => encodeAdvertisement({ ...advert, vrid: 0 }, '203.0.113.2', VRRP_MULTICAST_IPV4)).toThrow(/Virtual Rtr ID/);
    expect(() => encodeAdvertisement({ ...advert, maxAdverInt: 4096 }, '203.0.113.2', VRRP_MULTICAST_IPV4)).toThrow(/Max Adver Int/);
    expect(() => encodeAdvertisement({ ...advert, addresses: [] }, '203.0.113.2', VRRP_MULTICAST_IPV4)).toThrow(/Count/);
    expect(() => encodeAdvertisement({ ...advert, addresses: ['203.0.113.300'] }, '203.0.113.2', VRRP_MULTICAST_IPV4)).toThrow(/IPv4/);
  });

  describe('every check of RFC 5798 §7.1 and the framing', () => {
    const cases: [string, (f: Buffer) => Buffer][] = [
      ['truncated', (f) => f.subarray(0, 40)],
      ['not-ipv4', (f) => (f.writeUInt16BE(0x86dd, 12), f)],
      ['ip-header', (f) => (f.writeUInt16BE(200, 16), f)],
      ['not-vrrp', (f) => ((f[23] = 17), f)],
      ['fragment', (f) => (f.writeUInt16BE(0x2000, 20), f)],
      ['ttl', (f) => ((f[22] = 1), f)],
      ['version', (f) => ((f[34] = 0x11), withVrrpChecksum(f))], // version 1 (2 is VRRPv2's, see below)
      ['type', (f) => ((f[34] = 0x32), withVrrpChecksum(f))],
      ['length', (f) => ((f[37] = 3), withVrrpChecksum(f))], // Count says 3, the packet holds 2
      ['length', (f) => ((f[37] = 0), withVrrpChecksum(f))],
      ['checksum', (f) => ((f[36]! ^= 1), f)], // priority changed, checksum not
      ['checksum', (f) => ((f[29]! ^= 1), f)], // source address is in the pseudo-header
      ['interval', (f) => (f.writeUInt16BE(0xf000, 38), withVrrpChecksum(f))], // reserved bits only
      ['vrid', (f) => ((f[35] = 0), withVrrpChecksum(f))],
    ];
    for (const [reason, mutate] of cases) {
      it(`drops with reason '${reason}'`, () => {
        expect(decodeAdvertisementFrame(mutate(frame()))).toEqual({ ok: false, reason });
      });
    }

    it("drops a VRID not configured on the interface, and any advert when we are the owner", () => {
      expect(decodeAdvertisementFor(frame(), () => undefined)).toEqual({ ok: false, reason: 'vrid' });
      expect(decodeAdvertisementFor(frame(), () => ({ owner: true }))).toEqual({ ok: false, reason: 'owner' });
      expect(decodeAdvertisementFor(frame(), (vrid) => (vrid === 51 ? { owner: false } : undefined)).ok).toBe(true);
    });

    it('ignores the 4 reserved bits beside Max Adver Int', () => {
      const f = frame();
      f.writeUInt16BE(0xf000 | 100, 38);
      const r = decodeAdvertisementFrame(withVrrpChecksum(f));
      expect(r.ok && r.advert.maxAdverInt).toBe(100);
    });
  });

  it('compares advertised and configured addresses in any order (§7.1 MAY)', () => {
    expect(addressesMatch(['203.0.113.11', '203.0.113.10'], advert.addresses)).toBe(true);
    expect(addressesMatch(['203.0.113.10'], advert.addresses)).toBe(false);
  });

  describe('fuzz: the decoder never throws', () => {
    it('on random input', () => {
      for (let i = 0; i < 20_000; i++) {
        const r = decodeAdvertisementFrame(randomBytes(i % 90));
        expect(typeof r.ok).toBe('boolean');
      }
    });

    it('on mutated valid adverts (bit flips, truncation, extension), counting the reasons', () => {
      const reasons = new Map<string, number>();
      let accepted = 0;
      for (let i = 0; i < 20_000; i++) {
        let f = frame();
        const flips = 1 + (i % 4);
        for (let k = 0; k < flips; k++) {
          const at = Math.floor(Math.random() * f.length);
          f[at] = (f[at] as number) ^ (1 << Math.floor(Math.random() * 8));
        }
        if (i % 7 === 0) f = f.subarray(0, Math.floor(Math.random() * f.length));
        if (i % 11 === 0) f = Buffer.concat([f, randomBytes(i % 13)]);
        const r = decodeAdvertisementFrame(f);
        if (r.ok) accepted++;
        else reasons.set(r.reason, (reasons.get(r.reason) ?? 0) + 1);
      }
      // Mutations that only touch the Ethernet addresses or the IP id/checksum stay valid.
      expect(accepted).toBeGreaterThan(0);
      expect(reasons.get('checksum')).toBeGreaterThan(0);
      expect(reasons.size).toBeGreaterThan(5);
    });

    it('on adverts with random VRRP fields and a correct checksum (reaching the semantic checks)', () => {
      for (let i = 0; i < 20_000; i++) {
        const f = frame();
        randomBytes(6).copy(f, 34); // version/type, VRID, priority, count, Max Adver Int
        const r = decodeAdvertisementFrame(withVrrpChecksum(f));
        if (r.ok) {
          expect(r.advert.addresses.length).toBe(2);
          expect(r.advert.maxAdverInt).toBeGreaterThan(0);
        }
      }
    });
  });
});

describe('VRRPv2 advertisement codec (RFC 3768)', () => {
  const v2: Advertisement = { version: 2, vrid: 51, priority: 100, maxAdverInt: 100, addresses: ['203.0.113.10', '203.0.113.11'] };
  const v2frame = (a: Advertisement = v2): Buffer => encodeAdvertisementFrame(a, { source: '203.0.113.2' });

  it('lays out the fields as RFC 3768 §5.1 says: Auth Type 0, Adver Int in seconds, 8 bytes of Authentication Data', () => {
    const vrrp = v2frame().subarray(34);
    expect(vrrp[0]).toBe(0x21); // version 2, type 1
    expect([vrrp[1], vrrp[2], vrrp[3]]).toEqual([51, 100, 2]);
    expect(vrrp[4]).toBe(0); // Auth Type: none
    expect(vrrp[5]).toBe(1); // Adver Int: 1 s
    expect(vrrp.length).toBe(8 + 2 * 4 + 8);
    expect(vrrp.subarray(16).equals(Buffer.alloc(8))).toBe(true);
    expect(internetChecksum(vrrp)).toBe(0); // §5.3.8: over the VRRP message alone
  });

  it('round-trips, the interval in centiseconds like v3', () => {
    for (const seconds of [1, 3, 255]) {
      const a = { ...v2, maxAdverInt: seconds * 100 };
      expect(decodeAdvertisementFrame(v2frame(a))).toEqual({
        ok: true,
        advert: { ...a, authType: 0, source: '203.0.113.2', destination: VRRP_MULTICAST_IPV4, ttl: 255, sourceMac: virtualMac(51) },
      });
    }
  });

  it('checksums without a pseudo-header: the same packet to a unicast peer has the same checksum', () => {
    const a = encodeAdvertisement(v2, '203.0.113.2', '224.0.0.18');
    const b = encodeAdvertisement(v2, '198.51.100.2', '203.0.113.3');
    expect(a.equals(b)).toBe(true);
  });

  it('refuses to encode an interval that is not whole seconds in 1..255', () => {
    expect(() => encodeAdvertisement({ ...v2, maxAdverInt: 50 }, '203.0.113.2', VRRP_MULTICAST_IPV4)).toThrow(/Adver Int/);
    expect(() => encodeAdvertisement({ ...v2, maxAdverInt: 150 }, '203.0.113.2', VRRP_MULTICAST_IPV4)).toThrow(/Adver Int/);
    expect(() => encodeAdvertisement({ ...v2, maxAdverInt: 25600 }, '203.0.113.2', VRRP_MULTICAST_IPV4)).toThrow(/Adver Int/);
  });

  it("accepts keepalived's auth_type PASS (type 1, password in the data) and reports it", () => {
    const f = v2frame();
    f[34 + 4] = AUTH_PASS;
    f.write('secret', 34 + 16, 'latin1');
    const r = decodeAdvertisementFrame(withV2Checksum(f));
    expect(r.ok && r.advert.authType).toBe(AUTH_PASS);
  });

  it("accepts keepalived's auth_type AH: IPsec AH (protocol 51) around a type-2 packet, ICV not checked", () => {
    const plain = v2frame();
    const vrrp = Buffer.from(plain.subarray(34));
    vrrp[4] = AUTH_AH;
    vrrp.writeUInt16BE(0, 6);
    vrrp.writeUInt16BE(internetChecksum(vrrp), 6);
    const ah = Buffer.alloc(24); // RFC 4302: 12 bytes of header and a 96-bit ICV
    ah[0] = 112;
    ah[1] = 24 / 4 - 2;
    ah.writeUInt32BE(0x1234, 4); // SPI
    ah.writeUInt32BE(1, 8); // sequence
    const frame = Buffer.concat([plain.subarray(0, 34), ah, vrrp]);
    frame.writeUInt16BE(20 + ah.length + vrrp.length, 16);
    frame[23] = IPPROTO_AH;
    frame.writeUInt16BE(0, 24);
    frame.writeUInt16BE(internetChecksum(frame.subarray(14, 34)), 24);
    const r = decodeAdvertisementFrame(frame);
    expect(r.ok && r.advert).toMatchObject({ version: 2, authType: AUTH_AH, vrid: 51, addresses: v2.addresses });
    frame[34] = 6; // AH around TCP
    expect(decodeAdvertisementFrame(frame)).toEqual({ ok: false, reason: 'not-vrrp' });
  });

  const cases: [string, (f: Buffer) => Buffer][] = [
    ['length', (f) => withV2Checksum(Buffer.concat([f.subarray(0, f.length - 8)]))], // no Authentication Data
    ['length', (f) => ((f[37] = 3), withV2Checksum(f))],
    ['checksum', (f) => ((f[36]! ^= 1), f)],
    ['interval', (f) => ((f[39] = 0), withV2Checksum(f))],
    ['version', (f) => ((f[34] = 0x11), withV2Checksum(f))],
  ];
  for (const [reason, mutate] of cases) {
    it(`drops with reason '${reason}'`, () => {
      const f = mutate(v2frame());
      if (reason === 'length' && f.length < 14 + f.readUInt16BE(16)) f.writeUInt16BE(f.length - 14, 16);
      expect(decodeAdvertisementFrame(f)).toEqual({ ok: false, reason });
    });
  }

  it('fuzz: random v2 fields with a correct checksum never throw, and what passes is consistent', () => {
    for (let i = 0; i < 20_000; i++) {
      const f = v2frame();
      randomBytes(6).copy(f, 34);
      f[34] = ((i % 2 ? 2 : 3) << 4) | (f[34]! & 0x0f);
      const r = decodeAdvertisementFrame(withV2Checksum(f));
      if (r.ok) {
        expect(r.advert.version).toBe(2);
        expect(r.advert.addresses.length).toBe(2);
        expect(r.advert.maxAdverInt % 100).toBe(0);
      }
    }
    for (let i = 0; i < 20_000; i++) {
      const f = v2frame();
      const at = 14 + Math.floor(Math.random() * (f.length - 14));
      f[at] = randomBytes(1)[0]!;
      if (i % 5 === 0) f[23] = IPPROTO_AH;
      expect(typeof decodeAdvertisementFrame(f.subarray(0, f.length - (i % 9))).ok).toBe('boolean');
    }
  });
});

describe('gratuitous ARP', () => {
  it('announces the address with sender and target protocol address equal (RFC 5227 §3)', () => {
    const f = gratuitousArp('203.0.113.10', '02:00:00:00:00:02');
    expect(f.length).toBe(42);
    const a = decodeArpFrame(f);
    expect(a).toEqual({
      destinationMac: 'ff:ff:ff:ff:ff:ff',
      sourceMac: '02:00:00:00:00:02',
      operation: ARPOP_REQUEST,
      senderHardwareAddress: '02:00:00:00:00:02',
      senderProtocolAddress: '203.0.113.10',
      targetHardwareAddress: 'ff:ff:ff:ff:ff:ff',
      targetProtocolAddress: '203.0.113.10',
    });
    expect(a && isGratuitous(a)).toBe(true);
  });

  it('returns undefined for what is not Ethernet/IPv4 ARP', () => {
    expect(decodeArpFrame(frame())).toBeUndefined();
    expect(decodeArpFrame(Buffer.alloc(10))).toBeUndefined();
    for (let i = 0; i < 5000; i++) decodeArpFrame(randomBytes(i % 64));
  });
});
