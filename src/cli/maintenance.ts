/** `vipshift maintenance APPLIANCE on|off`: an appliance in maintenance gets no VIP, and auto rebalancing drains it. */
import { parseArgs } from 'node:util';
import { call } from '../api/contract.js';
import { controllerApi } from '../controller/api.js';
import { CONTROLLER_OPTIONS, controllerClient } from './controller-client.js';

export async function maintenance(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...CONTROLLER_OPTIONS, json: { type: 'boolean' } } });
  const [appliance, state] = positionals;
  if (positionals.length !== 2 || !appliance || (state !== 'on' && state !== 'off')) {
    process.stderr.write('usage: vipshift maintenance APPLIANCE on|off [--json]\n');
    return 2;
  }
  const a = await call(controllerClient(values), controllerApi.maintenance, { params: { name: appliance }, body: { on: state === 'on' } });
  process.stdout.write(values.json ? `${JSON.stringify(a, null, 2)}\n` : `${a.name}: maintenance ${a.maintenance ? 'on' : 'off'}\n`);
  return 0;
}
