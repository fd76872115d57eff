/**
 * A vipshift appliance image booted under QEMU for the image tests: its own copy of the disk,
 * user-mode networking on 192.0.2.0/24 with the guest's SSH on a loopback port, the serial
 * console in a file. KVM when it makes progress within a timeout, TCG otherwise.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, constants, existsSync, openSync, readFileSync, readSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { GPT_PREFIX_BYTES, parseGpt, partitionExtent } from '../../src/firmware/gpt.js';

export type Boot = 'bios' | 'uefi';
export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function run(cmd: string, args: string[], input?: string | Buffer): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export function must(cmd: string, args: string[]): string {
  const r = run(cmd, args);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}: ${r.stderr.trim()}`);
  return r.stdout;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

/** Byte offset and length of a named partition of a disk image file. */
export function partition(disk: string, name: string): { offset: number; length: number } {
  const fd = openSync(disk, 'r');
  const head = Buffer.alloc(GPT_PREFIX_BYTES);
  readSync(fd, head, 0, head.length, 0);
  closeSync(fd);
  const p = parseGpt(head, disk).find((x) => x.name === name);
  if (!p) throw new Error(`${disk}: no partition ${name}`);
  return partitionExtent(p);
}

/** A sparse copy of the image with files put on its FAT configuration partition. */
export function freshDisk(image: string, path: string, config: Record<string, string>): string {
  must('cp', ['--sparse=always', image, path]);
  const { offset } = partition(path, 'vs-config');
  const folders = new Set<string>();
  for (const [name, content] of Object.entries(config)) {
    const folder = name.includes('/') ? name.slice(0, name.lastIndexOf('/')) : '';
    if (folder && !folders.has(folder)) {
      must('mmd', ['-i', `${path}@@${offset}`, `::/${folder}`]);
      folders.add(folder);
    }
    const local = `${path}.${name.replace(/\W/g, '_')}`;
    writeFileSync(local, content);
    must('mcopy', ['-o', '-i', `${path}@@${offset}`, local, `::/${name}`]);
  }
  return path;
}

/** Whether KVM gets this image as far as GRUB within `seconds` (on some hosts it hangs). */
export async function kvmWorks(image: string, dir: string, seconds = 30): Promise<boolean> {
  try {
    const fd = openSync('/dev/kvm', constants.O_RDWR);
    closeSync(fd);
  } catch {
    return false;
  }
  const serial = join(dir, 'kvm-probe.serial');
  const qemu = spawn('qemu-system-x86_64', ['-accel', 'kvm', '-machine', 'q35', '-m', '512', '-display', 'none',
    '-serial', `file:${serial}`, '-drive', `file=${image},format=raw,if=virtio,snapshot=on`, '-no-reboot'], { stdio: 'ignore' });
  const deadline = Date.now() + seconds * 1000;
  let ok = false;
  while (Date.now() < deadline && qemu.exitCode === null) {
    if (existsSync(serial) && readFileSync(serial, 'utf8').includes('vipshift: booting system slot')) {
      ok = true;
      break;
    }
    await sleep(500);
  }
  qemu.kill('SIGKILL');
  return ok;
}

export class ApplianceVm {
  readonly serial: string;
  port = 0;
  startedAt = 0;
  private qemu: ChildProcess | null = null;

  constructor(
    readonly name: string,
    readonly disk: string,
    readonly boot: Boot,
    readonly accel: 'kvm' | 'tcg',
    readonly key: string,
  ) {
    this.serial = `${disk}.serial`;
  }

  async start(): Promise<void> {
    this.port = await freePort();
    const args = ['-name', this.name, '-accel', this.accel, '-machine', 'q35', '-m', '1024', '-smp', '2',
      '-display', 'none', '-serial', `file:${this.serial}`,
      '-drive', `file=${this.disk},format=raw,if=virtio`,
      // restrict=on: nothing the guest sends leaves the host (its time client, DNS); only the SSH forward.
      '-netdev', `user,id=mgmt,net=192.0.2.0/24,restrict=on,hostfwd=tcp:127.0.0.1:${this.port}-:22`,
      '-device', 'virtio-net-pci,netdev=mgmt'];
    if (this.boot === 'uefi') {
      const vars = `${this.disk}.vars.fd`;
      copyFileSync(OVMF_VARS, vars);
      args.push('-drive', `if=pflash,format=raw,readonly=on,file=${OVMF_CODE}`, '-drive', `if=pflash,format=raw,file=${vars}`);
    }
    this.startedAt = Date.now();
    this.qemu = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.qemu.stderr?.on('data', (d: Buffer) => process.stderr.write(`[${this.name} qemu] ${d}`));
  }

