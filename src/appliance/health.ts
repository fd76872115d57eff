/**
 * The appliance's backend health checks: a monitor (src/health) over every backend of every
 * VIP in the configuration, whose state changes go into the VIP's pool (the sink: the
 * appliance's setBackendHealth), into the log with their reason, onto the event bus
 * (backendUp / backendDown: the notify hooks and `vipshift events`), and into Prometheus.
 */
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { VipConfig } from '../config/appliance.js';
import type { EventSink } from '../log/events.js';
import { registerHealthMetrics } from '../health/metrics.js';
import { HealthMonitor, type BackendHealthSink } from '../health/monitor.js';
import { healthTargets } from '../health/targets.js';

export interface BackendChecksOptions {
  appliance: string;
  vips: readonly VipConfig[];
  sink: BackendHealthSink;
  logger: Logger;
  events?: EventSink;
  registry?: Registry;
}

export function backendChecks(o: BackendChecksOptions): HealthMonitor {
  const monitor = new HealthMonitor({
    sink: o.sink,
    onTransition: (e) => {
      const backend = `${e.address}:${e.port}`;
      const fields = { vip: e.vip, backend, from: e.from, to: e.to, reason: e.reason, applied: e.applied, ...(e.applyMs === undefined ? {} : { applyMs: e.applyMs }) };
      if (e.to === 'down') o.logger.warn(fields, 'backend down');
      else o.logger.info(fields, 'backend up');
      o.events?.emit({ event: e.to === 'down' ? 'backendDown' : 'backendUp', vip: e.vip, backend, reason: e.reason });
    },
    onSinkError: (e, err) => o.logger.error({ vip: e.vip, backend: `${e.address}:${e.port}`, to: e.to, err: err.message }, 'could not apply a backend state to the pool; trying again after the next check'),
  });
  monitor.setTargets(healthTargets(o.vips));
  if (o.registry) registerHealthMetrics(o.registry, o.appliance, () => monitor.status());
  return monitor;
}
