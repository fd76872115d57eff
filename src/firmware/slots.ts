/**
 * The two system slots (GPT partitions vs-system-a and vs-system-b) and the boot environment
 * that tells GRUB which one to boot (firmware/grub/grub.cfg): `slot` is the default, `try_slot`
 * is booted once. An update writes the slot that is not running and sets `try_slot`; the
 * booted system makes it the default only once it is healthy (vipshift-slot-health.service).
 * Only an image signed by a key the box trusts (signature.ts) is ever made bootable.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { open, readFile, realpath, stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { GPT_PREFIX_BYTES, parseGpt, partitionExtent } from './gpt.js';
import { encodeGrubenv, GRUBENV_SIZE, parseGrubenv } from './grubenv.js';
import { checkSignature, decodeSignature, keyFingerprint, PARTITION_DIGEST, SIGNATURE_END, SIGNATURE_OFFSET, SignatureError } from './signature.js';
import { IMAGE_SYSTEM_PARTITION, loadTrustedKeys } from './trust.js';

export type Slot = 'a' | 'b';

export interface SlotPaths {
  cmdline: string; // /proc/cmdline: vipshift.slot= tells the booted slot
  grubenv: string; // on the EFI system partition
  slotDevice: (slot: Slot) => string;
  firmwareKeys: string; // folder of the Ed25519 public keys (PEM) an update must be signed by
}

export const applianceSlotPaths: SlotPaths = {
  cmdline: '/proc/cmdline',
  grubenv: '/boot/efi/grub/grubenv',
  slotDevice: (slot) => `/dev/disk/by-partlabel/vs-system-${slot}`,
  firmwareKeys: '/var/lib/vipshift/firmware-keys',
};

const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
const EXT4_MAGIC_OFFSET = 1024 + 56;

export function bootedSlot(cmdline: string): Slot | null {
  const m = /(?:^|\s)vipshift\.slot=([ab])(?:\s|$)/.exec(cmdline);
  return m ? (m[1] as Slot) : null;
}

export const otherSlot = (slot: Slot): Slot => (slot === 'a' ? 'b' : 'a');

export interface SlotState {
  booted: Slot | null;
  default: Slot;
  trying: Slot | null;
}

export async function readSlotState(paths: SlotPaths): Promise<SlotState> {
  const env = parseGrubenv(await readFile(paths.grubenv), paths.grubenv);
  const slot = env.get('slot');
  const trying = env.get('try_slot');
  return {
    booted: bootedSlot(await readFile(paths.cmdline, 'utf8')),
    default: slot === 'b' ? 'b' : 'a',
    trying: trying === 'a' || trying === 'b' ? trying : null,
  };
}

/** Rewrites the boot environment in place (GRUB reads it by its sectors on the FAT). */
async function editEnv(paths: SlotPaths, change: (env: Map<string, string>) => void): Promise<void> {
  const file = await open(paths.grubenv, 'r+');
  try {
    const block = Buffer.alloc(GRUBENV_SIZE);
    await file.read(block, 0, GRUBENV_SIZE, 0);
    const env = parseGrubenv(block, paths.grubenv);
    change(env);
    await file.write(encodeGrubenv(env), 0, GRUBENV_SIZE, 0);
    await file.sync();
  } finally {
    await file.close();
  }
}

/** Makes the booted slot the default (after a healthy trial boot). */
export async function commitBootedSlot(paths: SlotPaths): Promise<string> {
  const state = await readSlotState(paths);
  if (!state.booted) throw new Error(`${paths.cmdline}: no vipshift.slot= (not booted from a system slot)`);
  if (state.booted === state.default && !state.trying) return `slot ${state.booted} is already the default`;
  await editEnv(paths, (env) => {
    env.set('slot', state.booted as Slot);
    env.delete('try_slot');
  });
  return `slot ${state.booted} is now the default`;
}

