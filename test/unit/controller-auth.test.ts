/**
 * Every route of every API (the appliance agent's, the controller's) refuses a request with no
 * credentials, a key from another cluster, an unknown peer, an expired timestamp, the wrong
 * audience, a tampered body, and a replay — before any handler runs: the object behind the
 * routes records every call, and none is made. A correctly signed request (the positive
 * control) does reach it, so a refusal is the signature's doing, not a missing route.
 * (The keeper's routes join this list when src/keeper lands.)
 */
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authenticator, sha256Hex, signRequest, type Credentials } from '../../src/api/auth.js';
import type { ApiClient } from '../../src/api/client.js';
import { createApiServer, type ApiServer, type Route } from '../../src/api/server.js';
import type { Controller } from '../../src/controller/controller.js';
import { controllerRoutes } from '../../src/controller/routes.js';
import type { Appliance } from '../../src/appliance/appliance.js';
import { agentRoutes } from '../../src/appliance/agent.js';
import { makeCluster, rawRequest } from './api-helpers.js';

const cluster = makeCluster(['lb1', 'ctl', 'admin']);
const impostors = makeCluster(['ctl', 'admin', 'mallory']); // same names, other keys: another cluster's CA
const logger = pino({ level: 'silent' });

/** An object whose every method call is recorded (and answers a harmless value). */
function recorder<T extends object>(calls: string[]): T {
  return new Proxy({} as T, {
    get: (_t, prop) => {
      if (prop === 'then') return undefined;
      return (...args: unknown[]) => {
        calls.push(`${String(prop)}(${args.map((a) => JSON.stringify(a)).join(', ')})`);
        return {};
      };
    },
  });
}

/** A body each route would accept, so the positive control gets past validation. */
const bodies: Record<string, unknown> = {
  'POST /v1/vips/:name/address': { action: 'release' },
  'POST /v1/vips/:name/import': { from: 'http://192.0.2.12:8441', peer: 'lb2' },
  'POST /v1/migrations': { vip: 'vip1', to: 'lb2' },
  'POST /v1/rebalance': { mode: 'manual' },
  'POST /v1/vips/:name/pin': { pinned: true },
  'POST /v1/appliances/:name/maintenance': { on: true },
};

interface Api {
  name: string;
  audience: string;
  caller: string;
  routes: Route[];
  calls: string[];
  server?: ApiServer;
  metrics: Registry;
}

function agentApi(): Api {
  const calls: string[] = [];
  const peerClient = (url: string, peer: string): ApiClient => {
    calls.push(`peerClient(${url}, ${peer})`);
    throw new Error('no peers in this test');
  };
  return { name: 'agent', audience: 'lb1', caller: 'ctl', calls, routes: agentRoutes(recorder<Appliance>(calls), peerClient, logger), metrics: new Registry() };
}
function controllerApi(): Api {
  const calls: string[] = [];
  return { name: 'controller', audience: 'ctl', caller: 'admin', calls, routes: controllerRoutes(recorder<Controller>(calls)), metrics: new Registry() };
}

const apis = [agentApi(), controllerApi()];

beforeAll(async () => {
  for (const api of apis) {
    api.server = createApiServer({ name: api.name, routes: api.routes, authenticator: new Authenticator(cluster.creds(api.audience)), logger, metrics: api.metrics });
    await api.server.listen({ host: '127.0.0.1', port: 0 });
  }
});
afterAll(async () => {
  for (const api of apis) await api.server?.close();
  cluster.remove();
  impostors.remove();
});

const concrete = (path: string) => path.replace(':name', path.includes('appliances') ? 'lb1' : 'vip1').replace(':id', 'm1');

function request(api: Api, route: Route, creds: Credentials | null, options: { now?: number; audience?: string; tamper?: boolean } = {}) {
  const path = concrete(route.path);
  const key = `${route.method} ${route.path}`;
  const body = route.method === 'GET' ? undefined : Buffer.from(JSON.stringify(bodies[key] ?? {}));
  const headers: Record<string, string> = body ? { 'content-type': 'application/json' } : {};
  if (creds) {
    Object.assign(headers, signRequest(creds, { method: route.method, path, audience: options.audience ?? api.audience, contentSha256: sha256Hex(body ?? Buffer.alloc(0)) }, options.now));
  }
  const sent = options.tamper && body ? Buffer.from(JSON.stringify({ ...(bodies[key] as object), evil: 1 })) : body;
  return { send: () => rawRequest(api.server!.url, route.method, path, headers, sent), headers, path, body };
}

const refusedCount = async (api: Api, reason: string) =>
  ((await api.metrics.getSingleMetric('vipshift_api_requests_refused_total')?.get())?.values ?? []).find((v) => v.labels.reason === reason)?.value ?? 0;

describe.each(apis)('the $name API refuses unauthenticated requests on every route', (api) => {
  it('lists its routes (the test covers them all)', () => {
    expect(api.routes.length).toBeGreaterThanOrEqual(api.name === 'agent' ? 9 : 10);
  });

  describe.each(api.routes.map((r) => [`${r.method} ${r.path}`, r] as const))('%s', (_label, route) => {
    const caller = () => cluster.creds(api.caller);
    const cases: [string, () => ReturnType<typeof request>, string][] = [
      ['no credentials', () => request(api, route, null), 'missing_credentials'],
      ['a key of another cluster under a known name', () => request(api, route, impostors.creds(api.caller)), 'bad_signature'],
      ['an unknown peer', () => request(api, route, impostors.creds('mallory')), 'unknown_peer'],
      ['an expired request (60 s old)', () => request(api, route, caller(), { now: Date.now() - 60_000 }), 'expired'],
      ['a request meant for another member', () => request(api, route, caller(), { audience: api.audience === 'ctl' ? 'lb1' : 'ctl' }), 'wrong_audience'],
    ];
    if (route.method !== 'GET') cases.push(['a tampered body', () => request(api, route, caller(), { tamper: true }), 'bad_digest']);

    it.each(cases)('refuses %s with 401, logs and counts it, and calls nothing', async (_what, make, reason) => {
      const before = api.calls.length;
      const counted = await refusedCount(api, reason);
      const answer = await make().send();
      expect(answer.status).toBe(401);
      expect(api.calls.length).toBe(before);
      expect(await refusedCount(api, reason)).toBe(counted + 1);
    });

    it('accepts the same request correctly signed once (positive control), and refuses its replay', async () => {
      const r = request(api, route, caller());
      const before = api.calls.length;
      const first = await r.send();
      expect([401, 403]).not.toContain(first.status);
      expect(api.calls.length).toBeGreaterThan(before);
      const afterFirst = api.calls.length;
      const replay = await r.send();
      expect(replay.status).toBe(401);
      expect(JSON.parse(replay.body.toString()).error).toMatch(/replay/i);
      expect(api.calls.length).toBe(afterFirst);
    });
  });
});
