/**
 * The controller's API: the site's status, migrations started and followed, the plan, and the
 * operator's levers (rebalance mode, pins, maintenance, drain).
 */
import { z } from 'zod';
import { HttpError, reply, type RequestContext, type Route, type RouteRoles } from '../api/server.js';
import { ApiError } from '../api/client.js';
import { AgentClient } from './agent-client.js';
import { PHASES } from '../migration/migration.js';
import { pageQuery } from '../appliance/agent-api.js';
import { MigrationRefused, type Controller } from './controller.js';
import { NotLeaderError } from './leadership.js';
import { backendChangeSchema, type BackendChangeRequest } from '../appliance/agent-api.js';

const migrationRequest = z
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
type MigrationRequest = z.infer<typeof migrationRequest>;

const rebalanceRequest = z.object({ mode: z.enum(['auto', 'manual']) }).strict();
const pinRequest = z.object({ pinned: z.boolean() }).strict();
const maintenanceRequest = z.object({ on: z.boolean() }).strict();
const empty = z.object({}).strict();
const reloadRequest = z.object({ appliance: z.string().min(1).optional() }).strict();

/**
 * The controller API's route table (docs/api.md): the operator's levers are `admin`'s alone;
 * what the site looks like may also be read by a monitor.
 */
const READ = ['admin', 'monitor'] as const;
export const CONTROLLER_ROLES: RouteRoles = {
  'GET /v1/status': READ,
  'GET /v1/controllers': READ,
  'GET /v1/migrations': READ,
  'GET /v1/appliances/:name/vips/:vip/entries': READ,
  'GET /v1/migrations/:id': READ,
  'POST /v1/migrations': ['admin'],
  'GET /v1/plan': READ,
  'GET /v1/rebalance': READ,
  'POST /v1/rebalance': ['admin'],
  'POST /v1/vips/:name/pin': ['admin'],
  'POST /v1/appliances/:name/maintenance': ['admin'],
  'POST /v1/appliances/:name/drain': ['admin'],
  'POST /v1/vips/:name/backends': ['admin'],
  'POST /v1/reload': ['admin'],
  'GET /metrics': READ,
};

/** A refusal of the controller becomes an HTTP error naming the field. */
async function refusals<T>(work: () => T | Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    if (err instanceof MigrationRefused) throw new HttpError(err.status, err.message, err.field);
    // 421 Misdirected Request: the operator's tools ask /v1/controllers who leads and go there.
    if (err instanceof NotLeaderError) throw new HttpError(421, err.message, 'leader');
    throw err;
  }
}

export function controllerRoutes(site: Controller): Route[] {
  return [
    { method: 'GET', path: '/v1/status', handler: () => site.status() },
    { method: 'GET', path: '/v1/controllers', handler: () => site.controlPlane() },
    { method: 'GET', path: '/v1/migrations', handler: () => site.migrations() },
    {
      // A page of an appliance's access table, asked of its agent (the console talks only to us).
      method: 'GET',
      path: '/v1/appliances/:name/vips/:vip/entries',
      query: pageQuery,
      handler: async (ctx: RequestContext<unknown, z.infer<typeof pageQuery>>) => {
        const agent = site.agent(ctx.params.name ?? '');
        if (!agent) throw new HttpError(404, `no appliance named '${ctx.params.name}'`, 'name');
        if (!(agent instanceof AgentClient)) throw new HttpError(501, `${agent.name} has no agent API to page its access table`, 'name');
        try {
          return await agent.entriesPage(ctx.params.vip ?? '', ctx.query);
        } catch (err) {
          if (err instanceof ApiError) throw new HttpError(err.status === 0 ? 502 : err.status, `${agent.name}: ${err.message}`, err.field);
          throw err;
        }
      },
    },
    {
      method: 'GET',
      path: '/v1/migrations/:id',
      handler: async (ctx) => {
        const m = await site.migration(ctx.params.id ?? '');
        if (!m) throw new HttpError(404, `no migration with id '${ctx.params.id}'`, 'id');
        return m;
      },
    },
    {
      method: 'POST',
      path: '/v1/migrations',
      body: migrationRequest,
      handler: async (ctx: RequestContext<MigrationRequest>) => {
        const { vip, to, wait, abortAt, unsafeSkipPrepare } = ctx.body;
        const started = await refusals(() => site.start(vip, to, { ...(abortAt ? { abortAt } : {}), ...(unsafeSkipPrepare ? { skipPrepare: true } : {}) }));
        return wait ? await started.done : reply(202, started.progress);
      },
    },
    { method: 'GET', path: '/v1/plan', handler: () => site.plan() },
    { method: 'GET', path: '/v1/rebalance', handler: async () => ({ mode: await site.rebalanceMode() }) },
    {
      method: 'POST',
      path: '/v1/rebalance',
      body: rebalanceRequest,
      handler: async (ctx: RequestContext<z.infer<typeof rebalanceRequest>>) => {
        await refusals(() => site.setRebalanceMode(ctx.body.mode));
        return { mode: await site.rebalanceMode() };
      },
    },
    {
      method: 'POST',
      path: '/v1/vips/:name/pin',
      body: pinRequest,
      handler: (ctx: RequestContext<z.infer<typeof pinRequest>>) => refusals(() => site.setPinned(ctx.params.name ?? '', ctx.body.pinned)),
    },
    {
      method: 'POST',
      path: '/v1/appliances/:name/maintenance',
      body: maintenanceRequest,
      handler: (ctx: RequestContext<z.infer<typeof maintenanceRequest>>) => refusals(() => site.setMaintenance(ctx.params.name ?? '', ctx.body.on)),
    },
    {
      method: 'POST',
      path: '/v1/appliances/:name/drain',
      body: empty,
      handler: (ctx) => refusals(() => site.drain(ctx.params.name ?? '')),
    },
    {
      // Applied on every appliance, each answering for itself.
      method: 'POST',
      path: '/v1/vips/:name/backends',
      body: backendChangeSchema,
      handler: async (ctx: RequestContext<BackendChangeRequest>) => ({ appliances: await site.changeBackend(ctx.params.name ?? '', ctx.body) }),
    },
    {
      method: 'POST',
      path: '/v1/reload',
      body: reloadRequest,
      handler: async (ctx: RequestContext<z.infer<typeof reloadRequest>>) => ({ appliances: await refusals(() => site.reload(ctx.body.appliance)) }),
    },
  ];
}
