/**
 * Notify hooks (the `notify` section of an appliance's configuration): programs run on events,
 * as keepalived runs notify_master / notify_backup / notify_fault of a VRRP instance and
 * notify_up / notify_down of a real server.
 *
 *   notify:
 *     timeoutSeconds: 10                           # then the program is killed
 *     master: [/usr/local/sbin/on-master, --vip]   # argv: a program and its arguments
 *     backup: /usr/local/sbin/on-backup            # or a program alone
 *     backendDown: [/usr/local/sbin/page-oncall]
 *
 * A program runs without a shell (nothing is split, expanded or redirected), with the event in
 * its environment (VIPSHIFT_EVENT, VIPSHIFT_VIP, ..., VIPSHIFT_EVENT_JSON). The keys are the
 * event kinds of src/log/events.ts.
 */
import { z } from 'zod';
import { EVENT_KINDS, type EventKind } from '../log/events.js';

const program = z
  .string({ error: 'expected the absolute path of a program' })
  .regex(/^\//, { error: 'expected the absolute path of a program (hooks run without a shell or a PATH search)' });
const argv = z
  .union([program.transform((p) => [p]), z.tuple([program], z.string({ error: 'expected an argument (a string)' }))], {
    error: 'expected a program (an absolute path) or a list [program, arguments...]',
  })
  .transform((a): string[] => [...a]);

const hookShape = Object.fromEntries(EVENT_KINDS.map((k) => [k, argv.optional()])) as Record<EventKind, z.ZodOptional<typeof argv>>;

export const notifySchema = z.strictObject({
  /** Seconds a program may run before it is killed (keepalived's script timeout is of this order). */
  timeoutSeconds: z
    .number({ error: 'expected seconds' })
    .int({ error: 'expected whole seconds' })
    .min(1, { error: 'expected a timeout in 1..600 s' })
    .max(600, { error: 'expected a timeout in 1..600 s' })
    .default(10),
  ...hookShape,
});

export type NotifyConfig = z.output<typeof notifySchema>;
export type NotifyConfigInput = z.input<typeof notifySchema>;