/** Yields the bytes of `input`, decompressed when it is a zstd stream. */
async function* imageBytes(input: Readable): AsyncGenerator<Buffer> {
  const iterator = input[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const first = await iterator.next();
  if (first.done) return;
  const head = first.value;
  if (head.length >= 4 && head.subarray(0, 4).equals(ZSTD_MAGIC)) {
    const zstd = spawn('zstd', ['-dc', '-q'], { stdio: ['pipe', 'pipe', 'inherit'] });
    zstd.stdin.on('error', () => undefined); // EPIPE once we stop reading past the slot
    (async () => {
      zstd.stdin.write(head);
      for (let n = await iterator.next(); !n.done; n = await iterator.next()) {
        if (!zstd.stdin.write(n.value)) await new Promise((r) => zstd.stdin.once('drain', r));
      }
      zstd.stdin.end();
    })().catch(() => zstd.stdin.destroy());
    try {
      for await (const chunk of zstd.stdout) yield chunk as Buffer;
    } finally {
      zstd.kill();
      input.destroy();
    }
    return;
  }
  try {
    yield head;
    for (let n = await iterator.next(); !n.done; n = await iterator.next()) yield n.value;
  } finally {
    input.destroy(); // refused or done before its end: stop reading (standard input too)
  }
}

/** Size of a block device (from sysfs: stat says 0), or of a regular file standing for one. */
async function deviceBytes(device: string): Promise<number> {
  const info = await stat(device);
  if (info.isFile()) return info.size;
  const name = (await realpath(device)).replace(/^\/dev\//, '');
  return Number((await readFile(`/sys/class/block/${name}/size`, 'utf8')).trim()) * 512;
}

export interface UpdateResult {
  slot: Slot;
  bytes: number;
  seconds: number;
  signer: string; // the trusted key's fingerprint and file
}

/**
 * Writes the system slot of an image (raw or zstd, read once from start to slot end) into
 * the slot that is not running, then sets it to be booted once. An image without a signature,
 * or signed by a key the box does not trust, or whose signature does not verify, is refused
 * before anything is written; a system partition whose SHA-512 differs from the signed one is
 * found once written, and the slot is then not made bootable.
 */
export async function updateInactiveSlot(
  input: Readable,
  source: string,
  paths: SlotPaths,
  progress: (message: string) => void,
): Promise<UpdateResult> {
  const started = Date.now();
  const state = await readSlotState(paths);
  if (!state.booted) throw new Error(`${paths.cmdline}: no vipshift.slot= (not booted from a system slot)`);
  if (state.booted !== state.default) {
    throw new Error(
      `running slot ${state.booted} is on trial (default is ${state.default}): ` +
        `wait for it to be confirmed (vipshift firmware commit) before the next update`,
    );
  }
  const target = otherSlot(state.booted);
  const device = paths.slotDevice(target);
  const capacity = await deviceBytes(device);
  const trusted = await loadTrustedKeys(paths.firmwareKeys, progress);
  if (trusted.length === 0) {
    throw new SignatureError(
      `no firmware keys on this box (${paths.firmwareKeys}): no update can be checked; ` +
        `put the signer's public key (PEM) in firmware-keys/ on the configuration partition`,
    );
  }
  const prefix = Math.max(GPT_PREFIX_BYTES, SIGNATURE_END);
  const digest = createHash(PARTITION_DIGEST);
  let signed: Buffer | null = null;
  let signer = '';

  let buffered = Buffer.alloc(0);
  let position = 0; // bytes of the image consumed
  let extent: { offset: number; length: number } | null = null;
  let written = 0;
  const out = await open(device, 'r+');
  try {
    for await (const chunk of imageBytes(input)) {
      let data = chunk;
      if (!extent) {
        buffered = Buffer.concat([buffered, data]);
        if (buffered.length < prefix) continue;
        const part = parseGpt(buffered, source).find((p) => p.name === IMAGE_SYSTEM_PARTITION);
        if (!part) throw new Error(`${source}: no partition named ${IMAGE_SYSTEM_PARTITION} (not a vipshift image)`);
        const found = partitionExtent(part);
        if (found.length > capacity) {
          throw new Error(`${source}: system partition of ${found.length} bytes does not fit slot ${target} (${capacity} bytes)`);
        }
        const signature = decodeSignature(buffered.subarray(SIGNATURE_OFFSET, SIGNATURE_END), source);
        if (!signature) {
          throw new SignatureError(`${source}: unsigned image (no firmware signature at byte ${SIGNATURE_OFFSET}): refused, nothing written`);
        }
        const key = checkSignature(signature, trusted, source);
        if (signature.offset !== found.offset || signature.length !== found.length) {
          throw new SignatureError(
            `${source}: the signature covers ${signature.length} bytes at ${signature.offset}, ` +
              `the partition table puts the system at ${found.length} bytes at ${found.offset}: refused`,
          );
        }
        signed = signature.digest;
        signer = `${keyFingerprint(signature.publicKey)} (${key.name})`;
        extent = found;
        progress(`signed by ${signer}`);
        // A half-written slot must never be tried: no trial until the write has completed.
        await editEnv(paths, (env) => env.delete('try_slot'));
        progress(`writing the image's system (${(extent.length / 2 ** 20).toFixed(0)} MiB) to slot ${target} (${device})`);
        data = buffered;
        buffered = Buffer.alloc(0);
      }
      const chunkStart = position;
      position += data.length;
      const from = Math.max(extent.offset - chunkStart, 0);
      const to = Math.min(extent.offset + extent.length - chunkStart, data.length);
      if (to <= from) {
        if (chunkStart >= extent.offset + extent.length) break;
        continue;
      }
      const piece = data.subarray(from, to);
      const at = chunkStart + from - extent.offset;
      if (at <= EXT4_MAGIC_OFFSET && at + piece.length > EXT4_MAGIC_OFFSET + 1) {
        const magic = piece.readUInt16LE(EXT4_MAGIC_OFFSET - at);
        if (magic !== 0xef53) throw new Error(`${source}: the system partition holds no ext4 file system`);
      }
      digest.update(piece);
      await out.write(piece, 0, piece.length, at);
      written += piece.length;
      if (written === extent.length) break;
    }
    if (!extent) throw new Error(`${source}: ended after ${position + buffered.length} bytes, before its partition table and signature`);
    if (written !== extent.length) {
      throw new Error(`${source}: ended after ${written} of ${extent.length} bytes of the system partition`);
    }
    await out.sync();
  } finally {
    await out.close();
  }
  if (!signed || !digest.digest().equals(signed)) {
    throw new SignatureError(
      `${source}: the system partition is not what ${signer} signed (its SHA-512 differs): ` +
        `slot ${target} was written but is NOT made bootable; the next boot is slot ${state.booted} as before`,
    );
  }
  await editEnv(paths, (env) => env.set('try_slot', target));
  return { slot: target, bytes: written, seconds: (Date.now() - started) / 1000, signer };
}