  serialLog(): string {
    return existsSync(this.serial) ? readFileSync(this.serial, 'utf8') : '';
  }

  /** ssh as `user` with the test key; the guest is reached through the forwarded port. */
  ssh(user: string, command: string[], opts: { input?: string | Buffer; extra?: string[]; timeout?: number; killAfterMs?: number } = {}) {
    const args = ['-p', String(this.port), '-i', this.key, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes',
      '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR',
      '-o', `ConnectTimeout=${opts.timeout ?? 10}`, ...(opts.extra ?? []), `${user}@127.0.0.1`, ...command];
    const r = spawnSync('ssh', args, {
      input: opts.input,
      encoding: 'utf8',
      timeout: opts.killAfterMs ?? 600_000, // a console runs until killed: its output so far is kept
      maxBuffer: 64 << 20,
      env: { ...process.env, TERM: 'xterm-256color', LANG: 'C.UTF-8' },
    });
    return { status: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }

  /** Waits until admin can run a command over SSH; returns the seconds since QEMU started. */
  async waitForSsh(timeoutSeconds: number): Promise<number> {
    const deadline = Date.now() + timeoutSeconds * 1000;
    while (Date.now() < deadline) {
      if (this.qemu?.exitCode !== null && this.qemu?.exitCode !== undefined) {
        throw new Error(`${this.name}: QEMU exited (${this.qemu.exitCode}); serial:\n${this.serialLog().slice(-3000)}`);
      }
      if (this.ssh('admin', ['firmware', 'status', '--json'], { timeout: 5 }).status === 0) {
        return (Date.now() - this.startedAt) / 1000;
      }
      await sleep(2000);
    }
    throw new Error(`${this.name}: no SSH within ${timeoutSeconds}s; serial:\n${this.serialLog().slice(-3000)}`);
  }

  status(): FirmwareStatus {
    const r = this.ssh('admin', ['firmware', 'status', '--json']);
    if (r.status !== 0) throw new Error(`${this.name}: firmware status: exit ${r.status}: ${r.stderr}`);
    return JSON.parse(r.stdout) as FirmwareStatus;
  }

  hostKey(): string {
    const r = run('ssh-keyscan', ['-p', String(this.port), '-t', 'ed25519', '127.0.0.1']);
    const line = r.stdout.split('\n').find((l) => l.includes('ssh-ed25519'));
    if (!line) throw new Error(`${this.name}: no ed25519 host key (${r.stderr.trim()})`);
    return line.split(/\s+/).slice(1).join(' ');
  }

  async stop(): Promise<void> {
    if (!this.qemu || this.qemu.exitCode !== null) return;
    const exited = new Promise((r) => this.qemu?.once('exit', r));
    this.qemu.kill('SIGTERM');
    await Promise.race([exited, sleep(5000)]);
    if (this.qemu.exitCode === null) this.qemu.kill('SIGKILL');
  }
}

export interface FirmwareStatus {
  version: string;
  booted: 'a' | 'b' | null;
  default: 'a' | 'b';
  trying: 'a' | 'b' | null;
  memory: { totalBytes: number; usedBytes: number };
  data: { totalBytes: number; freeBytes: number };
  time: { unit: string; enabled: boolean; active: string; servers: string[]; source: string; serverName: string | null; synchronized: boolean };
  firmwareKeys: { file: string; fingerprint: string }[];
  roles: {
    unit: string;
    loaded: boolean;
    configured: boolean;
    active: string;
    restarts: number;
    memoryBytes: number | null;
    startedAfterBootSeconds: number | null;
    firstStartedAfterBootSeconds: number | null;
    lastLog: string[];
  }[];
}
