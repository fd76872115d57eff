/**
 * The TLS material of the controllers' etcd cluster (the one module that owns @peculiar/x509):
 * a private CA, a certificate for each etcd member (server and peer: it serves the clients and
 * the other members, and dials those), and a client certificate for each controller. etcd
 * runs with `--client-cert-auth` and `--peer-client-cert-auth` on this CA, so only a holder of
 * one of its certificates reads or writes the journal.
 *
 * Why @peculiar/x509 and not node-forge: it builds the certificates on WebCrypto, so Node's
 * own OpenSSL makes the ECDSA P-256 keys and the signatures (node-forge does RSA in JavaScript,
 * seconds per key, and has no ECDSA); it is written in TypeScript and kept up to date.
 *
 * Files, under `<dir>/etcd/` (keys PKCS#8 PEM, mode 0600): `ca.crt` `ca.key`,
 * `member-<name>.crt` `.key`, `client-<name>.crt` `.key`. What exists is kept unless `force`
 * (a new CA would lock every holder of the old certificates out); a missing certificate is
 * signed by the CA already there.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { randomBytes, webcrypto } from 'node:crypto';
import path from 'node:path';
import type { ExtendedKeyUsage, X509Certificate } from '@peculiar/x509';
import { validIdentity } from './auth.js';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
type X509 = typeof import('@peculiar/x509');

/** The library, loaded when something is minted (it takes most of a second: not on every command's start). */
async function x509(): Promise<X509> {
  // tsyringe, under @peculiar/x509, needs the Reflect metadata API before it loads.
  await import('reflect-metadata');
  const lib = await import('@peculiar/x509');
  lib.cryptoProvider.set(webcrypto as unknown as Parameters<typeof lib.cryptoProvider.set>[0]);
  return lib;
}

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 86_400_000;
/** The CA outlives the certificates it signs; `vipshift pki etcd --force` mints all anew. */
const CA_DAYS = 3650;
const LEAF_DAYS = 1825;

export interface EtcdMemberSpec {
  name: string;
  /** Addresses (IP) and host names the member is reached by: the certificate's subjectAltName. */
  hosts: string[];
}

export interface EtcdTlsFiles {
  ca: string;
  cert: string;
  key: string;
}

export const etcdPkiDir = (dir: string): string => path.join(dir, 'etcd');
/** The files a member's etcd serves and dials with. */
export const etcdMemberFiles = (dir: string, member: string): EtcdTlsFiles => files(dir, `member-${member}`);
/** The files a controller (the etcd client) presents. */
export const etcdClientFiles = (dir: string, client: string): EtcdTlsFiles => files(dir, `client-${client}`);
const files = (dir: string, base: string): EtcdTlsFiles => ({
  ca: path.join(etcdPkiDir(dir), 'ca.crt'),
  cert: path.join(etcdPkiDir(dir), `${base}.crt`),
  key: path.join(etcdPkiDir(dir), `${base}.key`),
});

const pem = (label: string, der: ArrayBuffer) =>
  `-----BEGIN ${label}-----\n${Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END ${label}-----\n`;
const unpem = (text: string): Buffer => Buffer.from(text.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
// A positive serial of 16 random bytes (RFC 5280 4.1.2.2: at most 20 octets).
const serial = () => {
  const b = randomBytes(16);
  b[0]! &= 0x7f;
  return b.toString('hex');
};

interface Authority {
  cert: X509Certificate;
  key: CryptoKey;
}

function writeSecret(file: string, text: string): void {
  writeFileSync(file, text, { mode: 0o600 });
  chmodSync(file, 0o600);
}

async function loadOrMintCa(lib: X509, dir: string, force: boolean, written: string[]): Promise<Authority> {
  const { BasicConstraintsExtension, KeyUsageFlags, KeyUsagesExtension, SubjectKeyIdentifierExtension, X509Certificate, X509CertificateGenerator } = lib;
  const { ca } = files(dir, 'x');
  const caKey = path.join(etcdPkiDir(dir), 'ca.key');
  if (!force && existsSync(ca) && existsSync(caKey)) {
    const key = await webcrypto.subtle.importKey('pkcs8', unpem(readFileSync(caKey, 'utf8')), ALGORITHM, false, ['sign']);
    return { cert: new X509Certificate(readFileSync(ca, 'utf8')), key: key as CryptoKey };
  }
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: 'CN=vipshift etcd CA',
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + CA_DAYS * DAY),
    signingAlgorithm: ALGORITHM,
    keys,
    extensions: [
      new BasicConstraintsExtension(true, 0, true),
      new KeyUsagesExtension(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign, true),
      await SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  writeFileSync(ca, cert.toString('pem') + '\n');
  writeSecret(caKey, pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)));
  written.push(ca, caKey);
  return { cert, key: keys.privateKey };
}

