import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { GPT_PREFIX_BYTES, GptError, parseGpt, partitionExtent, SECTOR } from '../../src/firmware/gpt.js';
import { encodeGrubenv, GRUBENV_SIZE, GrubenvError, parseGrubenv } from '../../src/firmware/grubenv.js';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { decodeSignature, encodeSignature, SIGNATURE_BYTES, SIGNATURE_OFFSET, signPartition } from '../../src/firmware/signature.js';
import { signImageFile, verifyImageFile } from '../../src/firmware/trust.js';
import { bootedSlot, commitBootedSlot, readSlotState, updateInactiveSlot, type SlotPaths } from '../../src/firmware/slots.js';

/** A GPT as sgdisk writes it (header at LBA 1, 128 entries from LBA 2), for the partitions given. */
function gptDisk(parts: { name: string; first: number; last: number }[], sectors: number): Buffer {
  const disk = Buffer.alloc(sectors * SECTOR);
  const entries = Buffer.alloc(128 * 128);
  parts.forEach((p, i) => {
    const e = entries.subarray(i * 128);
    e.fill(0x11, 0, 16); // type GUID: anything non-zero
    e.fill(0x20 + i, 16, 32);
    e.writeBigUInt64LE(BigInt(p.first), 32);
    e.writeBigUInt64LE(BigInt(p.last), 40);
    e.write(p.name, 56, 'utf16le');
  });
  const h = disk.subarray(SECTOR, 2 * SECTOR);
  h.write('EFI PART', 0, 'latin1');
  h.writeUInt32LE(0x00010000, 8);
  h.writeUInt32LE(92, 12);
  h.writeBigUInt64LE(1n, 24);
  h.writeBigUInt64LE(2n, 72);
  h.writeUInt32LE(128, 80);
  h.writeUInt32LE(128, 84);
  h.writeUInt32LE(crc32(entries), 88);
  h.writeUInt32LE(crc32(h.subarray(0, 92)), 16);
  entries.copy(disk, 2 * SECTOR);
  return disk;
}

const signer = generateKeyPairSync('ed25519');

/** Signs the system partition of an in-memory image as `make image` does. */
function signDisk(disk: Buffer, first: number, slot: Buffer, key = signer.privateKey): void {
  const part = { offset: first * SECTOR, length: slot.length, digest: createHash('sha512').update(slot).digest() };
  encodeSignature(signPartition(part, key)).copy(disk, SIGNATURE_OFFSET);
}

/**
 * A disk image like the build's, signed: a system partition holding an ext4 superblock magic;
 * the first partition after the signature block (LBA 128).
 */
function image(slotSectors: number, sign = true): { disk: Buffer; slot: Buffer } {
  const first = 144;
  const disk = gptDisk(
    [
      { name: 'vs-esp', first: 136, last: first - 1 },
      { name: 'vs-system-a', first, last: first + slotSectors - 1 },
      { name: 'vs-data', first: first + slotSectors, last: first + slotSectors + 7 },
    ],
    first + slotSectors + 8,
  );
  const slot = disk.subarray(first * SECTOR, (first + slotSectors) * SECTOR);
  for (let i = 0; i < slot.length; i++) slot[i] = (i * 7 + 3) & 0xff;
  slot.writeUInt16LE(0xef53, 1024 + 56);
  disk.fill(0xdd, (first + slotSectors) * SECTOR); // the data partition must not be copied
  if (sign) signDisk(disk, first, slot);
  return { disk, slot };
}

const dir = mkdtempSync(join(tmpdir(), 'vtimg-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function box(booted: 'a' | 'b', env: string, slotBytes: number): SlotPaths {
  const paths: SlotPaths = {
    cmdline: join(dir, `cmdline-${booted}`),
    grubenv: join(dir, 'grubenv'),
    slotDevice: (s) => join(dir, `slot-${s}`),
    firmwareKeys: join(dir, 'firmware-keys'),
  };
  mkdirSync(paths.firmwareKeys, { recursive: true });
  writeFileSync(join(paths.firmwareKeys, 'build.pem'), signer.publicKey.export({ type: 'spki', format: 'pem' }));
  writeFileSync(paths.cmdline, `BOOT_IMAGE=/vmlinuz root=PARTLABEL=vs-system-${booted} rw vipshift.slot=${booted} panic=10\n`);
  writeFileSync(paths.grubenv, encodeGrubenv(new Map(env ? env.split(' ').map((kv) => kv.split('=') as [string, string]) : [])));
  writeFileSync(paths.slotDevice('a'), Buffer.alloc(slotBytes, 0xaa));
  writeFileSync(paths.slotDevice('b'), Buffer.alloc(slotBytes, 0xbb));
  return paths;
}

function chunks(buf: Buffer, size: number): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += size) parts.push(buf.subarray(i, i + size));
  return Readable.from(parts);
}

