/** The API server and client over real HTTP on loopback: routing, validation, errors, streams. */
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { z } from 'zod';
import { Authenticator, EMPTY_SHA256, ROLES, sha256Hex, signRequest } from '../../src/api/auth.js';
import { ApiClient, ApiError } from '../../src/api/client.js';
import { HttpError, createApiServer, reply, routeKey } from '../../src/api/server.js';
import type { ApiServer, Route, RouteRoles } from '../../src/api/server.js';
import { makeCluster, rawRequest } from './api-helpers.js';

const cluster = makeCluster(['lb1', 'ctl']);
const ctl = cluster.creds('ctl');
const lb1 = cluster.creds('lb1');
const FOUR_MB = randomBytes(4 * 1024 * 1024);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const prepareBody = z
  .object({
    timeoutMs: z.number().int().positive(),
    servers: z.array(z.object({ address: z.string().regex(/^\d+\.\d+\.\d+\.\d+$/), weight: z.number().int().min(1) }).strict()).optional(),
  })
  .strict();

const routes: Route[] = [
  { method: 'GET', path: '/v1/vips/:name', handler: ({ params, peer }) => ({ name: params.name, peer }) },
  { method: 'POST', path: '/v1/vips/:name/prepare', body: prepareBody, handler: ({ params, body }) => ({ prepared: params.name, body }) },
  { method: 'DELETE', path: '/v1/vips/:name', handler: () => undefined },
  { method: 'PUT', path: '/v1/vips/:name', handler: () => reply(202, { accepted: true }) },
  {
    method: 'GET',
    path: '/v1/list',
    query: z.object({ limit: z.coerce.number().int().max(100) }).strict(),
    handler: ({ query }) => ({ limit: (query as { limit: number }).limit }),
  },
  { method: 'POST', path: '/v1/conflict', handler: () => { throw new HttpError(409, 'vip1 is migrating', 'name'); } },
  { method: 'POST', path: '/v1/broken', handler: () => { throw new Error('disk on fire'); } },
  { method: 'GET', path: '/v1/entries', handler: (ctx) => ctx.stream(Readable.from(chunks(FOUR_MB, 10_000))) },
  {
    method: 'GET',
    path: '/v1/progress',
    handler: (ctx) =>
      ctx.stream(
        (async function* () {
          for (let i = 1; i <= 3; i++) {
            yield `${JSON.stringify({ moved: i })}\n`;
            await new Promise((r) => setTimeout(r, 20));
          }
        })(),
      ),
  },
  {
    method: 'POST',
    path: '/v1/entries',
    rawBody: true,
    handler: async ({ body }) => {
      const hash = createHash('sha256');
      let bytes = 0;
      for await (const chunk of body as Readable) {
        hash.update(chunk as Buffer);
        bytes += (chunk as Buffer).length;
      }
      return { bytes, sha256: hash.digest('hex') };
    },
  },
];

/** Every route open to every role: this file tests the HTTP layer, controller-auth the route tables. */
const openTo = (list: Route[]): RouteRoles => Object.fromEntries(list.map((r) => [routeKey(r), ROLES]));

function* chunks(buf: Buffer, size: number): Generator<Buffer> {
  for (let at = 0; at < buf.length; at += size) yield buf.subarray(at, at + size);
}

let server: ApiServer;
let client: ApiClient;

beforeAll(async () => {
  server = createApiServer({ name: 'agent', routes, roles: openTo(routes), authenticator: new Authenticator(lb1), logger: pino({ level: 'silent' }), metrics: new Registry() });
  await server.listen('127.0.0.1:0');
  client = new ApiClient(server.url, ctl);
});

afterAll(async () => {
  client.close();
  await server.close();
  cluster.remove();
});

async function failure(p: Promise<unknown>): Promise<ApiError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ApiError);
    return err as ApiError;
  }
  throw new Error('request succeeded');
}

/** A correctly signed request with an arbitrary body (the client only sends valid JSON). */
function signedRaw(method: string, path: string, body: Buffer) {
  const headers = signRequest(ctl, { method, path, audience: 'lb1', contentSha256: body.length ? sha256Hex(body) : EMPTY_SHA256 });
  return rawRequest(server.url, method, path, { ...headers, 'content-type': 'application/json' }, body);
}

