/** The controller's API: the site's status, and migrations started and followed. */
import { z } from 'zod';
import { HttpError, reply, type RequestContext, type Route } from '../api/server.js';
import { STEPS } from '../migration/migration.js';
import { MigrationRefused, type Controller } from './controller.js';

const migrationRequest = z
  .object({
    vip: z.string().min(1),
    to: z.string().min(1),
    /** Answer when the migration has finished instead of when it has started. */
    wait: z.boolean().default(false),
    /** A drill that exercises the abort path at the end of a step. */
    abortAt: z.enum(STEPS.filter((s) => s !== 'activate') as ['prepare', 'move_address', 'move_entries']).optional(),
    /** The negative control: no hold on the target; connections WILL see resets. */
    unsafeSkipPrepare: z.boolean().optional(),
  })
  .strict();
type MigrationRequest = z.infer<typeof migrationRequest>;

export function controllerRoutes(site: Controller): Route[] {
  return [
    { method: 'GET', path: '/v1/status', handler: () => site.status() },
    { method: 'GET', path: '/v1/migrations', handler: () => site.migrations() },
    {
      method: 'GET',
      path: '/v1/migrations/:id',
      handler: (ctx) => {
        const m = site.migration(ctx.params.id ?? '');
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
        try {
          const started = site.start(vip, to, { ...(abortAt ? { abortAt } : {}), ...(unsafeSkipPrepare ? { skipPrepare: true } : {}) });
          return wait ? await started.done : reply(202, started.progress);
        } catch (err) {
          if (err instanceof MigrationRefused) throw new HttpError(err.status, err.message, err.field);
          throw err;
        }
      },
    },
  ];
}
