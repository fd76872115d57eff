/**
 * The controller's API: the site's status, migrations started and followed, the plan, and the
 * operator's levers (rebalance mode, pins, maintenance, drain). Declared in api.ts; served here.
 */
import { serve } from '../api/contract.js';
import { HttpError, reply, type Route } from '../api/server.js';
import { ApiError } from '../api/client.js';
import { AgentClient } from './agent-client.js';
import { MigrationRefused, type Controller } from './controller.js';
import { NotLeaderError } from './leadership.js';
import { controllerApi as api } from './api.js';

export { CONTROLLER_ROLES } from './api.js';

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
    serve(api.status, () => site.status()),
    serve(api.controllers, () => site.controlPlane()),
    serve(api.migrations, () => site.migrations()),
    serve(api.entriesPage, async (ctx) => {
      const agent = site.agent(ctx.params.name ?? '');
      if (!agent) throw new HttpError(404, `no appliance named '${ctx.params.name}'`, 'name');
      if (!(agent instanceof AgentClient)) throw new HttpError(501, `${agent.name} has no agent API to page its access table`, 'name');
      try {
        return await agent.entriesPage(ctx.params.vip ?? '', ctx.query);
      } catch (err) {
        if (err instanceof ApiError) throw new HttpError(err.status === 0 ? 502 : err.status, `${agent.name}: ${err.message}`, err.field);
        throw err;
      }
    }),
    serve(api.migration, async (ctx) => {
      const m = await site.migration(ctx.params.id ?? '');
      if (!m) throw new HttpError(404, `no migration with id '${ctx.params.id}'`, 'id');
      return m;
    }),
    serve(api.migrate, async (ctx) => {
      const { vip, to, wait, abortAt, unsafeSkipPrepare } = ctx.body;
      const started = await refusals(() => site.start(vip, to, { ...(abortAt ? { abortAt } : {}), ...(unsafeSkipPrepare ? { skipPrepare: true } : {}) }));
      return wait ? await started.done : reply(202, started.progress);
    }),
    serve(api.plan, () => site.plan()),
    serve(api.rebalance, async () => ({ mode: await site.rebalanceMode() })),
    serve(api.setRebalance, async (ctx) => {
      await refusals(() => site.setRebalanceMode(ctx.body.mode));
      return { mode: await site.rebalanceMode() };
    }),
    serve(api.pin, (ctx) => refusals(() => site.setPinned(ctx.params.name ?? '', ctx.body.pinned))),
    serve(api.maintenance, (ctx) => refusals(() => site.setMaintenance(ctx.params.name ?? '', ctx.body.on))),
    serve(api.drain, (ctx) => refusals(() => site.drain(ctx.params.name ?? ''))),
    serve(api.backends, (ctx) => site.changeBackend(ctx.params.name ?? '', ctx.body)),
    serve(api.reload, async (ctx) => ({ appliances: await refusals(() => site.reload(ctx.body.appliance)) })),
  ];
}
