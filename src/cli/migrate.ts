/**
 * `vipshift migrate VIP --to APPLIANCE [--json] [--abort-at STEP]`: asks the controller to
 * move a VIP with its connections, waits for the end, and prints each step's time.
 */
import { parseArgs } from 'node:util';
import { call } from '../api/contract.js';
import { controllerApi } from '../controller/api.js';
import { PHASES, type MigrationProgress } from '../migration/migration.js';
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
  const abortAt = values['abort-at'];
  const drills = PHASES.filter((p) => p !== 'activate');
  if (abortAt !== undefined && !drills.includes(abortAt as (typeof drills)[number])) {
    process.stderr.write(`vipshift migrate: --abort-at: expected one of ${drills.join(', ')}, got '${abortAt}'\n${USAGE}`);
    return 2;
  }
  const body = {
    vip,
    to: values.to,
    wait: true,
    ...(abortAt ? { abortAt: abortAt as (typeof drills)[number] } : {}),
    ...(values['unsafe-skip-prepare'] ? { unsafeSkipPrepare: true } : {}),
  };
  const result = await call(controllerClient(values), controllerApi.migrate, { body });
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
