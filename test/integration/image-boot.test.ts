/**
 * The appliance image under QEMU: BIOS and UEFI boot, SSH as admin into the console,
 * refused password and root logins, first-boot host keys, the configuration partition, the time
 * client and the etcd role, and an A/B firmware update (signed images only) with its fallback.
 * Needs the image: `make test-image` builds it first (cached). Figures go to bench/results/image.json.
 */
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApplianceVm, freshDisk, kvmWorks, must, partition, run, sleep, type FirmwareStatus } from './image-vm.js';
import { PEERS_FILE, createClusterCredentials, keyFile } from '../../src/api/auth.js';
import { decodeSignature, keyFingerprint, SIGNATURE_END, SIGNATURE_OFFSET } from '../../src/firmware/signature.js';
import { signImageFile } from '../../src/firmware/trust.js';

const repo = join(import.meta.dirname, '../..');
const version = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')).version as string;
const image = join(repo, `image/out/vipshift-${version}-amd64.img`);
const work = join(repo, `image/work/test-${process.pid.toString(16)}`);
const key = join(work, 'admin_key');
// The firmware's CLI decides what the appliance service and the login shell can do.
const cliCommands = run('node', [join(repo, 'dist/cli.js'), 'help']).stdout;
const hasAppliance = /^ {2}appliance /m.test(cliCommands);
const hasConsole = /^ {2}console /m.test(cliCommands);
// The test's own firmware key (the build's private key is gone once the image is made): its
// public key goes onto the configuration partition, and the test signs its updates with it.
const firmwareKey = generateKeyPairSync('ed25519');
const firmwareKeyPem = firmwareKey.publicKey.export({ type: 'spki', format: 'pem' }).toString();
// Documentation addresses: the VM's user networking is restricted, no packet reaches them.
const ntpServers = ['198.51.100.123', '203.0.113.123'];

// The guest has one network port (eth0: the kernel runs with net.ifnames=0): the VIP's
// outside and inside addresses both go there, and the agent listens on every address.
const applianceYaml = `appliance: lb1
api: { listen: "0.0.0.0:8441" }
interfaces: { external: eth0, internal: eth0 }
hold: { policy: queue, queueLength: 4096 }
vips:
  - { name: vip1, id: 1, address: 203.0.113.10, insideAddress: 198.18.0.10, prefixLength: 24, protocol: tcp,
      ports: [7, 80], mode: dnat, backends: [{ address: 198.18.0.101, weight: 1 }], owner: lb1 }
`;

/** The cluster credentials an operator puts on the configuration partition (cluster/). */
function clusterFiles(identity: string): Record<string, string> {
  const dir = join(work, 'pki');
  const boxAdmin = `${identity}-admin`;
  if (!existsSync(join(dir, PEERS_FILE))) createClusterCredentials(dir, { [identity]: 'appliance', ctl: 'controller', admin: 'admin', [boxAdmin]: 'admin' });
  return {
    [`cluster/${keyFile(identity)}`]: readFileSync(join(dir, keyFile(identity)), 'utf8'),
    // The box's own admin identity, with which the console on the box signs; the operator's
    // `admin` key never leaves the operator's machine (revoking a box revokes only its key).
    [`cluster/${keyFile(boxAdmin)}`]: readFileSync(join(dir, keyFile(boxAdmin)), 'utf8'),
    [`cluster/${PEERS_FILE}`]: readFileSync(join(dir, PEERS_FILE), 'utf8'),
  };
}

const vms: ApplianceVm[] = [];
const figures: Record<string, unknown> = {};
let accel: 'kvm' | 'tcg' = 'tcg';
let bootTimeout = 300;
let biosHostKey = '';

