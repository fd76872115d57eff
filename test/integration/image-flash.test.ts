/**
 * `make flash` (image/flash.sh) on loop devices: it refuses a partition, a disk with a mounted
 * file system and the machine's own root disk, and writes an image that then reads back
 * identical. Root, real block devices; every loop device and mount is removed afterwards.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repo = join(import.meta.dirname, '../..');
const dir = mkdtempSync(join(tmpdir(), 'vtimgflash-'));
const loops: string[] = [];
const mounts: string[] = [];

function sh(cmd: string, args: string[]) {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return { status: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}
function loop(file: string, mib: number): string {
  sh('truncate', ['-s', `${mib}M`, file]);
  const r = sh('losetup', ['-f', '--show', file]);
  if (r.status !== 0) throw new Error(`losetup: ${r.stderr}`);
  loops.push(r.stdout.trim());
  return r.stdout.trim();
}
const flash = (image: string, dev: string) => sh('bash', [join(repo, 'image/flash.sh'), image, dev]);
function sha(path: string, bytes: number): string {
  const fd = openSync(path, 'r');
  const buf = Buffer.alloc(bytes);
  readSync(fd, buf, 0, bytes, 0);
  closeSync(fd);
  return createHash('sha256').update(buf).digest('hex');
}

// A small stand-in image: a GPT disk with recognisable content (the real one is 2.9 GB).
const image = join(dir, 'small.img');
beforeAll(() => {
  // Leftovers of a crashed run: loop devices backed by an earlier vtimgflash- folder.
  for (const line of sh('losetup', ['-n', '-O', 'NAME,BACK-FILE']).stdout.split('\n')) {
    const [name, file] = line.trim().split(/\s+/);
    if (name && file?.includes('/vtimgflash-')) sh('losetup', ['-d', name]);
  }
  const content = Buffer.alloc(8 << 20);
  for (let i = 0; i < content.length; i += 4) content.writeUInt32LE(i * 2654435761 >>> 0, i);
  writeFileSync(image, content);
  expect(sh('sgdisk', ['-n', '1:2048:+4M', '-c', '1:vs-test', image]).status).toBe(0);
});

afterAll(() => {
  for (const m of mounts) sh('umount', [m]);
  for (const l of loops) sh('losetup', ['-d', l]);
  rmSync(dir, { recursive: true, force: true });
});

describe('make flash', () => {
  it('refuses the disk this machine runs from', () => {
    const root = sh('findmnt', ['-n', '-o', 'SOURCE', '/']).stdout.trim();
    const disk = sh('lsblk', ['-n', '-s', '-o', 'NAME,TYPE', root]).stdout.split('\n').find((l) => / disk$/.test(l.trim()));
    expect(disk, `a disk under ${root}`).toBeDefined();
    const r = flash(image, `/dev/${disk!.trim().split(/\s+/)[0]!.replace(/[^a-zA-Z0-9]/g, '')}`);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/holds this machine's root file system/);
  });

  it('refuses a disk with a mounted file system, and a missing image', () => {
    const dev = loop(join(dir, 'mounted.img'), 64);
    expect(sh('mkfs.ext4', ['-q', dev]).status).toBe(0);
    const mnt = join(dir, 'mnt');
    sh('mkdir', ['-p', mnt]);
    expect(sh('mount', [dev, mnt]).status).toBe(0);
    mounts.push(mnt);
    const r = flash(image, dev);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/has mounted file systems/);
    expect(flash(join(dir, 'nope.img'), dev).stderr).toMatch(/no such image/);
  });

  it('refuses a disk smaller than the image, then writes one that reads back identical', () => {
    const small = loop(join(dir, 'small-disk.img'), 4);
    const tooSmall = flash(image, small);
    expect(tooSmall.status).toBe(1);
    expect(tooSmall.stderr).toMatch(/larger than/);
    const dev = loop(join(dir, 'target.img'), 16);
    const r = flash(image, dev);
    expect(r.status, r.stderr).toBe(0);
    expect(sha(dev, 8 << 20)).toBe(sha(image, 8 << 20));
    const zst = `${image}.zst`;
    expect(sh('zstd', ['-q', '-f', image, '-o', zst]).status).toBe(0);
    const dev2 = loop(join(dir, 'target2.img'), 16);
    expect(flash(zst, dev2).status).toBe(0);
    expect(sha(dev2, 8 << 20)).toBe(sha(image, 8 << 20));
  });
});
