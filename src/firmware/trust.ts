/**
 * The firmware keys on disk: the box's trusted public keys (a folder of PEM files on the data
 * partition), and signing or checking an image file (`vipshift firmware sign|verify`, the
 * image build). The private key is a PEM file that stays outside the repository and the box.
 */
import { createHash, createPrivateKey, createPublicKey } from 'node:crypto';
import { open, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GPT_PREFIX_BYTES, parseGpt, partitionExtent } from './gpt.js';
import {
  checkSignature,
  decodeSignature,
  encodeSignature,
  PARTITION_DIGEST,
  SIGNATURE_END,
  SIGNATURE_OFFSET,
  signPartition,
  SignatureError,
  type FirmwareSignature,
  type TrustedKey,
} from './signature.js';

/** The system partition the image carries (images are always built into slot a). */
export const IMAGE_SYSTEM_PARTITION = 'vs-system-a';

/** Every `*.pem` Ed25519 public key of `dir`; a file that is not one is reported and skipped. */
export async function loadTrustedKeys(dir: string, warn: (message: string) => void): Promise<TrustedKey[]> {
  const names = await readdir(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return [];
    throw e;
  });
  const keys: TrustedKey[] = [];
  for (const name of names.filter((n) => n.endsWith('.pem')).sort()) {
    const file = join(dir, name);
    try {
      const key = createPublicKey(await readFile(file));
      if (key.asymmetricKeyType !== 'ed25519') throw new Error(`a ${key.asymmetricKeyType} key, not Ed25519`);
      keys.push({ name: file, key });
    } catch (e) {
      warn(`${file}: not an Ed25519 public key in PEM, skipped (${(e as Error).message})`);
    }
  }
  return keys;
}

async function readAt(path: string, length: number, position: number): Promise<Buffer> {
  const file = await open(path, 'r');
  try {
    const b = Buffer.alloc(length);
    const { bytesRead } = await file.read(b, 0, length, position);
    return b.subarray(0, bytesRead);
  } finally {
    await file.close();
  }
}

/** Where the system partition of an image file is, checked to leave the signature block free. */
async function systemExtent(path: string): Promise<{ offset: number; length: number }> {
  const head = await readAt(path, GPT_PREFIX_BYTES, 0);
  const parts = parseGpt(head, path);
  const system = parts.find((p) => p.name === IMAGE_SYSTEM_PARTITION);
  if (!system) throw new SignatureError(`${path}: no partition named ${IMAGE_SYSTEM_PARTITION} (not a vipshift image)`);
  const clash = parts.map(partitionExtent).find((p) => p.offset < SIGNATURE_END);
  if (clash) throw new SignatureError(`${path}: a partition starts at byte ${clash.offset}, over the signature block (bytes ${SIGNATURE_OFFSET}..${SIGNATURE_END})`);
  return partitionExtent(system);
}

async function partitionDigest(path: string, extent: { offset: number; length: number }): Promise<Buffer> {
  const hash = createHash(PARTITION_DIGEST);
  const file = await open(path, 'r');
  try {
    const chunk = Buffer.alloc(4 << 20);
    for (let done = 0; done < extent.length; ) {
      const { bytesRead } = await file.read(chunk, 0, Math.min(chunk.length, extent.length - done), extent.offset + done);
      if (bytesRead === 0) throw new SignatureError(`${path}: ends inside its system partition`);
      hash.update(chunk.subarray(0, bytesRead));
      done += bytesRead;
    }
  } finally {
    await file.close();
  }
  return hash.digest();
}

/** Signs the system partition of a raw image file in place with a PEM private key. */
export async function signImageFile(path: string, privateKeyPem: Buffer | string): Promise<FirmwareSignature> {
  const key = createPrivateKey(privateKeyPem);
  const extent = await systemExtent(path);
  const signature = signPartition({ ...extent, digest: await partitionDigest(path, extent) }, key);
  const file = await open(path, 'r+');
  try {
    await file.write(encodeSignature(signature), 0, undefined, SIGNATURE_OFFSET);
    await file.sync();
  } finally {
    await file.close();
  }
  return signature;
}

/** Checks a raw image file as an update would: signature, trusted key, partition digest. */
export async function verifyImageFile(path: string, trusted: TrustedKey[]): Promise<{ signature: FirmwareSignature; key: TrustedKey }> {
  const extent = await systemExtent(path);
  const signature = decodeSignature(await readAt(path, SIGNATURE_END - SIGNATURE_OFFSET, SIGNATURE_OFFSET), path);
  if (!signature) throw new SignatureError(`${path}: unsigned image (no firmware signature at byte ${SIGNATURE_OFFSET})`);
  const key = checkSignature(signature, trusted, path);
  if (signature.offset !== extent.offset || signature.length !== extent.length) {
    throw new SignatureError(`${path}: the signature covers another system partition than the partition table's`);
  }
  if (!(await partitionDigest(path, extent)).equals(signature.digest)) {
    throw new SignatureError(`${path}: the system partition is not what was signed (its SHA-512 differs)`);
  }
  return { signature, key };
}
