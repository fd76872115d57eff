/** `vipshift pin VIP` / `vipshift unpin VIP`: a pinned VIP is never moved (not by the controller, not by migrate). */
import { parseArgs } from 'node:util';
import { call } from '../api/contract.js';
import { controllerApi } from '../controller/api.js';
import { CONTROLLER_OPTIONS, controllerClient } from './controller-client.js';

async function setPin(command: string, pinned: boolean, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { ...CONTROLLER_OPTIONS, json: { type: 'boolean' } } });
  if (positionals.length !== 1) {
    process.stderr.write(`usage: vipshift ${command} VIP [--json]\n`);
    return 2;
  }
  const vip = await call(controllerClient(values), controllerApi.pin, { params: { name: positionals[0]! }, body: { pinned } });
  process.stdout.write(values.json ? `${JSON.stringify(vip, null, 2)}\n` : `${vip.name} ${vip.pinned ? 'pinned to' : 'unpinned, on'} ${vip.owner}\n`);
  return 0;
}

export const pin = (args: string[]) => setPin('pin', true, args);
export const unpin = (args: string[]) => setPin('unpin', false, args);
