/**
 * Synthetic inventories for the assignment algorithm: a seeded PRNG and Zipf-distributed VIP
 * loads (a few VIPs carry most of the traffic, as on real sites). Used by the property tests and
 * bench/assign.ts, so that a failing case is reproduced from its seed.
 */
import type { ApplianceState, VipState } from '../../src/controller/assignment.js';

/** mulberry32: a small, fast 32-bit PRNG; same seed, same sequence. */
export function prng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Loads of n VIPs ranked by Zipf's law with exponent s, shuffled, scaled so they sum to `total`. */
export function zipfLoads(n: number, s: number, total: number, random: () => number): number[] {
  const raw = Array.from({ length: n }, (_, rank) => 1 / (rank + 1) ** s);
  const sum = raw.reduce((a, b) => a + b, 0);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [raw[i], raw[j]] = [raw[j]!, raw[i]!];
  }
  return raw.map((x) => (x / sum) * total);
}

export interface ClusterOptions {
  appliances: number;
  vips: number;
  zipf: number;
  /** Capacity weights are drawn from this list. */
  capacities?: number[];
  /** Each VIP starts on an appliance chosen uniformly (true) or on the first quarter of them (false: skewed start). */
  uniformOwners?: boolean;
}

export function randomCluster(o: ClusterOptions, random: () => number): { appliances: ApplianceState[]; vips: VipState[] } {
  const capacities = o.capacities ?? [1];
  const appliances: ApplianceState[] = Array.from({ length: o.appliances }, (_, i) => ({
    name: `lb${i + 1}`,
    capacity: capacities[Math.floor(random() * capacities.length)]!,
    up: true,
    maintenance: false,
  }));
  const owners = o.uniformOwners === false ? Math.max(1, Math.floor(o.appliances / 4)) : o.appliances;
  const loads = zipfLoads(o.vips, o.zipf, 1_000_000, random);
  const vips: VipState[] = loads.map((load, i) => ({
    name: `vip${i + 1}`,
    owner: appliances[Math.floor(random() * owners)]!.name,
    load,
    pinned: false,
    lastMovedAt: null,
  }));
  return { appliances, vips };
}
