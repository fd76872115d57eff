/** Shared set-up of the api-* tests: a cluster's credentials in a temporary directory, raw HTTP. */
import { request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClusterCredentials, loadCredentials } from '../../src/api/auth.js';
import type { Credentials, Role } from '../../src/api/auth.js';

/** The tests' members' roles by their names: lb* appliances, srv* keepers, ctl the controller. */
export function roleOf(id: string): Role {
  if (id.startsWith('lb')) return 'appliance';
  if (id.startsWith('srv')) return 'keeper';
  if (id.startsWith('ctl')) return 'controller';
  if (id === 'admin') return 'admin';
  return 'monitor';
}

export const members = (identities: string[]): Record<string, Role> => Object.fromEntries(identities.map((id) => [id, roleOf(id)]));

export function makeCluster(identities: string[]): { dir: string; creds: (id: string) => Credentials; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'vipshift-api-'));
  createClusterCredentials(join(dir, 'pki'), members(identities));
  return { dir: join(dir, 'pki'), creds: (id) => loadCredentials(join(dir, 'pki'), id), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/** One HTTP request with exactly these headers and body, no client logic. */
export function rawRequest(baseUrl: string, method: string, path: string, headers: Record<string, string>, body?: Buffer): Promise<RawAnswer> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, method, path, headers: { ...headers, connection: 'close', ...(body ? { 'content-length': String(body.length) } : {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}
