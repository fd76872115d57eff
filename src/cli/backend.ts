/**
 * `vipshift backend add|remove|weight|drain VIP ADDRESS[:PORT] [--weight N]` and
 * `vipshift reload [--appliance NAME]`: through the controller, on every appliance (each
 * applies the change as one nft transaction and writes it to its own configuration file) and,
 * for a backend change, every keeper that has the VIP (written to its file too).
 * Exit 0 when every box applied it, 1 when one refused or did not answer.
 */
import { parseArgs } from 'node:util';
import { call } from '../api/contract.js';
import { controllerApi } from '../controller/api.js';
import { parseBackendName, type BackendAction } from '../config/edit.js';
import { CONTROLLER_OPTIONS, controllerClient } from './controller-client.js';

const ACTIONS: readonly BackendAction[] = ['add', 'remove', 'weight', 'drain'];
const BACKEND_USAGE = 'usage: vipshift backend add|remove|weight|drain VIP ADDRESS[:PORT] [--weight N] [--json]\n';

/** Each appliance's answer: ok and its result, or refused and why. */
function report<T>(outcomes: { appliance: string; ok: boolean; result?: T | undefined; error?: string | undefined }[], json: boolean, ok: (result: T | undefined) => string): number {
  if (json) process.stdout.write(`${JSON.stringify(outcomes, null, 2)}\n`);
  else for (const o of outcomes) process.stdout.write(`${o.appliance}: ${o.ok ? ok(o.result) : `refused: ${o.error}`}\n`);
  return outcomes.length > 0 && outcomes.every((o) => o.ok) ? 0 : 1;
}

export async function backend(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, allowPositionals: true, options: { ...CONTROLLER_OPTIONS, weight: { type: 'string' }, json: { type: 'boolean' } } });
  } catch (err) {
    process.stderr.write(`vipshift backend: ${(err as Error).message}\n${BACKEND_USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  const [action, vip, name] = positionals;
  if (positionals.length !== 3 || !ACTIONS.includes(action as BackendAction)) {
    process.stderr.write(BACKEND_USAGE);
    return 2;
  }
  let target: { address: string; port?: number };
  try {
    target = parseBackendName(name!);
  } catch (err) {
    process.stderr.write(`vipshift backend: ${(err as Error).message}\n`);
    return 2;
  }
  const weight = values.weight === undefined ? undefined : Number(values.weight);
  if (weight !== undefined && !Number.isInteger(weight)) {
    process.stderr.write(`vipshift backend: --weight: expected a whole number, got '${values.weight}'\n`);
    return 2;
  }
  if (action === 'weight' && weight === undefined) {
    process.stderr.write(`vipshift backend weight: --weight N is required\n${BACKEND_USAGE}`);
    return 2;
  }
  const body = { action, ...target, ...(weight === undefined ? {} : { weight }) };
  const answer = await call(controllerClient(values), controllerApi.backends, { params: { name: vip! }, body });
  if (values.json) {
    process.stdout.write(`${JSON.stringify(answer, null, 2)}\n`);
  } else {
    report(answer.appliances, false, (r) => {
      const b = r?.backends.find((x) => x.address === target.address && (target.port === undefined || x.port === target.port));
      return action === 'remove' ? `${name} removed from ${vip}` : b ? `${name} of ${vip}: weight ${b.weight}, ${b.state}` : `${action} done`;
    });
    for (const k of answer.keepers) process.stdout.write(`keeper ${k.keeper}: ${!k.ok ? `refused: ${k.error}` : k.skipped ? `nothing to change (${k.skipped})` : 'written'}\n`);
  }
  const boxes = [...answer.appliances, ...answer.keepers];
  return answer.appliances.length > 0 && boxes.every((o) => o.ok) ? 0 : 1;
}

export async function reload(args: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { ...CONTROLLER_OPTIONS, appliance: { type: 'string' }, json: { type: 'boolean' } } });
  } catch (err) {
    process.stderr.write(`vipshift reload: ${(err as Error).message}\nusage: vipshift reload [--appliance NAME] [--json]\n`);
    return 2;
  }
  const { values } = parsed;
  const { appliances } = await call(controllerClient(values), controllerApi.reload, { body: values.appliance === undefined ? {} : { appliance: values.appliance } });
  return report(appliances, values.json ?? false, (r) => {
    if (!r) return 'reloaded';
    const list = (xs: string[]) => (xs.length ? xs.join(',') : '-');
    return `reloaded: VIPs added ${list(r.added)}, removed ${list(r.removed)}, changed ${list(r.changed)}`;
  });
}