describe('routing', () => {
  it('passes path parameters and the authenticated peer', async () => {
    expect(await client.get('/v1/vips/vip%201')).toEqual({ name: 'vip 1', peer: 'ctl' });
  });

  it('answers 204 for undefined and the status of reply()', async () => {
    expect(await client.delete('/v1/vips/vip1')).toBeUndefined();
    expect(await client.put('/v1/vips/vip1', {})).toEqual({ accepted: true });
  });

  it('answers 404 for an unknown path and 405 with Allow for a wrong method', async () => {
    const missing = await failure(client.get('/v1/nothing'));
    expect(missing.status).toBe(404);
    const wrong = await failure(client.post('/v1/vips/vip1/prepare/extra', {}));
    expect(wrong.status).toBe(404);
    const method = await failure(client.get('/v1/vips/vip1/prepare'));
    expect(method.status).toBe(405);
    expect(method.message).toContain('POST');
  });

  it('validates the body and names the wrong field', async () => {
    expect(await client.post('/v1/vips/vip1/prepare', { timeoutMs: 500 })).toEqual({ prepared: 'vip1', body: { timeoutMs: 500 } });
    const bad = await failure(client.post('/v1/vips/vip1/prepare', { timeoutMs: 500, servers: [{ address: '198.18.0.101', weight: 1 }, { address: 'srv2', weight: 1 }] }));
    expect(bad.status).toBe(400);
    expect(bad.field).toBe('servers.1.address');
    const missing = await failure(client.post('/v1/vips/vip1/prepare', {}));
    expect(missing.field).toBe('timeoutMs');
    // An unknown field is named itself, not the object that holds it.
    const unknown = await failure(client.post('/v1/vips/vip1/prepare', { timeoutMs: 500, servers: [{ address: '198.18.0.101', weight: 1, colour: 'red' }] }));
    expect([unknown.status, unknown.field, unknown.message]).toEqual([400, 'servers.0.colour', 'POST /v1/vips/vip1/prepare: unknown field']);
  });

  it('answers 400 for malformed JSON and 413 for a body over the limit', async () => {
    const malformed = await signedRaw('POST', '/v1/vips/vip1/prepare', Buffer.from('{"timeoutMs": 5'));
    expect(malformed.status).toBe(400);
    expect(JSON.parse(malformed.body.toString()).error).toMatch(/malformed JSON/);
    const big = await failure(client.post('/v1/vips/vip1/prepare', { timeoutMs: 1, pad: 'x'.repeat(2 * 1024 * 1024) }));
    expect(big.status).toBe(413);
  });

  it('validates the query', async () => {
    expect(await client.get('/v1/list?limit=7')).toEqual({ limit: 7 });
    const bad = await failure(client.get('/v1/list?limit=1000'));
    expect(bad.status).toBe(400);
    expect(bad.field).toBe('query.limit');
    const unknown = await failure(client.get('/v1/list?limit=7&colour=red'));
    expect([unknown.status, unknown.field]).toEqual([400, 'query.colour']);
  });

  it("turns a handler's HttpError into its status and any other throw into 500 without a stack", async () => {
    const conflict = await failure(client.post('/v1/conflict', {}));
    expect([conflict.status, conflict.field]).toEqual([409, 'name']);
    const raw = await signedRaw('POST', '/v1/broken', Buffer.alloc(0));
    expect(raw.status).toBe(500);
    const body = JSON.parse(raw.body.toString());
    expect(body.error).toBe('disk on fire');
    expect(raw.body.toString()).not.toMatch(/at .*\.ts:\d+/);
  });
});

describe('streams', () => {
  it('streams 4 MB of binary to the client', async () => {
    const stream = await client.stream('GET', '/v1/entries');
    const hash = createHash('sha256');
    let bytes = 0;
    for await (const chunk of stream) {
      hash.update(chunk as Buffer);
      bytes += (chunk as Buffer).length;
    }
    expect(bytes).toBe(FOUR_MB.length);
    expect(hash.digest('hex')).toBe(sha(FOUR_MB));
  });

  it('delivers lines of a slow stream as they are produced', async () => {
    const stream = await client.stream('GET', '/v1/progress');
    const seen: { at: number; text: string }[] = [];
    const start = Date.now();
    for await (const chunk of stream) seen.push({ at: Date.now() - start, text: (chunk as Buffer).toString() });
    expect(seen.map((s) => s.text).join('')).toBe('{"moved":1}\n{"moved":2}\n{"moved":3}\n');
    // the first line did not wait for the last one (3 × 20 ms)
    expect(seen.length).toBeGreaterThanOrEqual(2);
    expect(seen[0]!.at).toBeLessThan(seen[seen.length - 1]!.at);
  });

  it('streams 4 MB of binary to the server', async () => {
    const answer = await client.upload('POST', '/v1/entries', Readable.from(chunks(FOUR_MB, 3_000)));
    expect(answer).toEqual({ bytes: FOUR_MB.length, sha256: sha(FOUR_MB) });
  });

  it('refuses a JSON body on a streamed route and a stream on a JSON route', async () => {
    expect((await failure(client.post('/v1/entries', { a: 1 }))).status).toBe(400);
    expect((await failure(client.upload('POST', '/v1/vips/vip1/prepare', Readable.from([Buffer.from('{}')])))).status).toBe(400);
  });
});

describe('client', () => {
  it('times out and honours an AbortSignal', async () => {
    const slow = createApiServer({
      name: 'slow',
      routes: [{ method: 'GET', path: '/slow', handler: () => new Promise((r) => setTimeout(() => r({ late: true }), 2_000)) }],
      roles: { 'GET /slow': ROLES },
      authenticator: new Authenticator(lb1),
      logger: pino({ level: 'silent' }),
      metrics: new Registry(),
    });
    await slow.listen({ host: '127.0.0.1', port: 0 });
    const c = new ApiClient(slow.url, ctl, { peer: 'lb1', timeoutMs: 100 });
    try {
      const timedOut = await failure(c.get('/slow'));
      expect(timedOut.message).toMatch(/timed out after 100 ms/);
      const aborted = await failure(c.get('/slow', { signal: AbortSignal.abort(), timeoutMs: 5_000 }));
      expect(aborted.message).toMatch(/aborted/);
    } finally {
      c.close();
      await slow.close();
    }
  });
});
