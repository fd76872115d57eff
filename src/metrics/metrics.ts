/**
 * Prometheus metrics shared by every vipshift process: the registry each API serves at
 * GET /metrics (behind the API's authentication, like every route), and the route itself.
 * The exposition text travels as the JSON string of a signed answer; `vipshift metrics`
 * fetches it with the cluster's credentials and prints it as is.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
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

/** A labelled value of a metric: its labels and its value now. */
export type Sample<L extends string> = readonly [labels: Partial<Record<L, string>>, value: number];

export interface ScrapedSpec<L extends string> {
  name: string;
  help: string;
  labelNames?: readonly L[];
  /** The samples now (a status read, nft counters...); the metric holds exactly these after each scrape. */
  samples(): Iterable<Sample<L>> | Promise<Iterable<Sample<L>>>;
}

/**
 * A metric whose values live elsewhere (nft counters, a speaker's status, a table's fill),
 * read at scrape time, so the path that counts does no extra work and the metric agrees with
 * its source by construction. A counter's source only grows (it restarts with its process).
 */
export function scrapedMetric<L extends string>(registry: Registry, kind: 'counter' | 'gauge', spec: ScrapedSpec<L>): void {
  const { name, help, labelNames = [], samples } = spec;
  // Each scrape replaces the metric's values by the source's: a gauge is set to them, a counter
  // (which prom-client only lets grow) is incremented from zero to them.
  const refill = async (metric: { reset(): void }, write: (labels: Partial<Record<L, string>>, value: number) => void) => {
    metric.reset();
    for (const [labels, value] of await samples()) write(labels, value);
  };
  const config = { name, help, labelNames, registers: [registry] };
  if (kind === 'gauge') new Gauge<L>({ ...config, collect() { return refill(this, (l, v) => this.set(l, v)); } });
  else new Counter<L>({ ...config, collect() { return refill(this, (l, v) => this.inc(l, v)); } });
}
