/**
 * Prometheus metrics shared by every vipshift process: the registry each API serves at
 * GET /metrics (behind the API's authentication, like every route), and the route itself.
 * The exposition text travels as the JSON string of a signed answer; `vipshift metrics`
 * fetches it with the cluster's credentials and prints it as is.
 */
import { Registry, collectDefaultMetrics } from 'prom-client';
import type { Route } from '../api/server.js';

export const METRICS_PATH = '/metrics';

/** A registry of the process's own metrics plus Node's (process_cpu_seconds_total, heap...). */
export function processRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return registry;
}

export function metricsRoute(registry: Registry): Route {
  return { method: 'GET', path: METRICS_PATH, handler: () => registry.metrics() };
}
