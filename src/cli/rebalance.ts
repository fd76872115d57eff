/** `vipshift rebalance [auto|manual]`: shows or sets whether the controller carries its plan out by itself. */
import { parseArgs } from 'node:util';
import { call } from '../api/contract.js';
import { controllerApi } from '../controller/api.js';
import { CONTROLLER_OPTIONS, controllerClient } from './controller-client.js';

export async function rebalance(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...CONTROLLER_OPTIONS, json: { type: 'boolean' } } });
  const [mode] = positionals;
  if (positionals.length > 1 || (mode !== undefined && mode !== 'auto' && mode !== 'manual')) {
    process.stderr.write('usage: vipshift rebalance [auto|manual] [--json]\n');
    return 2;
  }
  const client = controllerClient(values);
  const r = mode ? await call(client, controllerApi.setRebalance, { body: { mode } }) : await call(client, controllerApi.rebalance);
  process.stdout.write(values.json ? `${JSON.stringify(r)}\n` : `rebalance ${r.mode}\n`);
  return 0;
}
