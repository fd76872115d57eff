/** `vipshift drain APPLIANCE [--json]`: maintenance on, then every VIP moved off it (pinned ones stay and are named). */
import { parseArgs } from 'node:util';
import { call } from '../api/contract.js';
import { controllerApi } from '../controller/api.js';
import { CONTROLLER_OPTIONS, controllerClient } from './controller-client.js';
import { formatMigration } from './migrate.js';

export async function drain(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...CONTROLLER_OPTIONS, json: { type: 'boolean' } } });
  if (positionals.length !== 1) {
    process.stderr.write('usage: vipshift drain APPLIANCE [--json]\n');
    return 2;
  }
  const appliance = positionals[0]!;
  const result = await call(controllerClient(values), controllerApi.drain, { params: { name: appliance } });
  if (values.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else {
    for (const m of result.migrations) process.stdout.write(formatMigration(m));
    for (const w of result.waiting) process.stdout.write(`waiting ${w.vip}: ${w.reason}\n`);
    process.stdout.write(result.remaining.length === 0 ? `${appliance} is drained (in maintenance)\n` : `${appliance} still owns ${result.remaining.join(', ')}\n`);
  }
  return result.remaining.length === 0 ? 0 : 1;
}
