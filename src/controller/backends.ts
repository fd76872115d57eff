/**
 * What the controller learns of the backends from its polls: each appliance reports every
 * backend's health check (agent-api.ts); a backend whose state changed since the last answer
 * (or that went down and came back in between: its transitions count moved) is announced in
 * the controller's log, so one place tells what every appliance's checks said.
 * And what it replays: an appliance whose backends differ from those last set through the
 * controller (it was away, or refused, when the change went out) is given the difference.
 */
import type { AgentStatus } from '../appliance/agent-api.js';
import type { BackendChange as BackendEdit } from '../config/edit.js';

export interface BackendChange {
  appliance: string;
  vip: string;
  backend: string;
  from: 'up' | 'down';
  to: 'up' | 'down';
  /** Transitions since the previous answer (2: down and back up again in between). */
  transitions: number;
  reason: string;
}

export function backendChanges(appliance: string, before: AgentStatus | undefined, after: AgentStatus): BackendChange[] {
  if (!before) return [];
  const previous = new Map<string, NonNullable<AgentStatus['vips'][number]['backends'][number]['check']>>();
  for (const v of before.vips) for (const b of v.backends) if (b.check) previous.set(`${v.name}|${b.address}|${b.port ?? ''}`, b.check);
  const changes: BackendChange[] = [];
  for (const v of after.vips) {
    for (const b of v.backends) {
      const was = previous.get(`${v.name}|${b.address}|${b.port ?? ''}`);
      if (!b.check || !was) continue;
      // A restarted appliance counts from 0 again: its state alone says whether it changed.
      const transitions = b.check.transitions >= was.transitions ? b.check.transitions - was.transitions : b.check.state === was.state ? 0 : 1;
      if (transitions === 0 && b.check.state === was.state) continue;
      changes.push({ appliance, vip: v.name, backend: b.port === undefined ? b.address : `${b.address}:${b.port}`, from: was.state, to: b.check.state, transitions, reason: b.check.reason });
    }
  }
  return changes;
}

/** A backend as configured: what a change through the controller sets, and what a poll reports. */
export interface ConfiguredBackend {
  address: string;
  /** Absent: the backend serves the VIP's ports. */
  port?: number;
  weight: number;
}

const backendKey = (b: { address: string; port?: number }) => `${b.address}|${b.port ?? ''}`;

/**
 * The changes that bring an appliance's backends of a VIP (`current`, from its poll) to those
 * last set through the controller (`desired`): the missing ones added, weights set, the others
 * removed — in that order, so that a pool never goes through fewer backends than both ends have.
 */
export function backendReplay(desired: readonly ConfiguredBackend[], current: readonly ConfiguredBackend[]): BackendEdit[] {
  const have = new Map(current.map((b) => [backendKey(b), b]));
  const want = new Set(desired.map(backendKey));
  const named = (b: ConfiguredBackend) => ({ address: b.address, ...(b.port === undefined ? {} : { port: b.port }) });
  const adds: BackendEdit[] = [];
  const weights: BackendEdit[] = [];
  for (const b of desired) {
    const now = have.get(backendKey(b));
    if (!now) adds.push({ action: 'add', ...named(b), weight: b.weight });
    else if (now.weight !== b.weight) weights.push({ action: 'weight', ...named(b), weight: b.weight });
  }
  const removes: BackendEdit[] = current.filter((b) => !want.has(backendKey(b))).map((b) => ({ action: 'remove', ...named(b) }));
  return [...adds, ...weights, ...removes];
}
