/**
 * Signed frames: how a streamed body (the ~4 MB of entry records of a migration, or a line of
 * progress at a time) is authenticated without buffering it first.
 *
 *   frame    = length (u32, big endian) | data (length bytes) | signature (64 bytes)
 *   signature = Ed25519(sender, previous signature | length | data)
 *
 * The chain starts at the signature of the request's (or response's) headers, so frames can be
 * neither reordered, dropped, nor moved to another request. A frame of length 0 ends the body:
 * a stream cut before it is an error, not a shorter body. The receiver hands data on only after
 * its frame verified, so a handler never sees a byte the peer did not sign.
 */
import { sign, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { Transform } from 'node:stream';
import type { TransformCallback } from 'node:stream';

const SIGNATURE_BYTES = 64;
/** Frames the sender cuts; small writes are gathered up to this size (or until the next tick). */
export const FRAME_BYTES = 64 * 1024;
/** Largest frame a receiver accepts. */
export const MAX_FRAME_BYTES = 1024 * 1024;

function frameSignature(key: KeyObject, previous: Buffer, length: Buffer, data: Buffer): Buffer {
  return sign(null, Buffer.concat([previous, length, data]), key);
}

/** Cuts what is written into signed frames; ends with the end frame. */
export class FrameSigner extends Transform {
  private previous: Buffer;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private flushScheduled = false;

  constructor(
    private readonly key: KeyObject,
    seed: Buffer,
  ) {
    super();
    this.previous = seed;
  }

  override _transform(chunk: Buffer | string, _enc: BufferEncoding, done: TransformCallback): void {
    const data = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    if (data.length === 0) return done();
    this.pending.push(data);
    this.pendingBytes += data.length;
    if (this.pendingBytes >= FRAME_BYTES) this.emitPending();
    else if (!this.flushScheduled) {
      // A producer that writes a line now and then (progress) must not wait for 64 KiB.
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        if (!this.destroyed) this.emitPending();
      });
    }
    done();
  }

  override _flush(done: TransformCallback): void {
    this.emitPending();
    this.emitFrame(Buffer.alloc(0));
    done();
  }

  private emitPending(): void {
    if (this.pendingBytes === 0) return;
    const all = Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    for (let at = 0; at < all.length; at += FRAME_BYTES) this.emitFrame(all.subarray(at, at + FRAME_BYTES));
  }

  private emitFrame(data: Buffer): void {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const signature = frameSignature(this.key, this.previous, length, data);
    this.previous = signature;
    this.push(Buffer.concat([length, data, signature]));
  }
}

/** Checks signed frames and passes on their data; fails on a bad, oversized or missing frame. */
export class FrameVerifier extends Transform {
  private previous: Buffer;
  private buffered: Buffer = Buffer.alloc(0);
  private ended = false;

  constructor(
    private readonly key: KeyObject,
    seed: Buffer,
    private readonly peer: string,
  ) {
    super();
    this.previous = seed;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    while (this.buffered.length >= 4) {
      if (this.ended) return done(new Error(`data after the end frame from '${this.peer}'`));
      const length = this.buffered.readUInt32BE(0);
      if (length > MAX_FRAME_BYTES) return done(new Error(`frame of ${length} bytes from '${this.peer}' exceeds ${MAX_FRAME_BYTES}`));
      const total = 4 + length + SIGNATURE_BYTES;
      if (this.buffered.length < total) break;
      const data = this.buffered.subarray(4, 4 + length);
      const signature = this.buffered.subarray(4 + length, total);
      if (!verify(null, Buffer.concat([this.previous, this.buffered.subarray(0, 4), data]), this.key, signature)) {
        return done(new Error(`bad frame signature from '${this.peer}'`));
      }
      this.previous = Buffer.from(signature);
      this.buffered = this.buffered.subarray(total);
      if (length === 0) this.ended = true;
      else this.push(data);
    }
    done();
  }

  override _flush(done: TransformCallback): void {
    if (!this.ended || this.buffered.length > 0) done(new Error(`stream from '${this.peer}' was cut before its end frame`));
    else done();
  }
}
