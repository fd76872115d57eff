/**
 * firmware/libexec/import-config on a data partition in a temporary folder, the configuration
 * partition's files given as a folder (VIPSHIFT_CONFIG_DIR: this kernel has no vfat to mount;
 * the QEMU image test mounts the real one): what an import took and the partition no longer
 * has is removed — a key, a role's configuration, credentials — and what the partition never
 * held is left alone; the time servers, firmware keys and the etcd member's configuration.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const SCRIPT = resolve('firmware/libexec/import-config');
const dir = mkdtempSync(join(tmpdir(), 'vipshift-import-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('import-config', () => {
  it('removes what a previous import took once it is deleted from the partition, and nothing else', () => {
    const partition = join(dir, 'config');
    const data = join(dir, 'data');
    const put = (name: string, text: string) => {
      mkdirSync(dirname(join(partition, name)), { recursive: true });
      writeFileSync(join(partition, name), text);
    };
    const run = join(dir, 'run');
    const importOnce = () =>
      execFileSync('sh', [SCRIPT], { encoding: 'utf8', env: { ...process.env, VIPSHIFT_DATA: data, VIPSHIFT_CONFIG_DIR: partition, VIPSHIFT_RUN: run } });
    put('authorized_keys', 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ1aWxkIGtleSBmb3IgdGVzdHM admin@test\r\n');
    put('appliance.yaml', 'appliance: lb1\n');
    put('cluster/lb1.key', 'private\n');
    put('cluster/peers.json', '{}\n');
    importOnce();
    expect(readFileSync(join(data, 'appliance.yaml'), 'utf8')).toBe('appliance: lb1\n');
    expect(existsSync(join(data, 'cluster/lb1.key'))).toBe(true);
    expect(readFileSync(join(data, 'ssh/authorized_keys.d/admin'), 'utf8')).not.toMatch(/\r/);
    // Put on the data partition by other means: never the import's to remove.
    writeFileSync(join(data, 'keeper.yaml'), 'keeper: srv1\n');

    for (const f of ['cluster/lb1.key', 'appliance.yaml', 'authorized_keys']) rmSync(join(partition, f));
    const out = importOnce();
    expect(out).toMatch(/removed appliance\.yaml/);
    expect(existsSync(join(data, 'appliance.yaml'))).toBe(false);
    expect(existsSync(join(data, 'cluster/lb1.key'))).toBe(false);
    expect(existsSync(join(data, 'ssh/authorized_keys.d/admin'))).toBe(false);
    expect(readFileSync(join(data, 'cluster/peers.json'), 'utf8')).toBe('{}\n');
    expect(readFileSync(join(data, 'keeper.yaml'), 'utf8')).toBe('keeper: srv1\n');
    // Unchanged partition: nothing imported, nothing removed.
    expect(importOnce()).not.toMatch(/importing|removed/);

    // Time servers, firmware keys, an etcd member.
    const timesyncd = join(run, 'systemd/timesyncd.conf.d/50-vipshift.conf');
    put('ntp', '# the site\'s servers\r\n198.51.100.123, 203.0.113.123\n\nntp1.example.net # backup\n');
    put('firmware-keys/site.pem', '-----BEGIN PUBLIC KEY-----\r\nMCowBQYDK2VwAyEA\r\n-----END PUBLIC KEY-----\r\n');
    put('etcd.yaml', 'name: ctl1\n');
    put('cluster/etcd/ca.crt', 'ca\n');
    put('cluster/etcd/member-ctl1.key', 'member key\n');
    put('cluster/etcd/client-ctl1.key', 'the controller\'s key\n');
    writeFileSync(join(data, 'firmware-keys/image-build.pem'), 'the build\'s key\n'); // put there by make image
    expect(importOnce()).toMatch(/ntp: 198\.51\.100\.123 203\.0\.113\.123 ntp1\.example\.net\n/);
    expect(readFileSync(timesyncd, 'utf8')).toBe('[Time]\nNTP=198.51.100.123 203.0.113.123 ntp1.example.net\nFallbackNTP=\n');
    expect(readFileSync(join(data, 'firmware-keys/site.pem'), 'utf8')).not.toMatch(/\r/);
    expect(readFileSync(join(data, 'etcd.yaml'), 'utf8')).toBe('name: ctl1\n');
    // The member's TLS files where the etcd user reads them; not the controller's client key.
    const tls = join(data, 'etcd-tls');
    expect(readdirSync(tls).sort()).toEqual(['ca.crt', 'member-ctl1.key']);
    expect(statSync(tls).uid).toBe(Number(execFileSync('id', ['-u', 'etcd'], { encoding: 'utf8' })));
    expect(statSync(join(tls, 'member-ctl1.key')).mode & 0o077).toBe(0);
    // A bad server name: the file is refused, the servers stay as they were.
    put('ntp', '198.51.100.123 $(reboot)\n');
    importOnce();
    expect(readFileSync(timesyncd, 'utf8')).toMatch(/^NTP=198\.51\.100\.123 203\.0\.113\.123 ntp1\.example\.net$/m);
    for (const f of ['ntp', 'firmware-keys/site.pem', 'etcd.yaml', 'cluster/etcd']) rmSync(join(partition, f), { recursive: true });
    importOnce();
    expect(existsSync(timesyncd)).toBe(false); // DHCP's servers, else Debian's pool again
    expect(existsSync(join(data, 'firmware-keys/site.pem'))).toBe(false);
    expect(existsSync(join(data, 'etcd.yaml'))).toBe(false); // the box is no etcd member any more
    expect(existsSync(tls)).toBe(false);
    expect(readFileSync(join(data, 'firmware-keys/image-build.pem'), 'utf8')).toBe('the build\'s key\n');
  });
});
