/**
 * The firmware signature block (src/firmware/signature.ts): round trip, what an update refuses,
 * random and mutated blocks (only SignatureError, never another exception); the time client's
 * status. Signing image files: image-firmware.test.ts.
 */
import { createHash, generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  checkSignature,
  decodeSignature,
  encodeSignature,
  keyFingerprint,
  rawPublicKey,
  SIGNATURE_BYTES,
  SignatureError,
  signPartition,
} from '../../src/firmware/signature.js';
import { timeSyncFrom } from '../../src/firmware/timesync.js';
import { parseShow } from '../../src/firmware/units.js';
import { prng } from '../support/prng.js';

const build = generateKeyPairSync('ed25519');
const other = generateKeyPairSync('ed25519');
const trusted = [{ name: 'image-build.pem', key: build.publicKey }];
const part = { offset: 66 << 20, length: 1280 << 20, digest: createHash('sha512').update('system').digest() };

describe('firmware signature block', () => {
  it('round-trips, and is zero after the signature', () => {
    const s = signPartition(part, build.privateKey);
    const block = encodeSignature(s);
    expect(block.length).toBe(SIGNATURE_BYTES);
    expect(block.toString('latin1', 0, 8)).toBe('VSFWSIG1');
    expect(block.subarray(184).every((x) => x === 0)).toBe(true);
    expect(decodeSignature(block)).toEqual(s);
    expect(s.publicKey.equals(rawPublicKey(build.publicKey))).toBe(true);
    expect(checkSignature(decodeSignature(block)!, trusted).name).toBe('image-build.pem');
    expect(keyFingerprint(s.publicKey)).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
  });

  it('reads no signature from an unsigned image, refuses a foreign key and every altered field', () => {
    expect(decodeSignature(Buffer.alloc(SIGNATURE_BYTES))).toBeNull();
    const block = encodeSignature(signPartition(part, build.privateKey));
    const strange = decodeSignature(encodeSignature(signPartition(part, other.privateKey)))!;
    expect(() => checkSignature(strange, trusted, 'x.img')).toThrow(/x\.img: signed with key SHA256:\S+, which this box does not trust/);
    for (const at of [8, 47, 55, 56, 119, 120, 183]) {
      const altered = Buffer.from(block);
      altered[at]! ^= 0x10;
      const s = decodeSignature(altered)!;
      // The key byte makes it another (untrusted) key; any other byte breaks the signature.
      expect(() => checkSignature(s, trusted), `byte ${at}`).toThrow(at < 40 ? /does not trust/ : /does not verify/);
    }
    const tail = Buffer.from(block);
    tail[300] = 1;
    expect(() => decodeSignature(tail, 'y.img')).toThrow(/y\.img: signature block: bytes after the signature are not zero/);
    expect(() => signPartition(part, build.publicKey)).toThrow(/needs the private key/);
  });

  it('throws only SignatureError on random and mutated blocks (seeded)', () => {
    const seed = 1337;
    const random = prng(seed);
    const good = encodeSignature(signPartition(part, build.privateKey));
    for (let i = 0; i < 3000; i++) {
      const block = Buffer.from(good);
      const n = 1 + Math.floor(random() * 8);
      for (let j = 0; j < n; j++) block[Math.floor(random() * (i % 2 ? 200 : SIGNATURE_BYTES))] = Math.floor(random() * 256);
      if (i % 5 === 0) block.fill(0, Math.floor(random() * SIGNATURE_BYTES)); // truncated by zeros
      try {
        const s = decodeSignature(block);
        if (s) checkSignature(s, trusted);
      } catch (e) {
        if (!(e instanceof SignatureError)) throw new Error(`seed ${seed} case ${i}: ${String(e)} for ${block.toString('hex')}`);
      }
    }
  });
});

describe('time client status', () => {
  const unit = parseShow('ActiveState=active\nSubState=running\nUnitFileState=enabled\n');
  it('shows the configured servers first, then DHCP\'s, then the fallback', () => {
    const synced = parseShow('NTPSynchronized=yes\n');
    expect(timeSyncFrom(unit, parseShow('SystemNTPServers=198.51.100.123 203.0.113.123\nLinkNTPServers=192.0.2.2\nFallbackNTPServers=\nServerName=198.51.100.123\n'), synced))
      .toEqual({ unit: 'systemd-timesyncd.service', enabled: true, active: 'active/running', servers: ['198.51.100.123', '203.0.113.123'], source: 'configuration', serverName: '198.51.100.123', synchronized: true });
    expect(timeSyncFrom(unit, parseShow('SystemNTPServers=\nLinkNTPServers=192.0.2.2\n'), synced)).toMatchObject({ source: 'dhcp', servers: ['192.0.2.2'] });
    expect(timeSyncFrom(unit, parseShow('FallbackNTPServers=0.debian.pool.ntp.org 1.debian.pool.ntp.org\nServerName=\n'), new Map()))
      .toMatchObject({ source: 'fallback', serverName: null, synchronized: false });
    expect(timeSyncFrom(new Map(), new Map(), new Map())).toMatchObject({ enabled: false, source: 'none', servers: [] });
  });
});
