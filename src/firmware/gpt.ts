/**
 * GUID Partition Table reader (UEFI 2.10 §5.3): the primary header at LBA 1 and its partition
 * entry array, both checked by their CRC32. Pure: takes the first sectors of a disk.
 */
import { crc32 } from 'node:zlib';

export const SECTOR = 512;
/** Header (LBA 1) plus the usual 128 entries of 128 bytes (LBA 2..33). */
export const GPT_PREFIX_BYTES = 34 * SECTOR;

export interface GptPartition {
  number: number; // 1-based, as Linux and GRUB (gptN) count
  name: string;
  typeGuid: string;
  firstLba: bigint;
  lastLba: bigint; // inclusive
}

export class GptError extends Error {}

function guid(b: Buffer, at: number): string {
  // Mixed endian: the first three fields little-endian, the rest as bytes.
  const h = (start: number, end: number, le: boolean): string => {
    const bytes = [...b.subarray(at + start, at + end)];
    return Buffer.from(le ? bytes.reverse() : bytes).toString('hex');
  };
  return [h(0, 4, true), h(4, 6, true), h(6, 8, true), h(8, 10, false), h(10, 16, false)].join('-');
}

/** Parses the partitions of a disk whose first bytes are `disk` (at least GPT_PREFIX_BYTES). */
export function parseGpt(disk: Buffer, source = 'disk'): GptPartition[] {
  if (disk.length < 2 * SECTOR) throw new GptError(`${source}: ${disk.length} bytes, too short for a GPT`);
  const header = disk.subarray(SECTOR, 2 * SECTOR);
  if (header.toString('latin1', 0, 8) !== 'EFI PART') {
    throw new GptError(`${source}: no GPT header at LBA 1 (not a disk image?)`);
  }
  const headerSize = header.readUInt32LE(12);
  if (headerSize < 92 || headerSize > SECTOR) throw new GptError(`${source}: GPT header size ${headerSize} out of range`);
  const stored = header.readUInt32LE(16);
  const copy = Buffer.from(header.subarray(0, headerSize));
  copy.writeUInt32LE(0, 16);
  if (crc32(copy) !== stored) throw new GptError(`${source}: GPT header CRC mismatch`);

  const entriesLba = header.readBigUInt64LE(72);
  const count = header.readUInt32LE(80);
  const entrySize = header.readUInt32LE(84);
  if (entrySize < 128 || entrySize % 8 !== 0) throw new GptError(`${source}: GPT entry size ${entrySize} invalid`);
  const start = Number(entriesLba) * SECTOR;
  const end = start + count * entrySize;
  if (end > disk.length) throw new GptError(`${source}: GPT entries end at byte ${end}, only ${disk.length} read`);
  const entries = disk.subarray(start, end);
  if (crc32(entries) !== header.readUInt32LE(88)) throw new GptError(`${source}: GPT partition entries CRC mismatch`);

  const partitions: GptPartition[] = [];
  for (let i = 0; i < count; i++) {
    const e = entries.subarray(i * entrySize, (i + 1) * entrySize);
    if (e.subarray(0, 16).every((x) => x === 0)) continue; // unused entry
    const name = e.toString('utf16le', 56, 128).replace(/\0.*$/s, '');
    partitions.push({
      number: i + 1,
      name,
      typeGuid: guid(e, 0),
      firstLba: e.readBigUInt64LE(32),
      lastLba: e.readBigUInt64LE(40),
    });
  }
  return partitions;
}

/** Byte offset and length of a partition. */
export function partitionExtent(p: GptPartition): { offset: number; length: number } {
  return { offset: Number(p.firstLba) * SECTOR, length: Number(p.lastLba - p.firstLba + 1n) * SECTOR };
}
