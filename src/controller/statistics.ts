/**
 * Traffic statistics from the appliances' counters. Pure: the controller feeds in what each
 * appliance's `GET /v1/status` said and when, and gets per-VIP rates and a smoothed load back.
 *
 * Counters (packets, bytes, new connections) are cumulative per appliance and per VIP, and an
 * appliance keeps counting a VIP's traffic wherever it flows through it; so a VIP's rate is the
 * sum over appliances of each one's counter increase, which stays right while a VIP moves (its
 * traffic passes the source, then the target). A counter that went backwards (the appliance
 * restarted and rebuilt its ruleset) gives no rate for that round.
 */
import type { VipTraffic } from './store.js';

export interface VipCounterSample {
  packets: number;
  bytes: number;
  /** Connections the appliance NATed as new (nft counter in the VIP's chain). */
  newConnections: number;
  /** Live access-table entries now. */
  entries: number;
}

export interface ApplianceSample {
  appliance: string;
  /** When the answer arrived, ms. */
  at: number;
  vips: Record<string, VipCounterSample>;
}

/** What the assignment balances: one of the measured rates. */
export type LoadMetric = 'packets' | 'bytes' | 'connections' | 'newConnections';

export function metricOf(t: VipTraffic, metric: LoadMetric): number {
  switch (metric) {
    case 'packets':
      return t.packetsPerSecond;
    case 'bytes':
      return t.bytesPerSecond;
    case 'connections':
      return t.connections;
    case 'newConnections':
      return t.newConnectionsPerSecond;
  }
}

/** Rates of one VIP on one appliance between two samples, or null if a counter went backwards. */
export function rates(before: VipCounterSample, after: VipCounterSample, seconds: number): Omit<VipTraffic, 'connections'> | null {
  if (!(seconds > 0)) return null;
  const dp = after.packets - before.packets;
  const db = after.bytes - before.bytes;
  const dn = after.newConnections - before.newConnections;
  if (dp < 0 || db < 0 || dn < 0) return null;
  return { packetsPerSecond: dp / seconds, bytesPerSecond: db / seconds, newConnectionsPerSecond: dn / seconds };
}

export interface MeasuredVip {
  name: string;
  traffic: VipTraffic;
  /** Exponentially smoothed metric: the assignment's load. */
  load: number;
}

export class TrafficMeter {
  private readonly last = new Map<string, ApplianceSample>();
  private readonly smoothed = new Map<string, number>();

  /**
   * @param metric what becomes the load
   * @param smoothing weight of the newest measurement in the load, (0, 1]: 1 = no smoothing.
   *   Smoothing keeps a burst of one poll from moving a VIP.
   */
  constructor(
    readonly metric: LoadMetric,
    readonly smoothing: number,
  ) {
    if (!(smoothing > 0 && smoothing <= 1)) throw new Error(`smoothing: must be in (0, 1] (got ${smoothing})`);
  }

  /**
   * One poll round: the samples of the appliances that answered. Returns the VIPs measured in
   * this round (those with a comparable earlier sample on at least one appliance).
   */
  update(samples: ApplianceSample[]): MeasuredVip[] {
    const sums = new Map<string, VipTraffic>();
    for (const sample of samples) {
      const before = this.last.get(sample.appliance);
      this.last.set(sample.appliance, sample);
      if (!before) continue;
      const seconds = (sample.at - before.at) / 1000;
      for (const [vip, now] of Object.entries(sample.vips)) {
        const then = before.vips[vip];
        if (!then) continue;
        const r = rates(then, now, seconds);
        if (!r) continue;
        const sum = sums.get(vip) ?? { packetsPerSecond: 0, bytesPerSecond: 0, connections: 0, newConnectionsPerSecond: 0 };
        sum.packetsPerSecond += r.packetsPerSecond;
        sum.bytesPerSecond += r.bytesPerSecond;
        sum.newConnectionsPerSecond += r.newConnectionsPerSecond;
        // Entries exist on one appliance, except for the moment a migration copies them.
        sum.connections = Math.max(sum.connections, now.entries);
        sums.set(vip, sum);
      }
    }
    const out: MeasuredVip[] = [];
    for (const [name, traffic] of sums) {
      const x = metricOf(traffic, this.metric);
      const previous = this.smoothed.get(name);
      const load = previous === undefined ? x : this.smoothing * x + (1 - this.smoothing) * previous;
      this.smoothed.set(name, load);
      out.push({ name, traffic, load });
    }
    return out;
  }
}
