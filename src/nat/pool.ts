/**
 * A VIP's pool at run time: each backend's state (up, down by its health check, drained by
 * weight 0) and the slot table the kernel schedules new connections by (scheduler.ts).
 * Pure functions of the configuration and the health the checks reported.
 */
import { SLOTS, slotTable } from './scheduler.js';
import { backendKey, type BackendConfig, type VipConfig } from '../config/appliance.js';

export type BackendState = 'up' | 'down' | 'drained';

/** What the health check last said of a backend (absent: up, nothing said yet). */
export interface Health {
  up: boolean;
  reason: string;
}

/** Where a slot sends a new connection; no port: the port the client asked for. */
export interface PoolTarget {
  address: string;
  port?: number;
}

/**
 * The pool as the kernel holds it: its targets (every configured backend by its index in the
 * VIP's list, then the sorry server if any) and every slot's target index. No slot, and
 * `unavailable`, when no backend takes new connections and there is no sorry server (new
 * connections are reset).
 */
export interface PoolTable {
  targets: PoolTarget[];
  slots: number[];
  unavailable: boolean;
}

export function backendState(b: BackendConfig, health: Health | undefined): { state: BackendState; reason: string } {
  if (health && !health.up) return { state: 'down', reason: health.reason };
  if (b.weight === 0) return { state: 'drained', reason: 'weight 0' };
  return { state: 'up', reason: health?.reason ?? 'not checked' };
}

const target = (t: { address: string; port?: number | undefined }): PoolTarget => (t.port === undefined ? { address: t.address } : { address: t.address, port: t.port });

/** The slot table of `vip` given the health of its backends (by backendKey). */
export function poolTable(vip: VipConfig, health: ReadonlyMap<string, Health> = new Map()): PoolTable {
  const scheduler = vip.scheduler ?? 'roundrobin';
  const targets = [...vip.backends, ...(vip.sorryServer ? [vip.sorryServer] : [])].map(target);
  const live = vip.backends.map((b, i) => ({ b, i })).filter(({ b }) => backendState(b, health.get(backendKey(b))).state === 'up');
  const slots = slotTable(scheduler, live.map(({ b }) => ({ key: backendKey(b), weight: b.weight })));
  if (slots.length > 0) return { targets, slots: slots.map((m) => live[m]!.i), unavailable: false };
  if (vip.sorryServer) return { targets, slots: Array.from({ length: SLOTS[scheduler] }, () => vip.backends.length), unavailable: false };
  return { targets, slots: [], unavailable: true };
}
