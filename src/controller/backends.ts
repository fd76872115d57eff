/**
 * What the controller learns of the backends from its polls: each appliance reports every
 * backend's health check (agent-api.ts); a backend whose state changed since the last answer
 * (or that went down and came back in between: its transitions count moved) is announced in
 * the controller's log, so one place tells what every appliance's checks said.
 */
import type { AgentStatus } from '../appliance/agent-api.js';

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
