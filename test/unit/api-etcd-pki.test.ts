/** The etcd cluster's TLS material (vipshift pki etcd), checked with Node's own X.509 parser. */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createEtcdPki, etcdClientFiles, etcdMemberFiles } from '../../src/api/etcd-pki.js';
import { parseEtcdMembers } from '../../src/cli/pki.js';

const dirs: string[] = [];
const scratch = () => {
  const d = mkdtempSync(path.join(tmpdir(), 'vipshift-pki-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const cert = (file: string) => new X509Certificate(readFileSync(file));

describe('etcd PKI', () => {
  it('mints a CA, member certificates for their addresses and client certificates, all signed by the CA', async () => {
    const dir = scratch();
    const written = await createEtcdPki(dir, { members: [{ name: 'ctl1', hosts: ['192.0.2.2', 'ctl1.example'] }], clients: ['ctl1', 'admin'] });
    expect(written).toHaveLength(8);
    const ca = cert(etcdMemberFiles(dir, 'ctl1').ca);
    expect(ca.ca).toBe(true);
    const member = cert(etcdMemberFiles(dir, 'ctl1').cert);
    expect(member.subject).toBe('CN=ctl1');
    expect(member.checkIssued(ca) && member.verify(ca.publicKey)).toBe(true);
    expect(member.ca).toBe(false);
    expect(member.subjectAltName).toBe('IP Address:192.0.2.2, DNS:ctl1.example');
    expect(member.checkIP('192.0.2.2')).toBe('192.0.2.2');
    expect(member.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']); // serverAuth, clientAuth
    const client = cert(etcdClientFiles(dir, 'admin').cert);
    expect(client.verify(ca.publicKey)).toBe(true);
    expect(client.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    // The key belongs to the certificate, and is the owner's alone.
    const key = createPrivateKey(readFileSync(etcdClientFiles(dir, 'admin').key));
    expect(client.checkPrivateKey(key)).toBe(true);
    expect(statSync(etcdClientFiles(dir, 'admin').key).mode & 0o777).toBe(0o600);
    expect(new Date(client.validTo).getTime()).toBeGreaterThan(Date.now() + 4 * 365 * 86_400_000);
  });

  it('keeps what exists and signs what is missing with the same CA; --force mints all anew', async () => {
    const dir = scratch();
    await createEtcdPki(dir, { members: [{ name: 'ctl1', hosts: ['192.0.2.2'] }], clients: ['ctl1'] });
    const before = readFileSync(etcdMemberFiles(dir, 'ctl1').cert, 'utf8');
    const added = await createEtcdPki(dir, { members: [{ name: 'ctl1', hosts: ['192.0.2.2'] }, { name: 'ctl2', hosts: ['192.0.2.3'] }], clients: ['ctl1', 'ctl2'] });
    expect(added.map((f) => path.basename(f))).toEqual(['member-ctl2.crt', 'member-ctl2.key', 'client-ctl2.crt', 'client-ctl2.key']);
    expect(readFileSync(etcdMemberFiles(dir, 'ctl1').cert, 'utf8')).toBe(before);
    expect(cert(etcdMemberFiles(dir, 'ctl2').cert).verify(cert(etcdMemberFiles(dir, 'ctl1').ca).publicKey)).toBe(true);
    const anew = await createEtcdPki(dir, { members: [{ name: 'ctl1', hosts: ['192.0.2.2'] }], clients: [] }, true);
    expect(anew).toHaveLength(4);
    expect(cert(etcdMemberFiles(dir, 'ctl2').cert).verify(cert(etcdMemberFiles(dir, 'ctl1').ca).publicKey)).toBe(false);
  });

  it('refuses bad names and addresses before writing anything, naming them', async () => {
    const dir = scratch();
    await expect(createEtcdPki(dir, { members: [{ name: 'Ctl1', hosts: ['192.0.2.2'] }], clients: [] })).rejects.toThrow(/invalid name 'Ctl1'/);
    await expect(createEtcdPki(dir, { members: [{ name: 'ctl1', hosts: ['bad host'] }], clients: [] })).rejects.toThrow("etcd member 'ctl1': 'bad host' is neither an IP address nor a host name");
    await expect(createEtcdPki(dir, { members: [{ name: 'ctl1', hosts: [] }], clients: [] })).rejects.toThrow(/no address/);
    expect(() => statSync(path.join(dir, 'etcd'))).toThrow(/ENOENT/);
    expect(parseEtcdMembers('ctl1=192.0.2.2/ctl1.example, ctl2=2001:db8::2')).toEqual([
      { name: 'ctl1', hosts: ['192.0.2.2', 'ctl1.example'] },
      { name: 'ctl2', hosts: ['2001:db8::2'] },
    ]);
    expect(() => parseEtcdMembers('ctl1')).toThrow("--members: 'ctl1': expected NAME=HOST[/HOST...]");
    expect(() => parseEtcdMembers('a=192.0.2.1,a=192.0.2.2')).toThrow("--members: 'a' is named twice");
  });
});
