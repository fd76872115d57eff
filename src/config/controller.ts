/** The controller's configuration: the appliances it drives, the VIPs of the site, statistics and rebalancing. */
import { z } from 'zod';
import { METRICS_DEFAULT, metricsListenerSchema } from './metrics.js';
import { apiUrl, listenAddress, memberName } from './fields.js';
import { loadConfigFile, parseConfigText } from './load.js';

/** The assignment algorithms a controller can be configured with (`rebalance.algorithm`). */
export const ASSIGNMENT_ALGORITHMS = ['min-max-load'] as const;
export type AssignmentAlgorithmName = (typeof ASSIGNMENT_ALGORITHMS)[number];

export const controllerConfigSchema = z
  .object({
    controller: memberName("the controller's name"),
    api: z.object({ listen: listenAddress, socket: z.string().startsWith('/').optional() }).strict(),
    appliances: z
      .array(
        z.object({
          name: memberName("an appliance's name"),
          api: apiUrl("the appliance's agent URL"),
          /** Capacity weight: an appliance of weight 2 is meant to carry twice the load. */
          capacity: z.number().positive().default(1),
        }).strict(),
      )
      .min(1),
    /** The keepers of the servers, for failover. */
    keepers: z.array(z.object({ name: memberName("a keeper's name"), api: apiUrl("the keeper's API URL") }).strict()).default([]),
    /** The controller's SQLite database: migration journal and inventory (src/controller/sqlite-store.ts), when `store` is sqlite. */
    journal: z.string().min(1).default('/var/lib/vipshift/controller.sqlite'),
    /**
     * Where the journal, the inventory and the settings live: `sqlite` (one controller, the
     * file `journal`) or `etcd` (two or three controllers, one leader: src/controller/etcd-store.ts).
     */
    store: z
      .union([
        z.literal('sqlite'),
        z
          .object({
            etcd: z
              .object({
                endpoints: z.array(z.string().regex(/^https?:\/\/[^/]+$/, 'expected http(s)://ADDRESS:PORT')).min(1),
                prefix: z.string().startsWith('/').endsWith('/').default('/vipshift/'),
                /** The leader's lease: a dead leader is replaced after about this long. */
                leaseSeconds: z.number().int().min(2).max(60).default(3),
                /** Client certificate and the cluster CA (PEM files; `vipshift pki etcd` mints them). */
                tls: z.object({ ca: z.string().min(1), cert: z.string().min(1), key: z.string().min(1) }).strict().optional(),
                /** What the leader keeps of the journal's history: the newest ended migrations, and etcd's revisions behind the current one. */
                history: z
                  .object({ keepMigrations: z.number().int().min(1).default(1000), keepRevisions: z.number().int().min(100).default(10_000) })
                  .strict()
                  .default({ keepMigrations: 1000, keepRevisions: 10_000 }),
              })
              .strict(),
          })
          .strict(),
      ])
      .default('sqlite'),
    vips: z.array(z.object({ name: z.string().min(1), address: z.string().optional(), owner: memberName("the owner's appliance name") }).strict()),
    /** The listener a stock Prometheus scrapes (src/config/metrics.ts). */
    metrics: metricsListenerSchema.default(METRICS_DEFAULT),
    migration: z.object({ stepTimeoutMs: z.number().int().positive() }).strict().default({ stepTimeoutMs: 10_000 }),
    statistics: z
      .object({
        /** Every appliance's counters are read this often. */
        intervalSeconds: z.number().positive().default(5),
        /** An appliance that has not answered this many polls in a row is down: nothing is planned to it. */
        downAfterPolls: z.number().int().positive().default(3),
        /** Weight of the newest measurement in the smoothed load, (0, 1]. */
        smoothing: z.number().gt(0).max(1).default(0.5),
      })
      .strict()
      .default({ intervalSeconds: 5, downAfterPolls: 3, smoothing: 0.5 }),
    rebalance: z
      .object({
        /** auto: the controller carries its plan out; manual: only operators move VIPs. Changed at run time by `vipshift rebalance`. */
        mode: z.enum(['auto', 'manual']).default('auto'),
        algorithm: z.enum(ASSIGNMENT_ALGORITHMS).default('min-max-load'),
        /** What is balanced: packets/s, bytes/s, live connections or new connections/s. */
        load: z.enum(['packets', 'bytes', 'connections', 'newConnections']).default('packets'),
        /** No rebalancing move unless the busiest appliance carries this much more than its share (0.25 = 25 %). */
        threshold: z.number().min(0).default(0.25),
        /** A VIP that moved stays put this long. */
        coolDownSeconds: z.number().min(0).default(300),
        /** The plan is made (and in auto carried out) this often. */
        intervalSeconds: z.number().positive().default(30),
        /** Migrations at once. */
        maxConcurrent: z.number().int().min(1).default(1),
        /** Below this total load (in the load's unit, per second) the site is idle: nothing is moved. */
        minLoad: z.number().min(0).default(100),
      })
      .strict()
      .default({ mode: 'auto', algorithm: 'min-max-load', load: 'packets', threshold: 0.25, coolDownSeconds: 300, intervalSeconds: 30, maxConcurrent: 1, minLoad: 100 }),
  })
  // Every field is the operator's: one this vipshift does not know is a mistake, not silence.
  .strict()
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

export function parseControllerConfig(text: string, fileName: string): ControllerConfig {
  return parseConfigText(text, fileName, controllerConfigSchema);
}

export function loadControllerConfig(path: string): Promise<ControllerConfig> {
  return loadConfigFile(path, controllerConfigSchema);
}
