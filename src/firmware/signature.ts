/**
 * The firmware signature of a disk image: one 512-byte block at byte 65,536 (LBA 128, in the
 * gap GPT leaves between its partition entries and the first partition, which starts at
 * 1 MiB), read before the system partition by an update that reads the image once, front to
 * back. It binds the system partition's place (offset, length) and its SHA-512 to an Ed25519
 * key (RFC 8032, node:crypto):
 *
 *   0   8  magic "VSFWSIG1"
 *   8  32  the signer's Ed25519 public key (raw)
 *   40  8  system partition offset, bytes (big-endian)
 *   48  8  system partition length, bytes (big-endian)
 *   56 64  SHA-512 of the system partition
 *  120 64  Ed25519 signature of bytes 0..119
 *
 * The rest of the block is zero. Pure codec, signing and checking on Buffers and KeyObjects.
 */
import { createHash, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';

export const SIGNATURE_OFFSET = 64 * 1024;
export const SIGNATURE_BYTES = 512;
export const SIGNATURE_END = SIGNATURE_OFFSET + SIGNATURE_BYTES;
export const PARTITION_DIGEST = 'sha512';
const MAGIC = Buffer.from('VSFWSIG1', 'latin1');
const SIGNED_BYTES = 120;
const RAW_KEY_BYTES = 32;

export class SignatureError extends Error {}

export interface SignedPartition {
  offset: number;
  length: number;
  digest: Buffer; // SHA-512 of the partition's bytes
}

export interface FirmwareSignature extends SignedPartition {
  publicKey: Buffer; // raw Ed25519 key, 32 bytes
  signature: Buffer; // 64 bytes
}

/** The raw 32 bytes of an Ed25519 public key (the key of a private key too). */
export function rawPublicKey(key: KeyObject): Buffer {
  const publicKey = key.type === 'private' ? createPublicKey(key) : key;
  if (publicKey.asymmetricKeyType !== 'ed25519') {
    throw new SignatureError(`an Ed25519 key is needed, not ${publicKey.asymmetricKeyType ?? key.type}`);
  }
  const x = publicKey.export({ format: 'jwk' }).x;
  if (!x) throw new SignatureError('the Ed25519 key has no public part');
  return Buffer.from(x, 'base64url');
}

/** As OpenSSH prints fingerprints: SHA256 of the raw key, base64 without padding. */
export function keyFingerprint(raw: Buffer): string {
  return `SHA256:${createHash('sha256').update(raw).digest('base64').replace(/=+$/, '')}`;
}

function signedBytes(publicKey: Buffer, part: SignedPartition): Buffer {
  if (publicKey.length !== RAW_KEY_BYTES) throw new SignatureError(`public key of ${publicKey.length} bytes, expected ${RAW_KEY_BYTES}`);
  if (part.digest.length !== 64) throw new SignatureError(`digest of ${part.digest.length} bytes, expected 64 (SHA-512)`);
  const b = Buffer.alloc(SIGNED_BYTES);
  MAGIC.copy(b, 0);
  publicKey.copy(b, 8);
  b.writeBigUInt64BE(BigInt(part.offset), 40);
  b.writeBigUInt64BE(BigInt(part.length), 48);
  part.digest.copy(b, 56);
  return b;
}

export function encodeSignature(s: FirmwareSignature): Buffer {
  if (s.signature.length !== 64) throw new SignatureError(`signature of ${s.signature.length} bytes, expected 64`);
  const block = Buffer.alloc(SIGNATURE_BYTES);
  signedBytes(s.publicKey, s).copy(block, 0);
  s.signature.copy(block, SIGNED_BYTES);
  return block;
}

/** The signature in a block, or null when the image carries none (no magic: unsigned). */
export function decodeSignature(block: Buffer, source = 'image'): FirmwareSignature | null {
  if (block.length < SIGNATURE_BYTES) throw new SignatureError(`${source}: signature block of ${block.length} bytes, expected ${SIGNATURE_BYTES}`);
  if (!block.subarray(0, MAGIC.length).equals(MAGIC)) return null;
  if (block.subarray(SIGNED_BYTES + 64, SIGNATURE_BYTES).some((x) => x !== 0)) {
    throw new SignatureError(`${source}: signature block: bytes after the signature are not zero (not a vipshift signature)`);
  }
  const offset = block.readBigUInt64BE(40);
  const length = block.readBigUInt64BE(48);
  if (offset > BigInt(Number.MAX_SAFE_INTEGER) || length > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new SignatureError(`${source}: signature block: partition offset or length out of range`);
  }
  return {
    publicKey: Buffer.from(block.subarray(8, 40)),
    offset: Number(offset),
    length: Number(length),
    digest: Buffer.from(block.subarray(56, 120)),
    signature: Buffer.from(block.subarray(SIGNED_BYTES, SIGNED_BYTES + 64)),
  };
}

export function signPartition(part: SignedPartition, privateKey: KeyObject): FirmwareSignature {
  if (privateKey.type !== 'private') throw new SignatureError('signing needs the private key');
  const publicKey = rawPublicKey(privateKey);
  return { ...part, publicKey, signature: sign(null, signedBytes(publicKey, part), privateKey) };
}

export interface TrustedKey {
  name: string; // where it came from (its file)
  key: KeyObject;
}

/**
 * The trusted key that made this signature, after checking it: throws, saying why, when no
 * trusted key made it or it does not verify. The partition's digest is checked by the caller
 * once it has read the partition.
 */
export function checkSignature(s: FirmwareSignature, trusted: TrustedKey[], source = 'image'): TrustedKey {
  const signer = keyFingerprint(s.publicKey);
  const match = trusted.find((t) => rawPublicKey(t.key).equals(s.publicKey));
  if (!match) {
    const known = trusted.map((t) => `${keyFingerprint(rawPublicKey(t.key))} (${t.name})`).join(', ') || 'none';
    throw new SignatureError(`${source}: signed with key ${signer}, which this box does not trust (trusted: ${known})`);
  }
  if (!verify(null, signedBytes(s.publicKey, s), match.key, s.signature)) {
    throw new SignatureError(`${source}: the firmware signature by ${signer} does not verify: the image was altered after signing, or is not signed by that key`);
  }
  return match;
}