describe('GPT reader', () => {
  it('finds the partitions by name with their extents', () => {
    const { disk } = image(64);
    const parts = parseGpt(disk);
    expect(parts.map((p) => [p.number, p.name])).toEqual([[1, 'vs-esp'], [2, 'vs-system-a'], [3, 'vs-data']]);
    expect(partitionExtent(parts[1]!)).toEqual({ offset: 144 * SECTOR, length: 64 * SECTOR });
  });

  it('refuses a file without GPT, and a table whose CRC does not match', () => {
    expect(() => parseGpt(Buffer.alloc(GPT_PREFIX_BYTES), 'x.img')).toThrow(/x\.img: no GPT header/);
    const { disk } = image(8);
    disk[2 * SECTOR + 60]! ^= 1; // a byte of the first entry's name
    expect(() => parseGpt(disk)).toThrow(GptError);
    expect(() => parseGpt(disk)).toThrow(/entries CRC mismatch/);
  });
});

describe('GRUB environment block', () => {
  it('round-trips and keeps exactly 1024 bytes', () => {
    const block = encodeGrubenv(new Map([['slot', 'b'], ['try_slot', 'a']]));
    expect(block.length).toBe(GRUBENV_SIZE);
    expect(block.toString('latin1')).toMatch(/^# GRUB Environment Block\nslot=b\ntry_slot=a\n#+$/);
    expect([...parseGrubenv(block)]).toEqual([['slot', 'b'], ['try_slot', 'a']]);
  });

  it('reads what grub-editenv writes, refuses other files and unsafe values', () => {
    // As grub-editenv 2.06 writes it (`grub-editenv F create; grub-editenv F set slot=a try_slot=b`).
    const text = '# GRUB Environment Block\n# WARNING: Do not edit this file by tools other than grub-editenv!!!\nslot=a\ntry_slot=b\n';
    const block = Buffer.from(text.padEnd(1024, '#'), 'latin1');
    expect([...parseGrubenv(block)]).toEqual([['slot', 'a'], ['try_slot', 'b']]);
    expect(() => parseGrubenv(Buffer.alloc(1024))).toThrow(GrubenvError);
    expect(() => encodeGrubenv(new Map([['slot', 'a\nb']]))).toThrow(/needs escaping/);
  });
});

describe('A/B slot update', () => {
  it('reads the booted slot from the kernel command line', () => {
    expect(bootedSlot('root=PARTLABEL=vs-system-b rw vipshift.slot=b quiet')).toBe('b');
    expect(bootedSlot('root=/dev/sda1 vipshift.slot=c')).toBeNull();
  });

  it('writes the image system into the inactive slot only, then sets it for one boot', async () => {
    const { disk, slot } = image(64);
    const paths = box('a', 'slot=a', 80 * SECTOR);
    const result = await updateInactiveSlot(chunks(disk, 1000), 'new.img', paths, () => undefined);
    expect(result).toMatchObject({ slot: 'b', bytes: slot.length });
    expect(result.signer).toMatch(/^SHA256:\S+ \(.*build\.pem\)$/);
    const b = readFileSync(paths.slotDevice('b'));
    expect(b.subarray(0, slot.length).equals(slot)).toBe(true);
    expect(b.subarray(slot.length).every((x) => x === 0xbb)).toBe(true); // rest of the slot untouched
    expect(readFileSync(paths.slotDevice('a')).every((x) => x === 0xaa)).toBe(true); // running slot untouched
    expect(await readSlotState(paths)).toEqual({ booted: 'a', default: 'a', trying: 'b' });
  });

  it('accepts a zstd-compressed image', async () => {
    const { disk, slot } = image(64);
    const zst = spawnSync('zstd', ['-q', '-c'], { input: disk });
    expect(zst.status, 'zstd must be installed (make image installs it)').toBe(0);
    const paths = box('b', 'slot=b', 64 * SECTOR);
    const result = await updateInactiveSlot(chunks(zst.stdout, 4096), 'new.img.zst', paths, () => undefined);
    expect(result.slot).toBe('a');
    expect(readFileSync(paths.slotDevice('a')).equals(slot)).toBe(true);
  });

  it('refuses a slot too small, a non-image, and an update while on trial, leaving the slots alone', async () => {
    const { disk } = image(64);
    let paths = box('a', 'slot=a', 32 * SECTOR);
    await expect(updateInactiveSlot(chunks(disk, 4096), 'big.img', paths, () => undefined)).rejects.toThrow(/does not fit slot b/);
    paths = box('a', 'slot=a', 80 * SECTOR);
    await expect(updateInactiveSlot(chunks(Buffer.alloc(1 << 20), 4096), 'zero.img', paths, () => undefined)).rejects.toThrow(/zero\.img: no GPT header/);
    const noExt4 = image(64);
    noExt4.slot.writeUInt16LE(0, 1024 + 56);
    await expect(updateInactiveSlot(chunks(noExt4.disk, 4096), 'raw.img', paths, () => undefined)).rejects.toThrow(/no ext4/);
    expect(readFileSync(paths.slotDevice('b')).every((x) => x === 0xbb)).toBe(true);
    expect((await readSlotState(paths)).trying).toBeNull();
    paths = box('b', 'slot=a', 80 * SECTOR);
    await expect(updateInactiveSlot(chunks(disk, 4096), 'new.img', paths, () => undefined)).rejects.toThrow(/on trial/);
  });

  it('refuses an unsigned image, an untrusted key and an altered signature before writing anything', async () => {
    const paths = box('a', 'slot=a try_slot=b', 80 * SECTOR); // an earlier update waits for its reboot
    const unsigned = image(64, false);
    await expect(updateInactiveSlot(chunks(unsigned.disk, 4096), 'u.img', paths, () => undefined)).rejects.toThrow(/u\.img: unsigned image .*refused, nothing written/);
    const other = generateKeyPairSync('ed25519');
    const stranger = image(64, false);
    signDisk(stranger.disk, 144, stranger.slot, other.privateKey);
    await expect(updateInactiveSlot(chunks(stranger.disk, 4096), 's.img', paths, () => undefined)).rejects.toThrow(/signed with key SHA256:\S+, which this box does not trust \(trusted: SHA256:\S+ \(.*build\.pem\)\)/);
    const altered = image(64);
    altered.disk[SIGNATURE_OFFSET + 60]! ^= 1; // a bit of the signed digest
    await expect(updateInactiveSlot(chunks(altered.disk, 4096), 'a.img', paths, () => undefined)).rejects.toThrow(/a\.img: the firmware signature by SHA256:\S+ does not verify/);
    expect(readFileSync(paths.slotDevice('b')).every((x) => x === 0xbb)).toBe(true);
    expect(await readSlotState(paths)).toEqual({ booted: 'a', default: 'a', trying: 'b' }); // the earlier update still stands
  });

  it('writes a system altered after signing but never makes it bootable', async () => {
    const paths = box('a', 'slot=a', 80 * SECTOR);
    const { disk } = image(64);
    disk[144 * SECTOR + 5000]! ^= 1;
    await expect(updateInactiveSlot(chunks(disk, 4096), 't.img', paths, () => undefined)).rejects.toThrow(/not what SHA256:\S+ .* signed .*slot b was written but is NOT made bootable/);
    expect(await readSlotState(paths)).toEqual({ booted: 'a', default: 'a', trying: null });
  });

  it('refuses every update while the box has no firmware key', async () => {
    const paths = box('a', 'slot=a', 80 * SECTOR);
    rmSync(paths.firmwareKeys, { recursive: true });
    await expect(updateInactiveSlot(chunks(image(64).disk, 4096), 'n.img', paths, () => undefined)).rejects.toThrow(/no firmware keys on this box/);
  });

  it('commits the booted slot as the default', async () => {
    const paths = box('b', 'slot=a try_slot=b', SECTOR);
    expect(await commitBootedSlot(paths)).toBe('slot b is now the default');
    expect(await readSlotState(paths)).toEqual({ booted: 'b', default: 'b', trying: null });
    expect(await commitBootedSlot(paths)).toBe('slot b is already the default');
  });
});

describe('signing an image file (make image, vipshift firmware sign|verify)', () => {
  const pem = signer.privateKey.export({ type: 'pkcs8', format: 'pem' });
  const trusted = [{ name: 'image-build.pem', key: signer.publicKey }];

  it('signs the system partition in place; verify finds a changed byte of it', async () => {
    const file = join(dir, 'sign.img');
    const { disk } = image(64, false);
    writeFileSync(file, disk);
    const s = await signImageFile(file, pem);
    expect(s).toMatchObject({ offset: 144 * SECTOR, length: 64 * SECTOR });
    expect(decodeSignature(readFileSync(file).subarray(SIGNATURE_OFFSET, SIGNATURE_OFFSET + SIGNATURE_BYTES))).toEqual(s);
    expect((await verifyImageFile(file, trusted)).key.name).toBe('image-build.pem');
    await expect(verifyImageFile(file, [{ name: 'other.pem', key: generateKeyPairSync('ed25519').publicKey }])).rejects.toThrow(/does not trust/);
    const bytes = readFileSync(file);
    bytes[144 * SECTOR + 777]! ^= 1;
    writeFileSync(file, bytes);
    await expect(verifyImageFile(file, trusted)).rejects.toThrow(/system partition is not what was signed/);
  });

  it('refuses to sign an image whose partitions cover the signature block', async () => {
    const file = join(dir, 'clash.img');
    writeFileSync(file, gptDisk([{ name: 'vs-system-a', first: 34, last: 200 }], 256));
    await expect(signImageFile(file, pem)).rejects.toThrow(/starts at byte 17408, over the signature block/);
  });
});

describe('the roles\' systemd units', () => {
  it('restart a configured role however it ended (Restart=always, no start limit)', () => {
    for (const role of ['appliance', 'keeper', 'controller', 'etcd']) {
      const unit = readFileSync(`firmware/systemd/vipshift-${role}.service`, 'utf8');
      expect(unit, role).toMatch(new RegExp(`^ConditionPathExists=/var/lib/vipshift/${role}.yaml$`, 'm'));
      expect(unit, role).toMatch(/^Restart=always$/m);
      expect(unit, role).toMatch(/^StartLimitIntervalSec=0$/m);
    }
  });
});
