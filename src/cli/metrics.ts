/**
 * `vipshift metrics [--target URL] [--lab NAME] [--credentials DIR] [--identity ID]`: fetches
 * a process's Prometheus metrics through its authenticated API and prints the exposition
 * text, for scripts. Without --target: the controller (of the lab, with --lab).
 * In the lab, an appliance's agent is reached from inside the lab:
 *   ip netns exec vs-ctl vipshift metrics --target http://192.0.2.11:8441 --credentials /run/vipshift-lab/vs/credentials
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_CREDENTIALS_DIR } from '../api/auth.js';
import { ApiClient } from '../api/client.js';
import { DEFAULT_STATE_BASE } from '../lab/site.js';
import { METRICS_PATH } from '../metrics/metrics.js';
import { controllerClient, operatorCredentials } from './controller-client.js';

const USAGE = 'usage: vipshift metrics [--target URL] [--lab NAME] [--credentials DIR] [--identity ID]\n';

export async function metricsCommand(args: string[]): Promise<number> {
  let values: { target?: string; lab?: string; credentials?: string; identity?: string };
  try {
    ({ values } = parseArgs({ args, options: { target: { type: 'string' }, lab: { type: 'string' }, credentials: { type: 'string' }, identity: { type: 'string' } } }));
  } catch (err) {
    process.stderr.write(`vipshift metrics: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  let api: Pick<ApiClient, 'get' | 'close'>;
  try {
    if (values.target) {
      const dir = values.credentials ?? (values.lab ? path.join(DEFAULT_STATE_BASE, values.lab, 'credentials') : DEFAULT_CREDENTIALS_DIR);
      // The target says who it is (an appliance, the controller, a keeper); the client checks it is a cluster member.
      api = new ApiClient(values.target, operatorCredentials(dir, values.identity), { timeoutMs: 10_000 });
    } else api = controllerClient(values);
    const text = await api.get<string>(METRICS_PATH);
    process.stdout.write(text);
    api.close();
    return 0;
  } catch (err) {
    process.stderr.write(`vipshift metrics: ${(err as Error).message}\n`);
    return 1;
  }
}
