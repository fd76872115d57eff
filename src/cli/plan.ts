/** `vipshift plan [--json]`: what the controller would do now, and why (loads before and after). */
import { parseArgs } from 'node:util';
import { call } from '../api/contract.js';
import { controllerApi } from '../controller/api.js';
import type { PlanReportView } from '../controller/api.js';
import { CONTROLLER_OPTIONS, controllerClient } from './controller-client.js';

const pct = (x: number) => `${(x * 100).toFixed(1)} %`;

export async function plan(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { ...CONTROLLER_OPTIONS, json: { type: 'boolean' } } });
  const report = await call(controllerClient(values), controllerApi.plan);
  process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatPlan(report));
  return 0;
}

export function formatPlan(p: PlanReportView): string {
  const lines = [`plan (${p.algorithm}, rebalance ${p.mode}) at ${p.at}`];
  lines.push(`  imbalance ${pct(p.imbalance.before)} → ${pct(p.imbalance.after)} (threshold ${pct(p.input.settings.threshold)})`);
  lines.push('  APPLIANCE  CAPACITY  UP   MAINT  LOAD BEFORE  LOAD AFTER');
  for (const a of p.input.appliances) {
    const l = p.loads[a.name]!;
    lines.push(`  ${a.name.padEnd(10)} ${String(a.capacity).padStart(8)}  ${(a.up ? 'yes' : 'NO').padEnd(4)} ${(a.maintenance ? 'yes' : 'no').padEnd(6)} ${l.before.toFixed(1).padStart(11)}  ${l.after.toFixed(1).padStart(10)}`);
  }
  if (p.moves.length === 0) lines.push('  no moves');
  for (const m of p.moves) {
    lines.push(`  move ${m.vip} ${m.from} → ${m.to} (${m.reason}, load ${m.load.toFixed(1)}): ${m.why}`);
    lines.push(`       ${Object.entries(m.loads).map(([a, l]) => `${a} ${l.before.toFixed(1)} → ${l.after.toFixed(1)}`).join(', ')}`);
  }
  for (const w of p.waiting) lines.push(`  waiting ${w.vip}: ${w.reason}`);
  for (const n of p.notes) lines.push(`  note: ${n}`);
  if (p.holdingBack) lines.push(`  not carried out now: ${p.holdingBack}`);
  else if (p.mode === 'manual' && p.moves.length > 0) lines.push('  rebalance is manual: nothing is carried out (vipshift migrate, or vipshift rebalance auto)');
  return `${lines.join('\n')}\n`;
}