async function mintLeaf(lib: X509, authority: Authority, out: EtcdTlsFiles, subject: string, usages: ExtendedKeyUsage[], hosts: string[]): Promise<void> {
  const { AuthorityKeyIdentifierExtension, BasicConstraintsExtension, ExtendedKeyUsageExtension, KeyUsageFlags, KeyUsagesExtension, SubjectAlternativeNameExtension, SubjectKeyIdentifierExtension, X509CertificateGenerator } = lib;
  const keys = (await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify'])) as CryptoKeyPair;
  const now = Date.now();
  const cert = await X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${subject}`,
    issuer: authority.cert.subject,
    notBefore: new Date(now - DAY),
    notAfter: new Date(Math.min(now + LEAF_DAYS * DAY, authority.cert.notAfter.getTime())),
    signingAlgorithm: ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: authority.key,
    extensions: [
      new BasicConstraintsExtension(false, undefined, true),
      new KeyUsagesExtension(KeyUsageFlags.digitalSignature | KeyUsageFlags.keyEncipherment, true),
      new ExtendedKeyUsageExtension(usages, false),
      ...(hosts.length ? [new SubjectAlternativeNameExtension(hosts.map((h) => ({ type: isIP(h) ? ('ip' as const) : ('dns' as const), value: h })))] : []),
      await SubjectKeyIdentifierExtension.create(keys.publicKey),
      await AuthorityKeyIdentifierExtension.create(authority.cert),
    ],
  });
  writeFileSync(out.cert, cert.toString('pem') + '\n');
  writeSecret(out.key, pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)));
}

/**
 * Mints what is missing of the etcd cluster's TLS material in `<dir>/etcd/` (everything with
 * `force`); returns the files written. Throws on a bad name or address before writing anything.
 */
export async function createEtcdPki(dir: string, spec: { members: EtcdMemberSpec[]; clients: string[] }, force = false): Promise<string[]> {
  for (const name of [...spec.members.map((m) => m.name), ...spec.clients]) {
    if (!validIdentity(name)) throw new Error(`invalid name '${name}': lower-case letters, digits and '-', starting with a letter, at most 32`);
  }
  for (const m of spec.members) {
    if (m.hosts.length === 0) throw new Error(`etcd member '${m.name}': no address to put in its certificate`);
    for (const h of m.hosts) if (!isIP(h) && !/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/i.test(h)) throw new Error(`etcd member '${m.name}': '${h}' is neither an IP address nor a host name`);
  }
  mkdirSync(etcdPkiDir(dir), { recursive: true, mode: 0o700 });
  chmodSync(etcdPkiDir(dir), 0o700);
  const written: string[] = [];
  const lib = await x509();
  const authority = await loadOrMintCa(lib, dir, force, written);
  const fresh = written.length > 0;
  const leaf = async (out: EtcdTlsFiles, subject: string, usages: ExtendedKeyUsage[], hosts: string[]) => {
    if (!fresh && existsSync(out.cert) && existsSync(out.key)) return;
    await mintLeaf(lib, authority, out, subject, usages, hosts);
    written.push(out.cert, out.key);
  };
  const { serverAuth, clientAuth } = lib.ExtendedKeyUsage;
  for (const m of spec.members) await leaf(etcdMemberFiles(dir, m.name), m.name, [serverAuth, clientAuth], m.hosts);
  for (const c of spec.clients) await leaf(etcdClientFiles(dir, c), c, [clientAuth], []);
  return written;
}
