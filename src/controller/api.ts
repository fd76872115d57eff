/**
 * The controller's API, declared once as the agent's is (src/appliance/agent-api.ts): each
 * route's path, body, query and answer as zod schemas. routes.ts serves these endpoints; the
 * operator's tools (the CLI, the console) call them through src/api/contract.ts, which parses
 * every answer by its schema, so no answer is taken on trust and no caller casts one.
 */
import { z } from 'zod';
import { endpoint, rolesOf } from '../api/contract.js';
import type { RouteRoles } from '../api/server.js';
import { PHASES, STEPS, type MigrationProgress } from '../migration/migration.js';
import { accessPageSchema, applianceStatusSchema, backendChangeSchema, pageQuery } from '../appliance/agent-api.js';
import { METRICS_PATH } from '../metrics/metrics.js';

const count = z.number().int().min(0);
const loadChange = z.object({ before: z.number(), after: z.number() });

/** A migration as the controller reports it (migration.ts MigrationProgress). */
export const migrationProgressSchema: z.ZodType<MigrationProgress> = z.object({
  id: z.string(),
  vip: z.string(),
  from: z.string(),
  to: z.string(),
  state: z.enum(['running', 'done', 'aborted']),
  step: z.enum(PHASES),
  startedAt: z.string(),
  steps: z.partialRecord(z.enum(STEPS.map((s) => `${s}_ms` as const) as [`${(typeof STEPS)[number]}_ms`]), z.number()),
  totalMs: z.number().optional(),
  entries: z.object({ moved: count, total: count }),
  released: count,
  error: z.string().optional(),
  recoveryFailed: z.boolean().optional(),
  cleanupMs: z.number().optional(),
  precopy: z.object({ ms: z.number(), entries: count, rounds: z.array(count), error: z.string().optional() }).optional(),
  difference: z.object({ created: count, ended: count }).optional(),
  fallback: z.string().optional(),
});

const identity = z.object({ name: z.string(), api: z.string() });
/** Who leads, who follows, and the health of the store's cluster. */
export const controlPlaneSchema = z.object({
  self: z.string(),
  store: z.enum(['sqlite', 'etcd']),
  leader: identity.nullable(),
  leading: z.boolean(),
  epoch: z.number().int().nullable(),
  /** When `leader`, `leading` and `epoch` were read (ms since the Unix epoch): leadership is a statement about a moment. */
  asOf: z.number(),
  elections: count,
  controllers: z.array(identity),
  etcd: z.array(z.object({ endpoint: z.string(), healthy: z.boolean(), leader: z.boolean().optional(), version: z.string().optional(), error: z.string().optional() })).optional(),
});

const rebalanceMode = z.enum(['auto', 'manual']);
const traffic = z.object({ packetsPerSecond: z.number(), bytesPerSecond: z.number(), connections: z.number(), newConnectionsPerSecond: z.number() });

/** The site: every VIP with its owner, every appliance's own status, the migrations running. */
export const siteStatusSchema = z.object({
  vips: z.array(
    z.object({
      name: z.string(),
      owner: z.string(),
      mode: z.string(),
      entries: count,
      pinned: z.boolean(),
      lastMovedAt: z.string().nullable(),
      traffic: traffic.nullable(),
      load: z.number().nullable(),
    }),
  ),
  appliances: z.array(
    applianceStatusSchema.extend({ name: z.string(), reachable: z.boolean(), up: z.boolean(), maintenance: z.boolean(), capacity: z.number(), error: z.string().optional() }),
  ),
  migrations: z.array(migrationProgressSchema),
  rebalance: rebalanceMode,
  controllers: controlPlaneSchema.optional(),
});
export type SiteStatusView = z.infer<typeof siteStatusSchema>;

/** The plan and what it was made from (the parts the operator's tools show). */
export const planReportSchema = z.object({
  algorithm: z.string(),
  moves: z.array(z.object({ vip: z.string(), from: z.string(), to: z.string(), load: z.number(), reason: z.enum(['drain', 'rebalance']), loads: z.record(z.string(), loadChange), why: z.string() })),
  loads: z.record(z.string(), loadChange),
  imbalance: loadChange,
  waiting: z.array(z.object({ vip: z.string(), reason: z.string() })),
  notes: z.array(z.string()),
  mode: rebalanceMode,
  at: z.string(),
  holdingBack: z.string().optional(),
  input: z.looseObject({
    appliances: z.array(z.looseObject({ name: z.string(), capacity: z.number(), up: z.boolean(), maintenance: z.boolean() })),
    settings: z.looseObject({ threshold: z.number() }),
  }),
});
export type PlanReportView = z.infer<typeof planReportSchema>;

