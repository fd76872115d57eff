/**
 * `vipshift migrate VIP --to APPLIANCE [--json] [--abort-at STEP]`: asks the controller to
 * move a VIP with its connections, waits for the end, and prints each step's time.
 */
import { parseArgs } from 'node:util';
import type { MigrationProgress } from '../migration/migration.js';
import { CONTROLLER_OPTIONS, controllerClient } from './controller-client.js';

const USAGE =
  'usage: vipshift migrate VIP --to APPLIANCE [--json]\n' +
  '       drills: [--abort-at precopy|prepare|move_address|move_entries] [--unsafe-skip-prepare (connections see resets)]\n';

export async function migrateCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { ...CONTROLLER_OPTIONS, to: { type: 'string' }, json: { type: 'boolean' }, 'abort-at': { type: 'string' }, 'unsafe-skip-prepare': { type: 'boolean' } },
  });
  const [vip] = positionals;
  if (!vip || !values.to || positionals.length > 1) {
    process.stderr.write(USAGE);
    return 2;
  }
  const body = {
    vip,
    to: values.to,
    wait: true,
    ...(values['abort-at'] ? { abortAt: values['abort-at'] } : {}),
    ...(values['unsafe-skip-prepare'] ? { unsafeSkipPrepare: true } : {}),
  };
  const result = await controllerClient(values).post<MigrationProgress>('/v1/migrations', body);
  if (values.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else process.stdout.write(formatMigration(result));
  return result.state === 'done' && !result.error ? 0 : 1;
}

export function formatMigration(m: MigrationProgress): string {
  const lines = [`migration ${m.id}: ${m.vip} ${m.from} → ${m.to}: ${m.state}${m.error ? ` (${m.error})` : ''}`];
  for (const [step, ms] of Object.entries(m.steps)) lines.push(`  ${step.replace(/_ms$/, '').padEnd(14)} ${ms.toFixed(1).padStart(9)} ms`);
  lines.push(`  ${'total'.padEnd(14)} ${(m.totalMs ?? 0).toFixed(1).padStart(9)} ms`);
  if (m.cleanupMs !== undefined) lines.push(`  ${'then cleanup'.padEnd(14)} ${m.cleanupMs.toFixed(1).padStart(9)} ms  (${m.from} deletes its old entries)`);
  lines.push(`  entries moved ${m.entries.moved} of ${m.entries.total}; held packets released in order: ${m.released}`);
  return `${lines.join('\n')}\n`;
}
