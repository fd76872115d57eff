/**
 * The checks' metrics, read at scrape time from the monitor's status (one source for the
 * console, the API and Prometheus). A backend is labelled `address:port`.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { CheckOutcome } from './state.js';
import type { BackendCheckStatus } from './monitor.js';

const OUTCOMES: CheckOutcome[] = ['pass', 'fail', 'timeout'];

export function registerHealthMetrics(registry: Registry, appliance: string, status: () => BackendCheckStatus[]): void {
  const each = (use: (b: BackendCheckStatus, labels: { appliance: string; vip: string; backend: string }) => void) => {
    for (const b of status()) use(b, { appliance, vip: b.vip, backend: `${b.address}:${b.port}` });
  };
  new Gauge({
    name: 'vipshift_backend_up',
    help: "Whether the backend's health checks say it is up (1) or down (0) on this appliance.",
    labelNames: ['appliance', 'vip', 'backend'],
    registers: [registry],
    collect() {
      this.reset();
      each((b, l) => this.set(l, b.state === 'up' ? 1 : 0));
    },
  });
  new Counter({
    name: 'vipshift_backend_checks_total',
    help: 'Health checks of the backend run by this appliance, by result (pass, fail: a wrong answer or a refusal, timeout: none in time).',
    labelNames: ['appliance', 'vip', 'backend', 'result'],
    registers: [registry],
    collect() {
      this.reset();
      each((b, l) => {
        for (const result of OUTCOMES) this.inc({ ...l, result }, b.checks[result]);
      });
    },
  });
  new Counter({
    name: 'vipshift_backend_transitions_total',
    help: 'Times the backend went down or came back up by its health checks (rise/fall) on this appliance.',
    labelNames: ['appliance', 'vip', 'backend'],
    registers: [registry],
    collect() {
      this.reset();
      each((b, l) => this.inc(l, b.transitions));
    },
  });
}
