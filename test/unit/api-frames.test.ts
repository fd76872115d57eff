/** Signed frames (src/api/frames.ts) taken apart as a peer may send them: in pieces of any size. */
import { generateKeyPairSync, randomBytes, sign as edSign } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it, vi } from 'vitest';
import { FrameSigner, FrameVerifier, MAX_FRAME_BYTES } from '../../src/api/frames.js';

const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const seed = randomBytes(64);

async function sign(data: Buffer[]): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(Readable.from(data), new FrameSigner(privateKey, seed), new Writable({ write: (c: Buffer, _e, done) => (out.push(c), done()) }));
  return Buffer.concat(out);
}

/** Feeds `wire` to a verifier in pieces of `size` bytes; resolves to what it passed on. */
async function verifyInPieces(wire: Buffer, size: number): Promise<Buffer> {
  const pieces = function* () {
    for (let at = 0; at < wire.length; at += size) yield wire.subarray(at, at + size);
  };
  const out: Buffer[] = [];
  await pipeline(Readable.from(pieces()), new FrameVerifier(publicKey, seed, 'lb2'), new Writable({ write: (c: Buffer, _e, done) => (out.push(c), done()) }));
  return Buffer.concat(out);
}

describe('frame verifier', () => {
  it('passes on the same bytes whatever the pieces they arrive in', async () => {
    const data = [randomBytes(100_000), randomBytes(3), randomBytes(70_000)];
    const wire = await sign(data);
    for (const size of [3, 4, 7, 64, 65, 4096, wire.length]) expect((await verifyInPieces(wire, size)).equals(Buffer.concat(data))).toBe(true);
  });

  it('reassembles a largest frame sent 8 bytes at a time copying each byte a bounded number of times', async () => {
    // A peer may cut its frames as it likes. Joining the buffer on every piece copied the
    // frame again for each of its 131,072 pieces (~64 GB for 1 MiB); linear reassembly copies
    // it a few times. Counted in bytes that Buffer.concat produces, not in ms, so a loaded
    // machine does not decide the outcome.
    const data = randomBytes(MAX_FRAME_BYTES);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const signature = edSign(null, Buffer.concat([seed, length, data]), privateKey);
    const endLength = Buffer.alloc(4);
    const wire = Buffer.concat([length, data, signature, endLength, edSign(null, Buffer.concat([signature, endLength]), privateKey)]);
    const verifier = new FrameVerifier(publicKey, seed, 'lb2');
    const out: Buffer[] = [];
    verifier.on('data', (c: Buffer) => out.push(c));
    const concat = vi.spyOn(Buffer, 'concat');
    try {
      // Handed to the reassembly itself: a stream in front would only add its own cost.
      for (let at = 0; at < wire.length; at += 8) {
        verifier._transform(wire.subarray(at, at + 8), 'binary', (err) => {
          if (err) throw err;
        });
      }
      const copied = concat.mock.results.reduce((sum, r) => sum + (r.value as Buffer).length, 0);
      expect(copied).toBeLessThan(8 * wire.length);
    } finally {
      concat.mockRestore();
    }
    expect(Buffer.concat(out).equals(data)).toBe(true);
  });

  it('still refuses a cut stream and data after the end frame, in small pieces', async () => {
    const wire = await sign([randomBytes(1000)]);
    await expect(verifyInPieces(wire.subarray(0, wire.length - 1), 5)).rejects.toThrow(/cut before its end frame/);
    await expect(verifyInPieces(Buffer.concat([wire, Buffer.alloc(4)]), 5)).rejects.toThrow(/after the end frame/);
  });
});
