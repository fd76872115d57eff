/**
 * Every route of every API (the appliance agent's, the controller's) refuses a request with no
 * credentials, a key from another cluster, an unknown peer, an expired timestamp, the wrong
 * audience, a tampered body, and a replay — before any handler runs: the object behind the
 * routes records every call, and none is made. A correctly signed request (the positive
 * control) does reach it, so a refusal is the signature's doing, not a missing route.
 *
 * And the route tables: on every route of the agent, the controller and the keeper, a member
 * of every role the route does not admit gets 403 (logged, counted, nothing called), and a
 * member of every role it admits gets past the check.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Authenticator, ROLES, sha256Hex, signRequest, type Credentials, type Role } from '../../src/api/auth.js';
import type { ApiClient } from '../../src/api/client.js';
import { createApiServer, routeKey, type ApiServer, type Route, type RouteRoles } from '../../src/api/server.js';
import type { Controller } from '../../src/controller/controller.js';
import { CONTROLLER_ROLES, controllerRoutes } from '../../src/controller/routes.js';
import type { Appliance } from '../../src/appliance/appliance.js';
import { AGENT_ROLES, agentRoutes } from '../../src/appliance/agent.js';
import { eventsRoute } from '../../src/appliance/hooks.js';
import { parseKeeperConfig } from '../../src/config/keeper.js';
import { KEEPER_ROLES, Keeper } from '../../src/keeper/keeper.js';
import { EventBus } from '../../src/log/events.js';
import { metricsRoute } from '../../src/metrics/metrics.js';
import { makeCluster, rawRequest } from './api-helpers.js';

/** One member of each role (and a second appliance and keeper: an API's owner does not call itself). */
const cluster = makeCluster(['lb1', 'lb2', 'ctl', 'ctl2', 'admin', 'srv1', 'srv2', 'monitor']);
const memberOf: Record<Role, string[]> = { admin: ['admin'], controller: ['ctl', 'ctl2'], appliance: ['lb2', 'lb1'], keeper: ['srv2', 'srv1'], monitor: ['monitor'] };
const keeperDir = mkdtempSync(join(tmpdir(), 'vipshift-roles-'));
const impostors = makeCluster(['ctl', 'admin', 'mallory']); // same names, other keys: another cluster's CA
const logger = pino({ level: 'silent' });

/** An object whose every method call is recorded (and answers a harmless value, or the one given). */
function recorder<T extends object>(calls: string[], answers: Record<string, unknown> = {}): T {
  return new Proxy({} as T, {
    get: (_t, prop) => {
      if (prop === 'then') return undefined;
      return (...args: unknown[]) => {
        calls.push(`${String(prop)}(${args.map((a) => JSON.stringify(a)).join(', ')})`);
        return answers[String(prop)] ?? {};
      };
    },
  });
}

/** A body each route would accept, so the positive control gets past validation. */
const bodies: Record<string, unknown> = {
  'POST /v1/vips/:name/address': { action: 'release' },
  'POST /v1/vips/:name/import': { from: 'lb2' },
  'POST /v1/vips/:name/precopy': { from: 'lb2', migration: 'm1' },
  'POST /v1/vips/:name/precopy/snapshot': { migration: 'm1' },
  'POST /v1/vips/:name/precopy/changes': { migration: 'm1' },
  'POST /v1/migrations': { vip: 'vip1', to: 'lb2' },
  'POST /v1/rebalance': { mode: 'manual' },
  'POST /v1/vips/:name/pin': { pinned: true },
  'POST /v1/appliances/:name/maintenance': { on: true },
  'POST /v1/vips/:name/backends': { action: 'drain', address: '198.18.0.101' },
};

interface Api {
  name: string;
  audience: string;
  routes: Route[];
  roles: RouteRoles;
  calls: string[];
  server?: ApiServer;
  metrics: Registry;
}

/** A caller the route admits (its first role's member, never the API's owner itself). */
function callerOf(api: Api, route: Route): string {
  return memberOf[api.roles[routeKey(route)]![0]!].find((m) => m !== api.audience)!;
}

/** A route whose handler only records that it ran (for routes made elsewhere: the takeover of failover.ts). */
const recorded = (calls: string[], method: Route['method'], path: string): Route => ({ method, path, handler: () => (calls.push(`${method} ${path}`), {}) });
/** The route, its handler's runs recorded. */
const watched = (calls: string[], route: Route): Route => ({ ...route, handler: (ctx) => (calls.push(routeKey(route)), route.handler(ctx)) });

function agentApi(): Api {
  const calls: string[] = [];
  const peerClient = (name: string): ApiClient | undefined => {
    calls.push(`peerClient(${name})`);
    return undefined;
  };
  const routes = [
    ...agentRoutes(recorder<Appliance>(calls, { trackEntries: Buffer.alloc(0), entryChanges: { records: Buffer.alloc(0), upserts: 0, ended: 0 } }), { peerClient, logger }),
    recorded(calls, 'POST', '/v1/vips/:name/takeover'),
    watched(calls, eventsRoute(new EventBus('lb1'))),
    watched(calls, metricsRoute(new Registry())),
  ];
  return { name: 'agent', audience: 'lb1', calls, routes, roles: AGENT_ROLES, metrics: new Registry() };
}
function controllerApi(): Api {
  const calls: string[] = [];
  return { name: 'controller', audience: 'ctl', calls, routes: [...controllerRoutes(recorder<Controller>(calls)), watched(calls, metricsRoute(new Registry()))], roles: CONTROLLER_ROLES, metrics: new Registry() };
}

