/** The controller's metrics: migrations by outcome, their durations and their steps'. */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { STEPS, type MigrationProgress } from '../migration/migration.js';

// From a few ms (a VIP with no connections) to the step timeout's order.
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export class ControllerMetrics {
  private readonly finished: Counter<'vip' | 'state'>;
  private readonly duration: Histogram<'vip'>;
  private readonly step: Histogram<'vip' | 'step'>;
  private readonly moved: Counter<'vip'>;
  private readonly released: Counter<'vip'>;

  constructor(registry: Registry, running: () => MigrationProgress[], leadership: () => { leading: boolean; elections: number }) {
    this.finished = new Counter({ name: 'vipshift_migrations_total', help: 'Migrations finished, by VIP and final state (done, aborted).', labelNames: ['vip', 'state'], registers: [registry] });
    this.duration = new Histogram({ name: 'vipshift_migration_duration_seconds', help: 'Whole migrations, first step to last.', labelNames: ['vip'], buckets: BUCKETS, registers: [registry] });
    this.step = new Histogram({ name: 'vipshift_migration_step_duration_seconds', help: 'Steps of migrations (prepare, move_address, move_entries, activate).', labelNames: ['vip', 'step'], buckets: BUCKETS, registers: [registry] });
    this.moved = new Counter({ name: 'vipshift_migration_entries_moved_total', help: 'Access-table entries moved by migrations.', labelNames: ['vip'], registers: [registry] });
    this.released = new Counter({ name: 'vipshift_migration_held_released_total', help: 'Packets held during migrations and released by the target.', labelNames: ['vip'], registers: [registry] });
    new Gauge({
      name: 'vipshift_controller_leader',
      help: 'This controller leads now (1) or follows (0); a sole controller on SQLite always leads.',
      registers: [registry],
      collect() {
        this.set(leadership().leading ? 1 : 0);
      },
    });
    new Counter({
      name: 'vipshift_controller_elections_total',
      help: 'Leader changes this controller has seen (its own elections included).',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(leadership().elections);
      },
    });
    new Gauge({
      name: 'vipshift_migrations_running',
      help: 'Migrations under way.',
      registers: [registry],
      collect() {
        this.set(running().filter((m) => m.state === 'running').length);
      },
    });
  }

  /** A migration ended (done or aborted). */
  observe(m: MigrationProgress): void {
    this.finished.inc({ vip: m.vip, state: m.state });
    if (m.totalMs !== undefined) this.duration.observe({ vip: m.vip }, m.totalMs / 1000);
    for (const step of STEPS) {
      const ms = m.steps[`${step}_ms`];
      if (ms !== undefined) this.step.observe({ vip: m.vip, step }, ms / 1000);
    }
    this.moved.inc({ vip: m.vip }, m.entries.moved);
    this.released.inc({ vip: m.vip }, m.released);
  }
}
