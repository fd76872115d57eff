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

/**
 * Checks signed frames and passes on their data; fails on a bad, oversized or missing frame.
 * What arrives is kept as a list of chunks and each frame is joined once, when all of it is
 * in: a peer that sends a frame a few bytes at a time costs time linear in its size (joining
 * the buffer on every chunk copied it over and over: quadratic).
 */
export class FrameVerifier extends Transform {
  private previous: Buffer;
  private chunks: Buffer[] = [];
  private bufferedBytes = 0;
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
    if (chunk.length > 0) {
      this.chunks.push(chunk);
      this.bufferedBytes += chunk.length;
    }
    while (this.bufferedBytes >= 4) {
      if (this.ended) return done(new Error(`data after the end frame from '${this.peer}'`));
      const length = this.peek(4).readUInt32BE(0);
      if (length > MAX_FRAME_BYTES) return done(new Error(`frame of ${length} bytes from '${this.peer}' exceeds ${MAX_FRAME_BYTES}`));
      const total = 4 + length + SIGNATURE_BYTES;
      if (this.bufferedBytes < total) break;
      const frame = this.consume(total);
      const data = frame.subarray(4, 4 + length);
      const signature = frame.subarray(4 + length, total);
      if (!verify(null, Buffer.concat([this.previous, frame.subarray(0, 4), data]), this.key, signature)) {
        return done(new Error(`bad frame signature from '${this.peer}'`));
      }
      this.previous = Buffer.from(signature);
      if (length === 0) this.ended = true;
      else this.push(data);
    }
    done();
  }

  override _flush(done: TransformCallback): void {
    if (!this.ended || this.bufferedBytes > 0) done(new Error(`stream from '${this.peer}' was cut before its end frame`));
    else done();
  }

  /** The first n buffered bytes, without consuming them (joins only the chunks they span). */
  private peek(n: number): Buffer {
    if (this.chunks[0]!.length < n) {
      let joined = 1;
      for (let bytes = this.chunks[0]!.length; bytes < n; joined++) bytes += this.chunks[joined]!.length;
      this.chunks.splice(0, joined, Buffer.concat(this.chunks.slice(0, joined)));
    }
    return this.chunks[0]!;
  }

  /** Removes and returns the first n buffered bytes (n ≤ bufferedBytes), each copied once at most. */
  private consume(n: number): Buffer {
    this.bufferedBytes -= n;
    const first = this.chunks[0]!;
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const parts: Buffer[] = [];
    let need = n;
    while (need > 0) {
      const c = this.chunks[0]!;
      if (c.length <= need) {
        parts.push(c);
        this.chunks.shift();
        need -= c.length;
      } else {
        parts.push(c.subarray(0, need));
        this.chunks[0] = c.subarray(need);
        need = 0;
      }
    }
    return Buffer.concat(parts, n);
  }
}