const apis = [agentApi(), controllerApi()];
/** The keeper serves itself (its routes are its own): the role matrix covers it too. */
let keeper: Keeper;
const keeperApi: Api = { name: 'keeper', audience: 'srv1', calls: [], routes: [], roles: KEEPER_ROLES, metrics: new Registry() };

beforeAll(async () => {
  for (const api of apis) {
    api.server = createApiServer({ name: api.name, routes: api.routes, roles: api.roles, authenticator: new Authenticator(cluster.creds(api.audience)), logger, metrics: api.metrics });
    await api.server.listen({ host: '127.0.0.1', port: 0 });
  }
  const config = parseKeeperConfig(`keeper: srv1\napi: { listen: "127.0.0.1:0" }\ndatabase: ${join(keeperDir, 'copies.sqlite')}\naddresses: [198.18.0.101]\n`, 'srv1.yaml');
  keeper = await Keeper.start(config, { credentials: cluster.creds('srv1'), logger, metrics: keeperApi.metrics });
  keeperApi.server = { url: keeper.url } as ApiServer;
});
afterAll(async () => {
  for (const api of apis) await api.server?.close();
  await keeper?.close();
  cluster.remove();
  impostors.remove();
  rmSync(keeperDir, { recursive: true, force: true });
});

const concrete = (path: string) => path.replace(':name', path.includes('appliances') ? 'lb1' : 'vip1').replace(':id', 'm1').replace(':vip', 'vip1');

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
    const caller = () => cluster.creds(callerOf(api, route));
    const cases: [string, () => ReturnType<typeof request>, string][] = [
      ['no credentials', () => request(api, route, null), 'missing_credentials'],
      ['a key of another cluster under a known name', () => request(api, route, impostors.creds(callerOf(api, route) === 'ctl' ? 'ctl' : 'admin')), 'bad_signature'],
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

const forbiddenCount = async (api: Api, route: Route, role: Role) =>
  ((await api.metrics.getSingleMetric('vipshift_api_requests_forbidden_total')?.get())?.values ?? []).find(
    (v) => v.labels.route === route.path && v.labels.method === route.method && v.labels.role === role,
  )?.value ?? 0;

/** Every (route, role) of an API's table: [label, route, role, admitted]. */
function matrix(api: Api, routes: { method: Route['method']; path: string }[]): [string, Route, Role, boolean][] {
  return routes.flatMap((r) =>
    ROLES.map((role): [string, Route, Role, boolean] => [`${r.method} ${r.path} as ${role}`, r as Route, role, api.roles[routeKey(r)]!.includes(role)]),
  );
}

/** The keeper's routes as its table declares them (the server checked the table against its routes when it started). */
const keeperRoutes = Object.keys(KEEPER_ROLES).map((k) => {
  const [method, path] = k.split(' ') as [Route['method'], string];
  return { method, path };
});

describe.each([...apis.map((api) => [api.name, api, api.routes] as const), ['keeper', keeperApi, keeperRoutes] as const])('the %s API\'s route table', (_name, api, routes) => {
  it('has a line for every route and no other (the server refuses to start otherwise)', () => {
    expect(Object.keys(api.roles).sort()).toEqual(routes.map(routeKey).sort());
  });

  it.each(matrix(api, routes as Route[]))('%s', async (_label, route, role, admitted) => {
    const member = memberOf[role].find((m) => m !== api.audience)!;
    const before = api.calls.length;
    const counted = await forbiddenCount(api, route, role);
    const answer = await request(api, route, cluster.creds(member)).send();
    if (admitted) {
      expect([401, 403]).not.toContain(answer.status);
    } else {
      expect(answer.status).toBe(403);
      expect(JSON.parse(answer.body.toString()).error).toMatch(new RegExp(`role ${role}\\) may not call`));
      expect(api.calls.length).toBe(before);
      expect(await forbiddenCount(api, route, role)).toBe(counted + 1);
    }
  });
});

describe('the route tables say what the issue asks', () => {
  it('controller admin routes: admin only; agent migration steps: controller only; copies: appliances only', () => {
    for (const [key, roles] of Object.entries(CONTROLLER_ROLES)) if (key.startsWith('POST')) expect(roles).toEqual(['admin']);
    for (const step of ['prepare', 'address', 'import', 'delete-entries', 'forget', 'activate', 'abort']) expect(AGENT_ROLES[`POST /v1/vips/:name/${step}`]).toEqual(['controller']);
    expect(KEEPER_ROLES['POST /v1/copies']).toEqual(['appliance']);
    for (const table of [AGENT_ROLES, CONTROLLER_ROLES, KEEPER_ROLES]) for (const [key, roles] of Object.entries(table)) if (!key.startsWith('GET')) expect(roles).not.toContain('monitor');
  });
});
