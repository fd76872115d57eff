/**
 * Authentication over real HTTP on loopback: every forged, stale, replayed or tampered request
 * is refused with 401/403, counted by reason, and its handler never runs.
 */
import { randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { z } from 'zod';
import { Authenticator, EMPTY_SHA256, HEADER, STREAMING, loadCredentials, sha256Hex, signRequest } from '../../src/api/auth.js';
import type { Credentials } from '../../src/api/auth.js';
import { ApiClient, ApiError } from '../../src/api/client.js';
import { FrameSigner } from '../../src/api/frames.js';
import { createApiServer } from '../../src/api/server.js';
import type { ApiServer, Route, RouteRoles } from '../../src/api/server.js';
import { makeCluster, rawRequest } from './api-helpers.js';

const cluster = makeCluster(['lb1', 'lb2', 'ctl', 'srv1']);
const other = makeCluster(['lb1', 'ctl']); // another cluster: same names, other keys
const ctl = cluster.creds('ctl');
const lb1 = cluster.creds('lb1');

let ran: string[] = [];
let received = 0;
const routes: Route[] = [
  { method: 'GET', path: '/v1/status', handler: () => (ran.push('status'), { ok: true }) },
  { method: 'POST', path: '/v1/vips/:name/prepare', body: z.object({ timeoutMs: z.number() }), handler: ({ params }) => (ran.push(`prepare ${params.name}`), { ok: true }) },
  { method: 'POST', path: '/v1/vips/:name/migrate', handler: () => (ran.push('migrate'), { ok: true }) },
  {
    method: 'POST',
    path: '/v1/entries',
    rawBody: true,
    handler: async ({ body }) => {
      ran.push('entries');
      for await (const chunk of body as Readable) received += (chunk as Buffer).length;
      return { received };
    },
  },
];

const everyone = ['admin', 'controller', 'appliance', 'keeper', 'monitor'] as const;
const roles: RouteRoles = {
  'GET /v1/status': everyone,
  'POST /v1/vips/:name/prepare': everyone,
  'POST /v1/vips/:name/migrate': ['controller'],
  'POST /v1/entries': everyone,
};

const registry = new Registry();
let server: ApiServer;

beforeAll(async () => {
  server = createApiServer({ name: 'agent', routes, roles, authenticator: new Authenticator(lb1), logger: pino({ level: 'silent' }), metrics: registry });
  await server.listen('127.0.0.1:0');
});
afterAll(async () => {
  await server.close();
  cluster.remove();
  other.remove();
});
beforeEach(() => {
  ran = [];
  received = 0;
});

async function refusals(reason: string): Promise<number> {
  const metric = (await registry.getSingleMetric('vipshift_api_requests_refused_total')!.get()).values;
  return metric.filter((v) => v.labels.reason === reason && v.labels.api === 'agent').reduce((a, v) => a + v.value, 0);
}

function headersFor(creds: Credentials, method: string, path: string, body: Buffer, opts: { audience?: string; now?: number } = {}) {
  return signRequest(creds, { method, path, audience: opts.audience ?? 'lb1', contentSha256: body.length ? sha256Hex(body) : EMPTY_SHA256 }, opts.now);
}

describe('clock skew', () => {
  it('is measured per member from its accepted requests', async () => {
    const path = '/v1/status';
    const ahead = headersFor(ctl, 'GET', path, Buffer.alloc(0), { now: Date.now() + 12_000 });
    expect((await rawRequest(server.url, 'GET', path, ahead)).status).toBe(200);
    const value = (await registry.getSingleMetric('vipshift_api_clock_skew_seconds')!.get()).values.find((v) => v.labels.peer === 'ctl')!.value;
    expect(value).toBeGreaterThan(11);
    expect(value).toBeLessThanOrEqual(12);
  });

  it('is seen by a client from the answers\' Date', async () => {
    const c = new ApiClient(server.url, ctl, { peer: 'lb1' });
    expect(c.clockSkewMs).toBeUndefined();
    await c.get('/v1/status');
    expect(Math.abs(c.clockSkewMs!)).toBeLessThan(1500);
    c.close();
  });
});

const GET = { method: 'GET', path: '/v1/status', body: Buffer.alloc(0) };
const POST = { method: 'POST', path: '/v1/vips/vip1/prepare', body: Buffer.from(JSON.stringify({ timeoutMs: 1000 })) };

describe.each([GET, POST])('$method $path', ({ method, path, body }) => {
  async function expectRefused(headers: Record<string, string>, status: number, reason: string, sent = body, sentPath = path) {
    const before = await refusals(reason);
    const answer = await rawRequest(server.url, method, sentPath, { ...headers, 'content-type': 'application/json' }, sent);
    expect(answer.status).toBe(status);
    expect(ran).toEqual([]);
    expect(await refusals(reason)).toBe(before + 1);
    return answer;
  }

  it('is served with valid credentials', async () => {
    const answer = await rawRequest(server.url, method, path, { ...headersFor(ctl, method, path, body), 'content-type': 'application/json' }, body);
    expect(answer.status).toBe(200);
    expect(ran.length).toBe(1);
  });

  it('is refused without credentials', async () => {
    await expectRefused({}, 401, 'missing_credentials');
  });

  it('is refused when signed with a key of another cluster', async () => {
    await expectRefused(headersFor(other.creds('ctl'), method, path, body), 401, 'bad_signature');
  });

  it('is refused from an identity the cluster does not know', async () => {
    const stranger = { ...other.creds('ctl'), identity: 'intruder' };
    await expectRefused(headersFor(stranger, method, path, body), 401, 'unknown_peer');
  });

  it('is refused when too old or too far in the future', async () => {
    await expectRefused(headersFor(ctl, method, path, body, { now: Date.now() - 31_000 }), 401, 'expired');
    await expectRefused(headersFor(ctl, method, path, body, { now: Date.now() + 31_000 }), 401, 'expired');
  });

  it('is refused when replayed', async () => {
    const headers = { ...headersFor(ctl, method, path, body), 'content-type': 'application/json' };
    expect((await rawRequest(server.url, method, path, headers, body)).status).toBe(200);
    ran = [];
    await expectRefused(headers, 401, 'replayed');
  });

  it('is refused after a restart when it was signed before (a replay into a process whose nonces are new)', async () => {
    const captured = { ...headersFor(ctl, method, path, body), 'content-type': 'application/json' };
    expect((await rawRequest(server.url, method, path, captured, body)).status).toBe(200);
    ran = [];
    // The same API started again: a new Authenticator, nothing remembered.
    const restarted = createApiServer({ name: 'agent', routes, roles, authenticator: new Authenticator(lb1, { notBefore: Date.now() + 1 }), logger: pino({ level: 'silent' }), metrics: registry });
    await restarted.listen('127.0.0.1:0');
    try {
      const before = await refusals('before_start');
      const answer = await rawRequest(restarted.url, method, path, captured, body);
      expect(answer.status).toBe(401);
      expect(JSON.parse(answer.body.toString()).error).toMatch(/before this process started/);
      expect(ran).toEqual([]);
      expect(await refusals('before_start')).toBe(before + 1);
      // A request signed after the restart is served.
      await new Promise((r) => setTimeout(r, 5));
      expect((await rawRequest(restarted.url, method, path, { ...headersFor(ctl, method, path, body), 'content-type': 'application/json' }, body)).status).toBe(200);
    } finally {
      await restarted.close();
    }
  });

  it('is refused when meant for another appliance', async () => {
    await expectRefused(headersFor(ctl, method, path, body, { audience: 'lb2' }), 401, 'wrong_audience');
  });

  it('is refused when its path or signature was changed', async () => {
    const headers = headersFor(ctl, method, path, body);
    await expectRefused(headers, 401, 'bad_signature', body, path.replace('vip1', 'vip2').replace('status', 'status?x=1'));
    const sig = Buffer.from(headers[HEADER.signature]!, 'base64');
    sig[5]! ^= 1;
    await expectRefused({ ...headersFor(ctl, method, path, body), [HEADER.signature]: sig.toString('base64') }, 401, 'bad_signature');
  });

  it('is refused when its body was changed', async () => {
    const tampered = Buffer.from(JSON.stringify({ timeoutMs: 9 }));
    await expectRefused(headersFor(ctl, method, path, body), 401, 'bad_digest', tampered);
  });
});

describe('authorisation and streams', () => {
  it('answers 403 to a member not allowed on the route', async () => {
    const lb2 = new ApiClient(server.url, cluster.creds('lb2'));
    const before = await refusals('forbidden');
    await expect(lb2.post('/v1/vips/vip1/migrate', {})).rejects.toMatchObject({ status: 403 });
    expect(ran).toEqual([]);
    expect(await refusals('forbidden')).toBe(before + 1);
    const fromCtl = new ApiClient(server.url, ctl);
    expect(await fromCtl.post('/v1/vips/vip1/migrate', {})).toEqual({ ok: true });
    lb2.close();
    fromCtl.close();
  });

  async function framed(creds: Credentials, path: string, data: Buffer[]): Promise<{ headers: Record<string, string>; frames: Buffer }> {
    const headers = signRequest(creds, { method: 'POST', path, audience: 'lb1', contentSha256: STREAMING });
    const signer = new FrameSigner(creds.privateKey, Buffer.from(headers[HEADER.signature]!, 'base64'));
    const out: Buffer[] = [];
    signer.on('data', (c: Buffer) => out.push(c));
    const done = new Promise((r) => signer.on('end', r));
    for (const d of data) signer.write(d);
    signer.end();
    await done;
    return { headers, frames: Buffer.concat(out) };
  }

  it('hands a streamed body to the handler only as far as its frames verify', async () => {
    const a = randomBytes(70_000); // more than one frame
    const ok = await framed(ctl, '/v1/entries', [a]);
    expect((await rawRequest(server.url, 'POST', '/v1/entries', ok.headers, ok.frames)).status).toBe(200);
    expect(received).toBe(a.length);

    received = 0;
    const tampered = await framed(ctl, '/v1/entries', [a]);
    tampered.frames[4 + 65_536 + 64 + 4 + 10]! ^= 0xff; // a byte of the second frame's data
    const answer = await rawRequest(server.url, 'POST', '/v1/entries', tampered.headers, tampered.frames);
    expect(answer.status).toBe(500);
    expect(JSON.parse(answer.body.toString()).error).toMatch(/bad frame signature/);
    // at most the first frame (the stream may fail before the handler read it), never a byte of the forged one
    expect(received).toBeLessThanOrEqual(65_536);

    received = 0;
    const cut = await framed(ctl, '/v1/entries', [a]);
    const truncated = await rawRequest(server.url, 'POST', '/v1/entries', cut.headers, cut.frames.subarray(0, cut.frames.length - 68));
    expect(JSON.parse(truncated.body.toString()).error).toMatch(/cut before its end frame/);
  });

  it('refuses a streamed body signed with another key before the handler runs', async () => {
    const forged = await framed(other.creds('ctl'), '/v1/entries', [randomBytes(1000)]);
    expect((await rawRequest(server.url, 'POST', '/v1/entries', forged.headers, forged.frames)).status).toBe(401);
    expect(ran).toEqual([]);
  });

  it('makes the client refuse answers not signed by the expected member', async () => {
    const impostor = createApiServer({ name: 'impostor', routes, roles, authenticator: new Authenticator(other.creds('lb1')), logger: pino({ level: 'silent' }), metrics: new Registry() });
    await impostor.listen('127.0.0.1:0');
    const c = new ApiClient(impostor.url, ctl, { peer: 'lb1' });
    const err = await c.get('/v1/status').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).message).toMatch(/bad response signature/);
    c.close();
    await impostor.close();

    const wrongPeer = new ApiClient(server.url, ctl, { peer: 'lb2' });
    await expect(wrongPeer.get('/v1/status')).rejects.toMatchObject({ status: 0 });
    expect(ran).toEqual([]);
    wrongPeer.close();
  });
});

describe('credentials', () => {
  it('are files only their owner can read, and load back', () => {
    for (const f of ['peers.json', 'lb1.key', 'ctl.key']) expect(statSync(join(cluster.dir, f)).mode & 0o777).toBe(0o600);
    expect(statSync(cluster.dir).mode & 0o777).toBe(0o700);
    const c = loadCredentials(cluster.dir, 'srv1');
    expect([...c.peers.keys()].sort()).toEqual(['ctl', 'lb1', 'lb2', 'srv1']);
    expect(() => loadCredentials(cluster.dir, 'lb9')).toThrow(/lb9\.key/);
  });
});
