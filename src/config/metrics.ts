/**
 * The `metrics` section of every process's configuration: the listener a stock Prometheus
 * scrapes (src/metrics/listener.ts), with a bearer token from the credentials directory.
 *
 *   metrics:
 *     listen: "192.0.2.11:9441"   # default: the API's address, its port + 1000
 *     enabled: true               # default; off only when said
 */
import { z } from 'zod';

export const metricsListenerSchema = z.strictObject({
  listen: z
    .string({ error: 'expected "address:port"' })
    .regex(/^[^:\s]+:\d{1,5}$/, { error: 'expected "address:port"' })
    .optional(),
  enabled: z.boolean({ error: 'expected true or false' }).default(true),
});

export type MetricsListenerConfig = z.output<typeof metricsListenerSchema>;
export const METRICS_DEFAULT = metricsListenerSchema.parse({});
