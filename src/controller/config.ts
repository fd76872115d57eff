/** The controller's configuration: the appliances it drives and the VIPs of the site. */
import { z } from 'zod';

const hostPort = z.string().regex(/^[0-9.]+:\d{1,5}$/, 'expected ADDRESS:PORT');

export const controllerConfigSchema = z
  .object({
    controller: z.string().min(1),
    api: z.object({ listen: hostPort, socket: z.string().startsWith('/').optional() }).strict(),
    appliances: z
      .array(z.object({ name: z.string().min(1), api: z.string().url() }))
      .min(1),
    /** The keepers of the servers, for failover (issue 5); the migration journal's database (issue 4). */
    keepers: z.array(z.object({ name: z.string().min(1), api: z.string().url() })).default([]),
    journal: z.string().optional(),
    vips: z.array(z.object({ name: z.string().min(1), address: z.string().optional(), owner: z.string().min(1) })),
    migration: z.object({ stepTimeoutMs: z.number().int().positive() }).default({ stepTimeoutMs: 10_000 }),
  })
  .superRefine((c, ctx) => {
    const names = new Set(c.appliances.map((a) => a.name));
    c.vips.forEach((v, i) => {
      if (!names.has(v.owner)) {
        ctx.addIssue({ code: 'custom', path: ['vips', i, 'owner'], message: `'${v.owner}' is not one of the appliances` });
      }
    });
  });

export type ControllerConfig = z.infer<typeof controllerConfigSchema>;
export type ControllerConfigInput = z.input<typeof controllerConfigSchema>;
