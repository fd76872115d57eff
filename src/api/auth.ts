/**
 * Authentication of every vipshift API: requests and responses signed with Ed25519 keys,
 * one key pair per cluster member (appliance, controller, keeper, operator).
 *
 * Why signed requests and not mutual TLS: Node can sign and verify Ed25519 itself, while
 * minting X.509 certificates needs openssl on every box; a signature survives in a log line
 * with the peer's name; and streams need no special case because a streamed body is cut into
 * frames that are each signed (see frames.ts). Why Ed25519 and not HMAC with a cluster key:
 * with a shared secret every member could forge requests from every other one (a keeper could
 * pose as the controller and move a VIP); with key pairs a verifier only holds public keys.
 *
 * A request carries (headers, all lower case):
 *   x-vipshift-key-id       the sender's identity (its key id)            e.g. ctl
 *   x-vipshift-audience     the identity of the API it is meant for      e.g. lb1
 *   x-vipshift-timestamp    milliseconds since the epoch; ±30 s accepted
 *   x-vipshift-nonce        16 random bytes, base64url; remembered for the window: replay → 401
 *   x-vipshift-content-sha256  hex SHA-256 of the body, or STREAMING-SIGNED-FRAMES
 *   x-vipshift-signature    base64 Ed25519 over the lines of requestSigningString()
 * The audience stops a request captured on its way to lb2 from being replayed to lb1 (each
 * appliance has its own nonce cache). A response is signed the same way by the server, bound to
 * the request's nonce, so a client also knows whom it talked to.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, timingSafeEqual, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IncomingHttpHeaders } from 'node:http';

export const HEADER = {
  keyId: 'x-vipshift-key-id',
  audience: 'x-vipshift-audience',
  timestamp: 'x-vipshift-timestamp',
  nonce: 'x-vipshift-nonce',
  contentSha256: 'x-vipshift-content-sha256',
  signature: 'x-vipshift-signature',
} as const;

/** Value of x-vipshift-content-sha256 for a body sent as signed frames. */
export const STREAMING = 'STREAMING-SIGNED-FRAMES';
export const EMPTY_SHA256 = createHash('sha256').digest('hex');

/**
 * Where a server says who it is, for a client not told whom it talks to. Unauthenticated: a lie
 * only makes the client sign its requests for someone else, whom the real server refuses, and
 * the client still checks that the answers are signed by that member.
 */
export const IDENTITY_PATH = '/.well-known/vipshift-identity';

/** The trust list of the cluster: every member's public key, by identity. */
export const PEERS_FILE = 'peers.json';
/** Where a box keeps its cluster credentials (the firmware imports them there from the configuration partition). */
export const DEFAULT_CREDENTIALS_DIR = '/var/lib/vipshift/cluster';
export const keyFile = (identity: string) => `${identity}.key`;
/** A member's identity: its key id, its name in every configuration file, its audience. */
const IDENTITY = /^[a-z][a-z0-9-]{0,31}$/;
export const IDENTITY_RULE = "lower-case letters, digits and '-', starting with a letter, at most 32";

/**
 * What a member is to the others: every route of every API admits some roles only (the route
 * tables of docs/api.md). `monitor` reads (status, metrics, events) and changes nothing.
 */
export const ROLES = ['admin', 'controller', 'appliance', 'keeper', 'monitor'] as const;
export type Role = (typeof ROLES)[number];

export interface Credentials {
  /** Who we are: our key id, and the audience other members address us by. */
  readonly identity: string;
  readonly privateKey: KeyObject;
  /** Public keys of every cluster member we accept, ourselves included. */
  readonly peers: ReadonlyMap<string, KeyObject>;
  /** The role of every member of `peers`. */
  readonly roles: ReadonlyMap<string, Role>;
}

export type RefusalReason =
  | 'missing_credentials'
  | 'malformed_credentials'
  | 'expired'
  | 'before_start'
  | 'unknown_peer'
  | 'bad_signature'
  | 'wrong_audience'
  | 'replayed'
  | 'nonce_cache_full'
  | 'bad_digest'
  | 'forbidden';

