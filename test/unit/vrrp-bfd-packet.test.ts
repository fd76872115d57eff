/**
 * The BFD Control packet codec (RFC 5880 §4.1) and the reception checks of §6.8.6: field by
 * field against hand-laid bytes, each discard reason, and seeded random and mutated buffers
 * (whatever comes in, decoding returns a result and never throws).
 */
import { describe, expect, it } from 'vitest';
import {
  BFD_CONTROL_LENGTH,
  BfdDiag,
  decodeBfdControl,
  encodeBfdControl,
  type BfdControlPacket,
} from '../../src/vrrp/bfd-packet.js';
import { prng } from '../support/prng.js';

const up: BfdControlPacket = {
  diag: BfdDiag.NoDiagnostic,
  state: 'Up',
  poll: true,
  final: false,
  controlPlaneIndependent: false,
  demand: false,
  detectMult: 3,
  myDiscriminator: 0x01020304,
  yourDiscriminator: 0xfffffffe,
  desiredMinTxInterval: 50_000,
  requiredMinRxInterval: 50_000,
  requiredMinEchoRxInterval: 0,
};

function bytes(hex: string): Buffer {
  return Buffer.from(hex.replace(/\s+/g, ''), 'hex');
}

describe('BFD Control packet codec', () => {
  it('lays the fields out as RFC 5880 §4.1 draws them', () => {
    expect(encodeBfdControl(up).toString('hex')).toBe(
      // Vers 1, Diag 0 | Sta Up (3), P | Detect Mult 3 | Length 24 | discriminators | 50 ms, 50 ms, 0
      '20' + 'e0' + '03' + '18' + '01020304' + 'fffffffe' + '0000c350' + '0000c350' + '00000000',
    );
    const down = encodeBfdControl({ ...up, state: 'Down', diag: BfdDiag.ControlDetectionTimeExpired, poll: false, final: true, yourDiscriminator: 0 });
    expect(down[0]).toBe(0x21);
    expect(down[1]).toBe(0x50);
  });

  it('decodes what it encodes, every state and flag', () => {
    for (const state of ['AdminDown', 'Down', 'Init', 'Up'] as const) {
      for (const flags of [
        { poll: true, final: false, controlPlaneIndependent: true, demand: false },
        { poll: false, final: true, controlPlaneIndependent: false, demand: true },
      ]) {
        const p = { ...up, ...flags, state, diag: BfdDiag.PathDown, requiredMinEchoRxInterval: 1_000_000 };
        expect(decodeBfdControl(encodeBfdControl(p))).toEqual({ ok: true, packet: p });
      }
    }
  });

  it('takes a packet from the wire written by someone else (Down, Your Discriminator 0, slow timers)', () => {
    const r = decodeBfdControl(bytes('20 40 05 18 0000abcd 00000000 000f4240 000f4240 00000000'));
    expect(r).toEqual({
      ok: true,
      packet: {
        diag: 0, state: 'Down', poll: false, final: false, controlPlaneIndependent: false, demand: false, detectMult: 5,
        myDiscriminator: 0xabcd, yourDiscriminator: 0, desiredMinTxInterval: 1_000_000, requiredMinRxInterval: 1_000_000, requiredMinEchoRxInterval: 0,
      },
    });
  });

  it('ignores bytes after Length (the UDP payload may be longer)', () => {
    const r = decodeBfdControl(Buffer.concat([encodeBfdControl(up), Buffer.from([1, 2, 3])]));
    expect(r.ok).toBe(true);
  });

  it('discards what §6.8.6 says to discard, with the reason', () => {
    const good = encodeBfdControl(up);
    const mutate = (f: (b: Buffer) => void) => {
      const b = Buffer.from(good);
      f(b);
      return decodeBfdControl(b);
    };
    expect(decodeBfdControl(good.subarray(0, 23))).toEqual({ ok: false, reason: 'short' });
    expect(mutate((b) => (b[0] = 0x40))).toEqual({ ok: false, reason: 'version' }); // Vers 2
    expect(mutate((b) => (b[0] = 0x00))).toEqual({ ok: false, reason: 'version' }); // Vers 0
    expect(mutate((b) => (b[3] = 23))).toEqual({ ok: false, reason: 'length' });
    expect(mutate((b) => (b[3] = 25))).toEqual({ ok: false, reason: 'length' }); // beyond the payload
    expect(mutate((b) => (b[2] = 0))).toEqual({ ok: false, reason: 'detect-mult' });
    expect(mutate((b) => (b[1]! |= 0x01))).toEqual({ ok: false, reason: 'multipoint' });
    expect(mutate((b) => b.writeUInt32BE(0, 4))).toEqual({ ok: false, reason: 'my-discriminator' });
    // Your Discriminator 0 is only allowed in Down and AdminDown.
    expect(mutate((b) => b.writeUInt32BE(0, 8))).toEqual({ ok: false, reason: 'your-discriminator' });
    expect(mutate((b) => ((b[1] = 0x80), b.writeUInt32BE(0, 8)))).toEqual({ ok: false, reason: 'your-discriminator' }); // Init
    expect(mutate((b) => ((b[1] = 0x40), b.writeUInt32BE(0, 8))).ok).toBe(true); // Down
    expect(mutate((b) => ((b[1] = 0x00), b.writeUInt32BE(0, 8))).ok).toBe(true); // AdminDown
    // An authentication section: we use none, so the packet is discarded (26 bytes minimum with A).
    const withAuth = Buffer.concat([good, Buffer.from([1, 2, 0, 0])]);
    withAuth[1]! |= 0x04;
    withAuth[3] = 26;
    expect(decodeBfdControl(withAuth)).toEqual({ ok: false, reason: 'authentication' });
    withAuth[3] = 24;
    expect(decodeBfdControl(withAuth)).toEqual({ ok: false, reason: 'length' });
  });

  it('never throws on random or mutated buffers (seeded fuzz)', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const random = prng(seed);
      const byte = () => Math.floor(random() * 256);
      for (let n = 0; n < 100; n++) {
        let b: Buffer;
        if (random() < 0.5) {
          b = Buffer.from(Array.from({ length: Math.floor(random() * 40) }, byte));
        } else {
          b = Buffer.from(encodeBfdControl(up));
          for (let k = 1 + Math.floor(random() * 3); k > 0; k--) b[Math.floor(random() * b.length)] = byte();
        }
        let r: ReturnType<typeof decodeBfdControl>;
        try {
          r = decodeBfdControl(b);
        } catch (err) {
          throw new Error(`seed ${seed}: decoding ${b.toString('hex')} threw`, { cause: err });
        }
        if (r.ok) {
          // Whatever passes the checks is a packet this codec writes back byte for byte.
          expect(r.packet.detectMult).toBeGreaterThan(0);
          expect(r.packet.myDiscriminator).not.toBe(0);
          const again = encodeBfdControl(r.packet);
          expect(again.subarray(0, BFD_CONTROL_LENGTH).toString('hex'), `seed ${seed}`).toBe(b.subarray(0, 3).toString('hex') + '18' + b.subarray(4, 24).toString('hex'));
        }
      }
    }
  });
});
