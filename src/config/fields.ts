/**
 * The fields every configuration file shares, so that one rule holds in all of them
 * (docs/configuration.md):
 * - a member's name (appliance, keeper, controller, a VIP's owner, a peer) is its key id in
 *   the cluster's PKI, so it is checked here by the key-id rule itself;
 * - an API is named by one kind of URL, `http://ADDRESS:PORT`;
 * - a listener is `ADDRESS:PORT`;
 * - a duration carries its unit in its name (`…Ms`, `…Seconds`); only a health check's
 *   HAProxy words (`inter`, `timeout`) take a string with a unit instead.
 */
import { z } from 'zod';
import { IDENTITY_RULE, validIdentity } from '../api/auth.js';

/** A zod message that says "is required" when the field is missing, `text` otherwise. */
export const says =
  (text: string) =>
  (issue: { input?: unknown }): string =>
    issue.input === undefined ? 'is required' : text;

export const ipv4 = z.ipv4({ error: says('expected an IPv4 address (a.b.c.d)') });

export const port = z
  .number({ error: says('expected a port number') })
  .int({ error: 'expected a whole port number' })
  .min(1, { error: 'expected a port in 1..65535' })
  .max(65535, { error: 'expected a port in 1..65535' });

/** The name of a cluster member, which is also its key id (`LB_1` is refused here, not when its key is loaded). */
export const memberName = (what = 'a name') =>
  z
    .string({ error: says(`expected ${what} (its key id, e.g. lb1)`) })
    .refine(validIdentity, { error: (issue) => `expected ${what} as a key id: ${IDENTITY_RULE}, got '${String(issue.input)}'` });

/** Where a server listens: `ADDRESS:PORT`. */
export const listenAddress = z.string({ error: says('expected "address:port"') }).regex(/^[^:\s]+:\d{1,5}$/, { error: 'expected "address:port"' });

/** Where another member's API answers: `http://ADDRESS:PORT` (requests are signed, so plain http). */
export const apiUrl = (what = "an API's URL") =>
  z.string({ error: says(`expected ${what}`) }).regex(/^http:\/\/[^\s/:]+(:\d{1,5})?\/?$/, { error: `expected ${what} as http://ADDRESS:PORT` });

/** Whole numbers in [min, max], with messages that say the unit. */
export const bounded = (what: string, unit: string, min: number, max: number) =>
  z
    .number({ error: says(`expected ${what} in ${unit}`) })
    .int({ error: `expected a whole number of ${unit}` })
    .min(min, { error: `expected ${what} in ${min}..${max} ${unit}` })
    .max(max, { error: `expected ${what} in ${min}..${max} ${unit}` });