/** One appliance's answer to a change sent to every appliance: its own result, or why it failed. */
const outcomes = <T extends z.ZodType>(result: T) => z.object({ appliances: z.array(z.object({ appliance: z.string(), ok: z.boolean(), result: result.optional(), error: z.string().optional() })) });

export const migrationRequest = z
  .object({
    vip: z.string().min(1),
    to: z.string().min(1),
    /** Answer when the migration has finished instead of when it has started. */
    wait: z.boolean().default(false),
    /** A drill that exercises the abort path at the end of a step. */
    abortAt: z.enum(PHASES.filter((s) => s !== 'activate') as ['precopy', 'prepare', 'move_address', 'move_entries']).optional(),
    /** The negative control: no hold on the target; connections WILL see resets. */
    unsafeSkipPrepare: z.boolean().optional(),
  })
  .strict();

/**
 * The route table (docs/api.md): the operator's levers are `admin`'s alone; what the site
 * looks like may also be read by a monitor.
 */
const READ = ['admin', 'monitor'] as const;
const ADMIN = ['admin'] as const;
const name = { name: z.string() };

export const controllerApi = {
  status: endpoint({ method: 'GET', path: '/v1/status', response: siteStatusSchema, roles: READ }),
  controllers: endpoint({ method: 'GET', path: '/v1/controllers', response: controlPlaneSchema, roles: READ }),
  migrations: endpoint({ method: 'GET', path: '/v1/migrations', response: z.array(migrationProgressSchema), roles: READ }),
  /** A page of an appliance's access table, asked of its agent (the console talks only to the controller). */
  entriesPage: endpoint({ method: 'GET', path: '/v1/appliances/:name/vips/:vip/entries', query: pageQuery, response: accessPageSchema, roles: READ }),
  migration: endpoint({ method: 'GET', path: '/v1/migrations/:id', response: migrationProgressSchema, roles: READ }),
  /** 202 with the migration started, or (wait) 200 with it finished. */
  migrate: endpoint({ method: 'POST', path: '/v1/migrations', body: migrationRequest, response: migrationProgressSchema, roles: ADMIN }),
  plan: endpoint({ method: 'GET', path: '/v1/plan', response: planReportSchema, roles: READ }),
  rebalance: endpoint({ method: 'GET', path: '/v1/rebalance', response: z.object({ mode: rebalanceMode }), roles: READ }),
  setRebalance: endpoint({ method: 'POST', path: '/v1/rebalance', body: z.object({ mode: rebalanceMode }).strict(), response: z.object({ mode: rebalanceMode }), roles: ADMIN }),
  pin: endpoint({ method: 'POST', path: '/v1/vips/:name/pin', body: z.object({ pinned: z.boolean() }).strict(), response: z.looseObject({ ...name, owner: z.string(), pinned: z.boolean() }), roles: ADMIN }),
  maintenance: endpoint({
    method: 'POST',
    path: '/v1/appliances/:name/maintenance',
    body: z.object({ on: z.boolean() }).strict(),
    response: z.looseObject({ ...name, maintenance: z.boolean() }),
    roles: ADMIN,
  }),
  drain: endpoint({
    method: 'POST',
    path: '/v1/appliances/:name/drain',
    body: z.object({}).strict(),
    response: z.object({ appliance: z.string(), migrations: z.array(migrationProgressSchema), waiting: z.array(z.object({ vip: z.string(), reason: z.string() })), remaining: z.array(z.string()) }),
    roles: ADMIN,
  }),
  /** Applied on every appliance and keeper, each answering for itself (a keeper without the VIP: skipped). */
  backends: endpoint({
    method: 'POST',
    path: '/v1/vips/:name/backends',
    body: backendChangeSchema,
    response: outcomes(z.object({ vip: z.string(), backends: z.array(z.object({ address: z.string(), port: z.number().int().optional(), weight: count, state: z.string() })) })).extend({
      keepers: z.array(
        z.object({
          keeper: z.string(),
          ok: z.boolean(),
          result: z.object({ vip: z.string(), backends: z.array(z.object({ address: z.string(), port: z.number().int().optional(), weight: count })) }).optional(),
          skipped: z.string().optional(),
          error: z.string().optional(),
        }),
      ),
    }),
    roles: ADMIN,
  }),
  reload: endpoint({
    method: 'POST',
    path: '/v1/reload',
    body: z.object({ appliance: z.string().min(1).optional() }).strict(),
    response: outcomes(z.object({ added: z.array(z.string()), removed: z.array(z.string()), changed: z.array(z.string()) })),
    roles: ADMIN,
  }),
  /** The Prometheus exposition text, to a signed request. */
  metrics: endpoint({ method: 'GET', path: METRICS_PATH, response: z.string(), roles: READ }),
};

export const CONTROLLER_ROLES: RouteRoles = rolesOf(controllerApi);
