/**
 * Replication's metrics, read at scrape time from the replicator's status (the same figures
 * as the `replication` section of the agent's GET /v1/status).
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { KeeperReplicationStatus, ReplicationStatus } from './replicator.js';

export function registerReplicationMetrics(registry: Registry, status: () => ReplicationStatus): void {
  const perKeeper = (kind: 'gauge' | 'counter', name: string, help: string, value: (k: KeeperReplicationStatus) => number) => {
    const collect = function (this: Gauge | Counter) {
      this.reset();
      for (const k of status().keepers) (this as Gauge).inc({ keeper: k.name }, value(k));
    };
    const spec = { name, help, labelNames: ['keeper'], registers: [registry], collect };
    return kind === 'gauge' ? new Gauge(spec) : new Counter(spec);
  };
  perKeeper('gauge', 'vipshift_replication_keeper_up', 'Whether the keeper took the last push (1) or is being retried (0).', (k) => (k.state === 'up' ? 1 : 0));
  perKeeper('gauge', 'vipshift_replication_backlog', 'Changes waiting for the keeper (one per connection).', (k) => k.backlog);
  perKeeper('gauge', 'vipshift_replication_lag_seconds', 'Age of the oldest change waiting for the keeper.', (k) => k.lagMs.current / 1000);
  perKeeper('gauge', 'vipshift_replication_batch_lag_seconds', "The last batch's oldest change to the keeper's acknowledgement.", (k) => k.lagMs.lastBatch / 1000);
  perKeeper('counter', 'vipshift_replication_copies_pushed_total', 'Copies (upserts) the keeper acknowledged.', (k) => k.pushed.upserts);
  perKeeper('counter', 'vipshift_replication_deletes_pushed_total', 'Deletes of copies the keeper acknowledged.', (k) => k.pushed.deletes);
  perKeeper('counter', 'vipshift_replication_push_failures_total', 'Pushes or resynchronisations that failed (keeper unreachable or refusing).', (k) => k.failures);
  perKeeper('counter', 'vipshift_replication_dropped_total', 'Changes dropped because the backlog reached its bound (a resynchronisation followed).', (k) => k.dropped);
  perKeeper('counter', 'vipshift_replication_resyncs_total', "Resynchronisations of the keeper's copies with the access table.", (k) => k.resyncs);
  new Counter({
    name: 'vipshift_replication_events_total',
    help: 'Conntrack events read, by outcome: copied, ignored (another VIP, a state that needs no copy), unrouted (no keeper for the server).',
    labelNames: ['outcome'],
    registers: [registry],
    collect() {
      this.reset();
      const e = status().events;
      for (const outcome of ['copied', 'ignored', 'unrouted'] as const) this.inc({ outcome }, e[outcome]);
    },
  });
  new Counter({
    name: 'vipshift_replication_event_overruns_total',
    help: 'Conntrack event socket overruns (ENOBUFS: events lost), each answered by a resynchronisation of every keeper.',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(status().overruns);
    },
  });
}