beforeAll(async () => {
  for (const old of run('sh', ['-c', `ls -d ${join(repo, 'image/work')}/test-* 2>/dev/null`]).stdout.split('\n').filter(Boolean)) {
    rmSync(old, { recursive: true, force: true }); // leftovers of a crashed run
  }
  if (!existsSync(image)) {
    // Run outside `make test-image` (plain vitest): build the image first (cached layers).
    process.stderr.write(`image tests: ${image} missing, building it (signed with a throwaway key)\n`);
    const keyDir = mkdtempSync(join(tmpdir(), 'vtimg-key-'));
    const buildKey = join(keyDir, 'throwaway-firmware.pem');
    writeFileSync(buildKey, generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    try {
      for (const [cmd, args] of [['make', ['-C', repo, 'image-deps']], ['bash', [join(repo, 'image/build.sh')]]] as const) {
        const r = spawnSync(cmd, [...args], { stdio: 'inherit', timeout: 1_500_000, env: { ...process.env, FIRMWARE_KEY: buildKey } });
        if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${r.status}`);
      }
    } finally {
      rmSync(keyDir, { recursive: true, force: true });
    }
  }
  mkdirSync(work, { recursive: true });
  must('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'vipshift-image-test', '-f', key]);
  accel = (await kvmWorks(image, work)) ? 'kvm' : 'tcg';
  bootTimeout = accel === 'kvm' ? 180 : 400;
  figures.accelerator = accel;
  process.stderr.write(`image tests: QEMU with ${accel.toUpperCase()}; appliance command ${hasAppliance ? 'present' : 'absent'}, console ${hasConsole ? 'present' : 'absent'}\n`);
}, 1_800_000);

afterAll(async () => {
  for (const vm of vms) await vm.stop();
  rmSync(work, { recursive: true, force: true });
  const stats = JSON.parse(readFileSync(join(repo, 'image/out/build-stats.json'), 'utf8')) as Record<string, unknown>;
  mkdirSync(join(repo, 'bench/results'), { recursive: true });
  const result = { image: `vipshift-${version}-amd64.img`, build: stats, ...figures, measuredAt: new Date().toISOString() };
  writeFileSync(join(repo, 'bench/results/image.json'), `${JSON.stringify(result, null, 2)}\n`);
  process.stderr.write(`bench/results/image.json: ${JSON.stringify(result)}\n`);
}, 60_000);

function role(s: FirmwareStatus, name: string) {
  const r = s.roles.find((x) => x.unit === `vipshift-${name}.service`);
  if (!r) throw new Error(`no ${name} unit in status`);
  return r;
}

/** The appliance unit is there and started; it runs once `vipshift appliance` exists. */
async function expectApplianceAttempted(vm: ApplianceVm): Promise<FirmwareStatus> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const s = vm.status();
    const a = role(s, 'appliance');
    const attempted = a.lastLog.some((l) => l.includes("unknown command 'appliance'") || l.includes('Main process exited'));
    if (a.configured && (hasAppliance ? a.active === 'active/running' : attempted)) return s;
    if (Date.now() > deadline) throw new Error(`appliance unit: ${JSON.stringify(a)}`);
    await sleep(3000);
  }
}

describe('vipshift appliance image under QEMU', () => {
  it('boots by BIOS, takes the configuration partition, lands admin in the console, refuses passwords and root', async () => {
    const disk = freshDisk(image, join(work, 'bios.img'), {
      authorized_keys: readFileSync(`${key}.pub`, 'utf8'),
      'appliance.yaml': applianceYaml,
      ...clusterFiles('lb1'),
      hostname: 'lb1-test',
      ntp: `${ntpServers.join(' ')}\n`,
    });
    const vm = new ApplianceVm('vtimg-bios', disk, 'bios', accel, key);
    vms.push(vm);
    await vm.start();
    figures.biosBootToSshSeconds = await vm.waitForSsh(bootTimeout);
    expect(vm.serialLog()).toContain('vipshift: booting system slot a');

    const s = await expectApplianceAttempted(vm);
    expect(s).toMatchObject({ version, booted: 'a', default: 'a', trying: null });
    expect(role(s, 'keeper').configured).toBe(false); // no keeper.yaml: the role is not started
    expect(s.data.totalBytes).toBeLessThan(256 * 2 ** 20); // the disk is the image: nothing to grow
    // The etcd role is there, and not started on a box whose configuration does not ask for it.
    expect(role(s, 'etcd')).toMatchObject({ loaded: true, configured: false, active: 'inactive/dead' });
    // The time client runs with the configuration partition's servers (and no Internet fallback).
    expect(s.time).toMatchObject({ unit: 'systemd-timesyncd.service', enabled: true, active: 'active/running', source: 'configuration', servers: ntpServers });
    // The box trusts the key that signed its own image (put on the data partition by the build).
    const head = Buffer.alloc(SIGNATURE_END);
    const fd = openSync(image, 'r');
    readSync(fd, head, 0, head.length, 0);
    closeSync(fd);
    const signature = decodeSignature(head.subarray(SIGNATURE_OFFSET), image);
    expect(signature, 'the built image is signed').not.toBeNull();
    expect(s.firmwareKeys).toEqual([{ file: '/var/lib/vipshift/firmware-keys/image-build.pem', fingerprint: keyFingerprint(signature!.publicKey) }]);
    const a = role(s, 'appliance');
    figures.applianceFirstStartAfterBootSeconds = a.firstStartedAfterBootSeconds;
    figures.applianceRestarts = a.restarts;
    figures.applianceMemoryBytes = a.memoryBytes;
    figures.applianceState = a.active;
    figures.systemMemoryUsedBytes = s.memory.usedBytes; // whole system, MemTotal - MemAvailable
    figures.systemMemoryTotalBytes = s.memory.totalBytes;

    // Interactive login: the login shell is the console (or, until it exists, the status view).
    const login = vm.ssh('admin', [], { extra: ['-tt'], input: '', killAfterMs: 30_000 });
    expect(login.stdout).toContain('lb1'); // the appliance of the configuration partition
    if (!hasConsole) expect(login.stdout).toMatch(/vipshift appliance lb1 on lb1-test[\s\S]*booted slot a/);

    const password = vm.ssh('admin', ['true'], {
      extra: ['-o', 'PubkeyAuthentication=no', '-o', 'PreferredAuthentications=password,keyboard-interactive'],
    });
    expect(password.status).toBe(255);
    expect(password.stderr).toMatch(/Permission denied \(publickey\)/);
    const root = vm.ssh('root', ['true']);
    expect(root.status).toBe(255);
    expect(root.stderr).toMatch(/Permission denied/);
    // No general shell for admin: the command is a vipshift command.
    const shell = vm.ssh('admin', ['sh', '-c', 'id']);
    expect(shell.stdout).not.toMatch(/uid=/);

    biosHostKey = vm.hostKey();
    await vm.stop();
  }, 900_000);

  let uefi: ApplianceVm;
  it('boots a second fresh copy by UEFI with host keys of its own', async () => {
    expect(biosHostKey, 'the BIOS test ran first').not.toBe('');
    const disk = freshDisk(image, join(work, 'uefi.img'), {
      authorized_keys: readFileSync(`${key}.pub`, 'utf8'),
      'firmware-keys/image-test.pem': firmwareKeyPem,
    });
    must('truncate', ['-s', '+1G', disk]); // a disk bigger than the image: the data partition takes the rest
    uefi = new ApplianceVm('vtimg-uefi', disk, 'uefi', accel, key);
    vms.push(uefi);
    await uefi.start();
    figures.uefiBootToSshSeconds = await uefi.waitForSsh(bootTimeout);
    expect(uefi.serialLog()).toContain('vipshift: booting system slot a');
    const s = uefi.status();
    expect(s).toMatchObject({ booted: 'a', default: 'a' });
    expect(role(s, 'appliance').configured).toBe(false); // no appliance.yaml on this one
    expect(s.time).toMatchObject({ enabled: true, active: 'active/running', source: 'fallback' }); // no ntp file, no DHCP servers
    expect(s.firmwareKeys.map((k) => k.file.replace(/.*\//, ''))).toEqual(['image-build.pem', 'image-test.pem']);
    expect(s.data.totalBytes).toBeGreaterThan(1.1 * 2 ** 30); // 256 MiB in the image + 1 GiB of disk
    const hostKey = uefi.hostKey();
    expect(hostKey).toMatch(/^ssh-ed25519 /);
    expect(hostKey).not.toBe(biosHostKey);
  }, 900_000);

  it('refuses an unsigned and a badly signed image before writing anything', () => {
    expect(uefi, 'the UEFI test ran first').toBeDefined();
    // The start of the image is enough: the box refuses it before the system partition.
    const head = Buffer.alloc(2 << 20);
    const fd = openSync(image, 'r');
    readSync(fd, head, 0, head.length, 0);
    closeSync(fd);
    const unsigned = Buffer.from(head);
    unsigned.fill(0, SIGNATURE_OFFSET, SIGNATURE_END);
    const u = uefi.ssh('admin', ['firmware', 'update', '-', '--reboot'], { input: unsigned });
    expect(u.status, u.stdout).toBe(1);
    expect(u.stderr).toMatch(/firmware update refused: standard input: unsigned image \(no firmware signature at byte 65536\): refused, nothing written/);
    const altered = Buffer.from(head);
    altered[SIGNATURE_OFFSET + 100]! ^= 1; // a bit of the signed SHA-512: the build key's signature no longer matches
    const a = uefi.ssh('admin', ['firmware', 'update', '-', '--reboot'], { input: altered });
    expect(a.status, a.stdout).toBe(1);
    expect(a.stderr).toMatch(/firmware update refused: standard input: the firmware signature by SHA256:\S+ does not verify/);
    expect(uefi.status()).toMatchObject({ booted: 'a', default: 'a', trying: null });
  }, 120_000);

  /** A copy of the image whose system slot says `label` in VERSION, plus `extra` files; signed with the test's key. */
  async function updateImage(label: string, extra: Record<string, string> = {}): Promise<string> {
    const path = join(work, `update-${label}.img`);
    must('cp', ['--sparse=always', image, path]);
    const { offset, length } = partition(path, 'vs-system-a');
    const fs = `${path}.ext4`;
    must('dd', [`if=${path}`, `of=${fs}`, 'bs=1M', `skip=${offset / 2 ** 20}`, `count=${length / 2 ** 20}`, 'conv=sparse', 'status=none']);
    const files = { '/opt/vipshift/VERSION': `${label}\n`, ...extra };
    const commands: string[] = [];
    Object.entries(files).forEach(([dest, content], i) => {
      const local = `${path}.file${i}`;
      writeFileSync(local, content);
      const dir = dest.slice(0, dest.lastIndexOf('/'));
      const name = dest.slice(dest.lastIndexOf('/') + 1);
      commands.push(`cd ${dir}`, `rm ${name}`, `write ${local} ${name}`);
    });
    writeFileSync(`${path}.debugfs`, `${commands.join('\n')}\n`);
    run('debugfs', ['-w', '-f', `${path}.debugfs`, fs]); // `rm` of a missing file only complains
    must('dd', [`if=${fs}`, `of=${path}`, 'bs=1M', `seek=${offset / 2 ** 20}`, 'conv=notrunc,sparse', 'status=none']);
    await signImageFile(path, firmwareKey.privateKey.export({ type: 'pkcs8', format: 'pem' }));
    must('zstd', ['-q', '-T0', '-3', '-f', path, '-o', `${path}.zst`]);
    rmSync(fs);
    return `${path}.zst`;
  }

  /** The kernel's uptime on the last line of the serial log that has one, and the slots booted. */
  function serialProgress(vm: ApplianceVm, since = 0): string {
    const log = vm.serialLog().slice(since);
    const boots = [...log.matchAll(/\] Command line: .*?vipshift\.slot=([ab])/g)].map((m) => m[1]);
    const uptime = [...log.matchAll(/^\[\s*(\d+\.\d+)\]/gm)].at(-1)?.[1];
    return `kernel boots since the update: [${boots.join(', ')}], last kernel time ${uptime ?? '-'} s`;
  }

  /**
   * Polls `firmware status` until `want`. The bound is generous (a reboot under TCG on a busy
   * machine takes minutes); progress goes to stderr each minute so a slow run shows where it is.
   */
  async function waitForStatus(vm: ApplianceVm, want: (s: FirmwareStatus) => boolean, seconds: number, since = 0): Promise<FirmwareStatus> {
    const started = Date.now();
    const deadline = started + seconds * 1000;
    let last: FirmwareStatus | string = 'no answer';
    let reported = started;
    while (Date.now() < deadline) {
      const r = vm.ssh('admin', ['firmware', 'status', '--json'], { timeout: 5 });
      if (r.status === 0) {
        last = JSON.parse(r.stdout) as FirmwareStatus;
        if (want(last)) return last;
      }
      if (Date.now() - reported > 60_000) {
        reported = Date.now();
        process.stderr.write(`image tests: ${vm.name} after ${Math.round((reported - started) / 1000)} s: ${serialProgress(vm, since)}; status ${JSON.stringify(last).slice(0, 120)}\n`);
      }
      await sleep(3000);
    }
    throw new Error(`${vm.name}: status not reached in ${seconds}s (${accel}); ${serialProgress(vm, since)}; last: ${JSON.stringify(last)}\n${vm.serialLog().slice(-2000)}`);
  }

  it('updates the firmware into slot b, boots it, keeps the data partition, and falls back from a broken update', async () => {
    expect(uefi, 'the UEFI test ran first').toBeDefined();
    const hostKey = uefi.hostKey();
    const good = await updateImage(`${version}+update`);
    const started = Date.now();
    const serialAtUpdate = uefi.serialLog().length;
    const update = uefi.ssh('admin', ['firmware', 'update', '-', '--reboot'], { input: readFileSync(good) });
    expect(update.status, update.stderr).toBe(0);
    expect(update.stdout).toMatch(/slot b: \d+ MiB written in [\d.]+ s, signed by SHA256:\S+ \(\/var\/lib\/vipshift\/firmware-keys\/image-test\.pem\)/);
    figures.updateWriteSeconds = (Date.now() - started) / 1000;

    // Trial boot of b, confirmed by the health check once sshd has been up for 10 s.
    const s = await waitForStatus(uefi, (x) => x.booted === 'b' && x.default === 'b', 2 * bootTimeout + 60, serialAtUpdate);
    expect(s).toMatchObject({ version: `${version}+update`, trying: null });
    expect(uefi.hostKey()).toBe(hostKey); // host keys live on the data partition
    figures.updateToConfirmedSeconds = (Date.now() - started) / 1000;

    // A system whose sshd cannot start: the health check gives up and GRUB returns to slot b.
    const broken = await updateImage('broken', { '/etc/ssh/sshd_config.d/zz-broken.conf': 'ThisIsNotAnOption yes\n' });
    const serialBefore = uefi.serialLog().length;
    const update2 = uefi.ssh('admin', ['firmware', 'update', '-', '--reboot'], { input: readFileSync(broken) });
    expect(update2.status, update2.stderr).toBe(0);
    expect(update2.stdout).toMatch(/slot a: \d+ MiB written/);
    // The kernel logs its command line once per boot (GRUB's own lines show twice under OVMF).
    const bootsSince = () => [...uefi.serialLog().slice(serialBefore).matchAll(/\] Command line: .*?vipshift\.slot=([ab])/g)].map((m) => m[1]);
    const after = await waitForStatus(uefi, (x) => x.booted === 'b' && bootsSince().length >= 2, 3 * bootTimeout + 240, serialBefore);
    expect(after).toMatchObject({ version: `${version}+update`, default: 'b', trying: null });
    expect(bootsSince()).toEqual(['a', 'b']); // one trial of the broken slot, then back to b
    expect(uefi.hostKey()).toBe(hostKey);
  }, 3_000_000);
});
