/**
 * Installs GRUB's BIOS boot code into a GPT disk image file, as grub-bios-setup would on a
 * block device (it refuses an image file here): boot.img goes into the protective MBR and
 * core.img into the BIOS boot partition, each patched with where the other is.
 *
 *   npx tsx image/bios-boot.ts DISK.img boot.img core.img START_SECTOR
 *
 * Offsets are GRUB 2.06's (include/grub/i386/pc/boot.h): the kernel sector at 0x5c, the boot
 * drive at 0x64 (0xff: the drive the BIOS booted from), the drive check jump at 0x66 (turned
 * into two NOPs for hard disks, for BIOSes that pass a wrong drive number); the first
 * blocklist entry of diskboot.img is the last 12 bytes of core.img's first sector.
 */
import { closeSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';

const SECTOR = 512;
const KERNEL_SECTOR = 0x5c;
const BOOT_DRIVE = 0x64;
const DRIVE_CHECK = 0x66;
const BPB_START = 0x03;
const BPB_END = 0x5a;
const MBR_CODE_END = 0x1b8; // disk signature and partition table follow: keep the disk's own
const KERNEL_SEGMENT = 0x800 + (SECTOR >> 4);

const [disk, bootPath, corePath, startArg] = process.argv.slice(2);
if (!disk || !bootPath || !corePath || !startArg) {
  process.stderr.write('usage: bios-boot.ts DISK.img boot.img core.img START_SECTOR\n');
  process.exit(2);
}
const start = BigInt(startArg);
const boot = readFileSync(bootPath);
const core = readFileSync(corePath);
if (boot.length !== SECTOR) throw new Error(`${bootPath}: ${boot.length} bytes, expected ${SECTOR}`);
const sectors = Math.ceil(core.length / SECTOR);
const padded = Buffer.alloc(sectors * SECTOR);
core.copy(padded);

// diskboot.img loads the rest of core.img: one contiguous run after its own sector.
const entry = SECTOR - 12;
padded.writeBigUInt64LE(start + 1n, entry);
padded.writeUInt16LE(sectors - 1, entry + 8);
padded.writeUInt16LE(KERNEL_SEGMENT, entry + 10);
padded.fill(0, entry - 12, entry); // terminator

const fd = openSync(disk, 'r+');
try {
  const mbr = Buffer.alloc(SECTOR);
  readSync(fd, mbr, 0, SECTOR, 0);
  if (mbr.readUInt16LE(510) !== 0xaa55 || mbr[0x1c2] !== 0xee) {
    throw new Error(`${disk}: no GPT protective MBR (partition the disk first)`);
  }
  const code = Buffer.from(boot);
  mbr.copy(code, BPB_START, BPB_START, BPB_END);
  code.writeBigUInt64LE(start, KERNEL_SECTOR);
  code[BOOT_DRIVE] = 0xff;
  code[DRIVE_CHECK] = 0x90;
  code[DRIVE_CHECK + 1] = 0x90;
  code.copy(mbr, 0, 0, MBR_CODE_END);
  writeSync(fd, padded, 0, padded.length, Number(start) * SECTOR);
  writeSync(fd, mbr, 0, SECTOR, 0);
} finally {
  closeSync(fd);
}
process.stdout.write(`BIOS boot: boot.img in the MBR, core.img (${sectors} sectors) at sector ${start}\n`);
