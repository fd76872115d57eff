/** `vipshift status [--json]`: who owns which VIP, each appliance's mode table and counters. */
import { parseArgs } from 'node:util';
import { call } from '../api/contract.js';
import { controllerApi } from '../controller/api.js';
import type { ControlPlaneStatus } from '../controller/controller.js';
import type { SiteStatusView } from '../controller/api.js';
import { CONTROLLER_OPTIONS, controllerClient } from './controller-client.js';

export async function status(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { ...CONTROLLER_OPTIONS, json: { type: 'boolean' } } });
  const site = await call(controllerClient(values), controllerApi.status);
  if (values.json) {
    process.stdout.write(`${JSON.stringify(site, null, 2)}\n`);
    return 0;
  }
  process.stdout.write(formatStatus(site));
  return 0;
}

export function formatStatus(site: SiteStatusView): string {
  const lines = [...formatControllers(site.controllers), `rebalance ${site.rebalance}`, 'VIP      OWNER  MODE       ENTRIES   PACKETS/S     BYTES/S  NEW CONN/S  PINNED'];
  const rate = (x: number | undefined, width: number) => (x === undefined ? '-' : x.toFixed(1)).padStart(width);
  for (const v of site.vips) {
    lines.push(
      `${v.name.padEnd(8)} ${v.owner.padEnd(6)} ${v.mode.padEnd(10)} ${String(v.entries).padStart(7)}  ${rate(v.traffic?.packetsPerSecond, 10)}  ${rate(v.traffic?.bytesPerSecond, 10)}  ${rate(v.traffic?.newConnectionsPerSecond, 10)}  ${v.pinned ? 'yes' : ''}`,
    );
  }
  for (const a of site.appliances) {
    lines.push('', `${a.name} (capacity ${a.capacity}${a.up ? '' : ', DOWN'}${a.maintenance ? ', in maintenance' : ''})${a.reachable ? '' : `  UNREACHABLE: ${a.error}`}`);
    if (!a.reachable) continue;
    const t = a.conntrack;
    if (t) lines.push(`  conntrack table ${t.entries} of ${t.max} (headroom ${t.headroom})${t.full ? ', FULL: new connections refused' : ''}; refused ${t.refused}, early-dropped ${t.earlyDropped}, creates failed ${t.createsFailed}`);
    lines.push('  VIP      MODE       ENTRIES  PACKETS    HELD  RELEASED  OVERFLOWED  REJECTED');
    for (const v of a.vips) {
      lines.push(
        `  ${v.name.padEnd(8)} ${v.mode.padEnd(10)} ${String(v.entries).padStart(7)}  ${String(v.packets).padStart(7)}  ${String(v.held).padStart(6)}  ${String(v.released).padStart(8)}  ${String(v.overflowed).padStart(10)}  ${String(v.rejected).padStart(8)}`,
      );
    }
  }
  return `${lines.join('\n')}\n`;
}

/** The controllers and their store: who leads, who follows, etcd's members. */
export function formatControllers(c: ControlPlaneStatus | undefined): string[] {
  if (!c) return [];
  if (c.store === 'sqlite') return [`controller ${c.self} (sqlite, sole leader)`];
  const lines = [`controllers (etcd${c.epoch !== null ? `, epoch ${c.epoch}` : ''}; ${c.elections} leader change(s) seen by ${c.self})`];
  const names = new Set([...c.controllers.map((x) => x.name), ...(c.leader ? [c.leader.name] : [])]);
  for (const name of [...names].sort()) {
    const api = c.controllers.find((x) => x.name === name)?.api ?? c.leader?.api ?? '';
    lines.push(`  ${name.padEnd(8)} ${(c.leader?.name === name ? 'LEADER' : 'follower').padEnd(9)} ${api}${name === c.self ? '  (answering)' : ''}`);
  }
  if (!c.leader) lines.push('  NO LEADER: election under way, or etcd has lost its quorum (no migration can start)');
  for (const m of c.etcd ?? []) {
    lines.push(`  etcd ${m.endpoint.padEnd(26)} ${m.healthy ? `healthy${m.leader ? ', raft leader' : ''}, ${m.version}` : `UNHEALTHY: ${m.error}`}`);
  }
  return lines;
}