export function sha256Hex(data: Buffer | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Constant-time equality of two strings (length is not secret). */
export function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export function validIdentity(name: string): boolean {
  return IDENTITY.test(name);
}

// ---------------------------------------------------------------------------------------------
// Credentials on disk (written by `vipshift pki init`)

/** peers.json, version 2: every member's role and public key. */
interface PeersFile {
  version: 2;
  peers: Record<string, { role: Role; publicKey: string }>; // identity → role, SPKI PEM
}

export const isRole = (role: unknown): role is Role => typeof role === 'string' && (ROLES as readonly string[]).includes(role);

/**
 * Creates the credentials of a cluster in dir: one private key per member (`<id>.key`,
 * PKCS#8 PEM) and the trust list `peers.json` with every member's role; all files 0600, dir
 * 0700. Existing files are kept unless `force` (a new key would lock the old holder out).
 */
export function createClusterCredentials(dir: string, members: Readonly<Record<string, Role>>, force = false): string[] {
  const identities = Object.keys(members);
  for (const id of identities) {
    if (!validIdentity(id)) throw new Error(`invalid identity '${id}': ${IDENTITY_RULE}`);
    if (!isRole(members[id])) throw new Error(`${id}: role '${String(members[id])}' is not one of ${ROLES.join(', ')}`);
  }
  if (identities.length === 0) throw new Error('no identities');
  const peersPath = join(dir, PEERS_FILE);
  if (!force && existsSync(peersPath)) throw new Error(`${peersPath} exists: the cluster already has credentials (use --force to replace them)`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const peers: PeersFile = { version: 2, peers: {} };
  const written: string[] = [];
  for (const id of identities) {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const path = join(dir, keyFile(id));
    writeFileSync(path, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
    chmodSync(path, 0o600);
    peers.peers[id] = { role: members[id]!, publicKey: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
    written.push(path);
  }
  writeFileSync(peersPath, `${JSON.stringify(peers, null, 2)}\n`, { mode: 0o600 });
  chmodSync(peersPath, 0o600);
  written.push(peersPath);
  return written;
}

/** Loads `identity`'s private key and the cluster's trust list from dir. */
export function loadCredentials(dir: string, identity: string): Credentials {
  const peersPath = join(dir, PEERS_FILE);
  let parsed: PeersFile;
  try {
    parsed = JSON.parse(readFileSync(peersPath, 'utf8')) as PeersFile;
  } catch (err) {
    throw new Error(`${peersPath}: ${(err as Error).message}`);
  }
  if ((parsed as { version?: unknown })?.version === 1) {
    throw new Error(`${peersPath}: version 1 gives no member a role; write version 2 ({ "peers": { "lb1": { "role": "appliance", "publicKey": "..." } } }, roles ${ROLES.join(', ')}) or create the cluster again with vipshift pki init`);
  }
  if (parsed?.version !== 2 || typeof parsed.peers !== 'object' || parsed.peers === null) {
    throw new Error(`${peersPath}: not a vipshift trust list (version 2 with a peers object)`);
  }
  const peers = new Map<string, KeyObject>();
  const roles = new Map<string, Role>();
  for (const [id, entry] of Object.entries(parsed.peers)) {
    if (!validIdentity(id)) throw new Error(`${peersPath}: peers.${id}: invalid identity`);
    if (!isRole(entry?.role)) throw new Error(`${peersPath}: peers.${id}.role: expected one of ${ROLES.join(', ')}`);
    roles.set(id, entry.role);
    try {
      const key = createPublicKey(entry.publicKey);
      if (key.asymmetricKeyType !== 'ed25519') throw new Error(`not an Ed25519 key (${key.asymmetricKeyType})`);
      peers.set(id, key);
    } catch (err) {
      throw new Error(`${peersPath}: peers.${id}.publicKey: ${(err as Error).message}`);
    }
  }
  const keyPath = join(dir, keyFile(identity));
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(readFileSync(keyPath));
  } catch (err) {
    throw new Error(`${keyPath}: ${(err as Error).message}`);
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error(`${keyPath}: not an Ed25519 key`);
  const own = peers.get(identity);
  if (!own) throw new Error(`${peersPath}: has no public key for '${identity}'`);
  if (!createPublicKey(privateKey).equals(own)) throw new Error(`${keyPath}: does not match the public key of '${identity}' in ${peersPath}`);
  return { identity, privateKey, peers, roles };
}

// ---------------------------------------------------------------------------------------------
// Signing

export interface RequestSigningInput {
  method: string;
  /** The request target exactly as sent: path and query string. */
  path: string;
  keyId: string;
  audience: string;
  timestamp: string;
  nonce: string;
  contentSha256: string;
}

export function requestSigningString(r: RequestSigningInput): string {
  return ['vipshift-request-v1', r.method.toUpperCase(), r.path, r.keyId, r.audience, r.timestamp, r.nonce, r.contentSha256].join('\n');
}

export interface ResponseSigningInput {
  status: number;
  keyId: string;
  /** The identity of the client that asked (the request's key id). */
  audience: string;
  /** The request's nonce: binds this response to that request. */
  requestNonce: string;
  contentSha256: string;
}

export function responseSigningString(r: ResponseSigningInput): string {
  return ['vipshift-response-v1', String(r.status), r.keyId, r.audience, r.requestNonce, r.contentSha256].join('\n');
}

/** Headers that authenticate a request from `credentials` to `audience`. */
export function signRequest(
  credentials: Credentials,
  r: { method: string; path: string; audience: string; contentSha256: string },
  now = Date.now(),
): Record<string, string> {
  const input: RequestSigningInput = {
    ...r,
    method: r.method.toUpperCase(),
    keyId: credentials.identity,
    timestamp: String(now),
    nonce: randomBytes(16).toString('base64url'),
  };
  const signature = sign(null, Buffer.from(requestSigningString(input)), credentials.privateKey).toString('base64');
  return {
    [HEADER.keyId]: input.keyId,
    [HEADER.audience]: input.audience,
    [HEADER.timestamp]: input.timestamp,
    [HEADER.nonce]: input.nonce,
    [HEADER.contentSha256]: input.contentSha256,
    [HEADER.signature]: signature,
  };
}

export function signResponse(credentials: Credentials, r: Omit<ResponseSigningInput, 'keyId'>): Record<string, string> {
  const input = { ...r, keyId: credentials.identity };
  const signature = sign(null, Buffer.from(responseSigningString(input)), credentials.privateKey).toString('base64');
  return {
    [HEADER.keyId]: input.keyId,
    [HEADER.audience]: input.audience,
    [HEADER.nonce]: input.requestNonce,
    [HEADER.contentSha256]: input.contentSha256,
    [HEADER.signature]: signature,
  };
}

function header(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return typeof v === 'string' ? v : undefined;
}

const SIGNATURE_B64 = /^[A-Za-z0-9+/]{86}==$/; // 64 bytes
const NONCE_B64URL = /^[A-Za-z0-9_-]{16,64}$/;
const DIGEST = /^[0-9a-f]{64}$/;

function verifySignature(key: KeyObject, text: string, signatureB64: string): boolean {
  return verify(null, Buffer.from(text), key, Buffer.from(signatureB64, 'base64'));
}

/**
 * Checks a response's headers: signed by a cluster member (the expected one if given), for us,
 * for the request with this nonce. Returns the signer's identity.
 */
export function verifyResponse(
  credentials: Credentials,
  r: { status: number; headers: IncomingHttpHeaders; requestNonce: string; expectedPeer?: string },
): { ok: true; peer: string; contentSha256: string; signature: string } | { ok: false; message: string } {
  const keyId = header(r.headers, HEADER.keyId);
  const signature = header(r.headers, HEADER.signature);
  const contentSha256 = header(r.headers, HEADER.contentSha256);
  if (!keyId || !signature || !contentSha256) return { ok: false, message: 'response is not signed' };
  const key = credentials.peers.get(keyId);
  if (!key) return { ok: false, message: `response signed by unknown peer '${keyId}'` };
  if (r.expectedPeer !== undefined && keyId !== r.expectedPeer) {
    return { ok: false, message: `response signed by '${keyId}', expected '${r.expectedPeer}'` };
  }
  if (!SIGNATURE_B64.test(signature)) return { ok: false, message: 'malformed response signature' };
  const text = responseSigningString({ status: r.status, keyId, audience: credentials.identity, requestNonce: r.requestNonce, contentSha256 });
  if (!verifySignature(key, text, signature)) return { ok: false, message: `bad response signature from '${keyId}'` };
  return { ok: true, peer: keyId, contentSha256, signature };
}

// ---------------------------------------------------------------------------------------------
// Verifying requests

export interface AuthenticatorOptions {
  /** Accepted clock difference, both ways. Default 30 s. */
  windowMs?: number;
  /**
   * Requests signed before this time (ms since the epoch) are refused: the nonces of an earlier
   * process are gone, so a request captured before a restart must not be replayed into it.
   * Default: when the Authenticator was made (the process's start, for an API).
   */
  notBefore?: number;
  /** Nonces remembered at most (requests beyond are refused, not let through). Default 200,000. */
  maxNonces?: number;
  now?: () => number;
}

export type Verdict =
  | { ok: true; peer: string; role: Role; nonce: string; contentSha256: string; signature: string; skewMs: number }
  | { ok: false; status: 401 | 403 | 503; reason: RefusalReason; message: string; peer?: string };

/** Verifies requests addressed to `credentials.identity` and remembers their nonces. */
export class Authenticator {
  readonly identity: string;
  private readonly windowMs: number;
  private readonly maxNonces: number;
  private readonly now: () => number;
  readonly notBefore: number;
  /** "keyId nonce" → time (ms) after which the request's timestamp is out of the window. */
  private readonly nonces = new Map<string, number>();

  constructor(
    readonly credentials: Credentials,
    options: AuthenticatorOptions = {},
  ) {
    this.identity = credentials.identity;
    this.windowMs = options.windowMs ?? 30_000;
    this.maxNonces = options.maxNonces ?? 200_000;
    this.now = options.now ?? Date.now;
    this.notBefore = options.notBefore ?? this.now();
  }

  /** Checks a request's credentials (not yet its body: see checkDigest). */
  verify(method: string, path: string, headers: IncomingHttpHeaders): Verdict {
    const keyId = header(headers, HEADER.keyId);
    const audience = header(headers, HEADER.audience);
    const timestamp = header(headers, HEADER.timestamp);
    const nonce = header(headers, HEADER.nonce);
    const contentSha256 = header(headers, HEADER.contentSha256);
    const signature = header(headers, HEADER.signature);
    if (!keyId && !signature) return refuse(401, 'missing_credentials', 'request is not signed');
    if (!keyId || !audience || !timestamp || !nonce || !contentSha256 || !signature) {
      return refuse(401, 'malformed_credentials', 'incomplete vipshift signature headers', keyId);
    }
    if (!/^\d{1,16}$/.test(timestamp) || !NONCE_B64URL.test(nonce) || !SIGNATURE_B64.test(signature) || !(DIGEST.test(contentSha256) || contentSha256 === STREAMING)) {
      return refuse(401, 'malformed_credentials', 'malformed vipshift signature headers', keyId);
    }
    const now = this.now();
    const ts = Number(timestamp);
    if (Math.abs(now - ts) > this.windowMs) {
      return refuse(401, 'expired', `request timestamp is ${Math.round((now - ts) / 1000)} s off (window ±${this.windowMs / 1000} s)`, keyId);
    }
    const key = this.credentials.peers.get(keyId);
    const role = this.credentials.roles.get(keyId);
    if (!key || !role) return refuse(401, 'unknown_peer', `unknown peer '${keyId}'`, keyId);
    const text = requestSigningString({ method, path, keyId, audience, timestamp, nonce, contentSha256 });
    if (!verifySignature(key, text, signature)) return refuse(401, 'bad_signature', 'bad signature', keyId);
    if (audience !== this.identity) return refuse(401, 'wrong_audience', `request is meant for '${audience}', this is '${this.identity}'`, keyId);
    if (ts < this.notBefore) return refuse(401, 'before_start', `request signed ${Math.round(this.notBefore - ts)} ms before this process started (replay of an earlier one's request?)`, keyId);
    // Only a verified request may take a place in the cache, or anyone could fill it.
    const slot = `${keyId} ${nonce}`;
    this.expireNonces(now);
    if (this.nonces.has(slot)) return refuse(401, 'replayed', 'replayed request (nonce already seen)', keyId);
    if (this.nonces.size >= this.maxNonces) return refuse(503, 'nonce_cache_full', 'too many requests in the replay window', keyId);
    this.nonces.set(slot, ts + this.windowMs);
    return { ok: true, peer: keyId, role, nonce, contentSha256, signature, skewMs: ts - now };
  }

  /** Constant-time check of a buffered body against the signed digest. */
  static checkDigest(signed: string, body: Buffer): boolean {
    return signed !== STREAMING && safeEqual(signed, sha256Hex(body));
  }

  signResponse(r: Omit<ResponseSigningInput, 'keyId'>): Record<string, string> {
    return signResponse(this.credentials, r);
  }

  /** Nonces are kept until their request's timestamp leaves the window: then the timestamp check refuses it anyway. */
  private expireNonces(now: number): void {
    // Insertion order is nearly time order; stop at the first live one (later ones may linger a little: harmless).
    for (const [slot, expiry] of this.nonces) {
      if (expiry >= now) break;
      this.nonces.delete(slot);
    }
  }
}

function refuse(status: 401 | 403 | 503, reason: RefusalReason, message: string, peer?: string): Verdict {
  return peer === undefined ? { ok: false, status, reason, message } : { ok: false, status, reason, message, peer };
}
