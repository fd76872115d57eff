/**
 * `vipshift lab demo`: the main job of `make demo`. Brings the lab up, runs live
 * connections through vip1, migrates vip1 from lb1 to lb2 under that load, prints the
 * tables before and after with each step's time, and takes the lab down again.
 */
import { parseArgs } from 'node:util';
import { call } from '../api/contract.js';
import { controllerApi } from '../controller/api.js';
import { labDown, labUp } from '../lab/lab.js';
import { describeTraffic, startTraffic } from '../lab/traffic.js';
import { controllerClient } from './controller-client.js';
import { formatMigration } from './migrate.js';
import { formatStatus } from './status.js';

const say = (text: string) => process.stdout.write(`\n== ${text}\n`);

export async function demo(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      name: { type: 'string', default: 'demo' },
      connections: { type: 'string', default: '500' },
      vip: { type: 'string', default: 'vip1' },
      to: { type: 'string', default: 'lb2' },
    },
  });
  const name = values.name;
  const connections = Number(values.connections);
  say(`bringing up lab '${name}': client, router, lb1, lb2, srv1..srv3, controller (network namespaces)`);
  const up = await labUp({ name });
  process.stdout.write(`up in ${up.timings.totalMs} ms\n`);
  try {
    const vip = up.status.vips.find((v) => v.name === values.vip);
    if (!vip) throw new Error(`the lab has no VIP named ${values.vip}`);
    const controller = controllerClient({ lab: name });

    say(`${connections} TCP connections to ${vip.name} (${vip.address}:7, echo), one message every 20 ms each`);
    const traffic = startTraffic(`${name}-client`, { address: vip.address, port: 7, connections, intervalMs: 20, timeoutMs: 5000 });
    const established = await traffic.established;
    process.stdout.write(`${established.established} established\n`);
    await new Promise((r) => setTimeout(r, 1000));

    say('before: owners, mode tables (patent figs. 7, 8) and access-table sizes');
    process.stdout.write(formatStatus(await call(controller, controllerApi.status)));

    say(`migrating ${vip.name} ${vip.owner} → ${values.to} under load: prepare, move address, move entries, activate`);
    const migration = await call(controller, controllerApi.migrate, { body: { vip: vip.name, to: values.to, wait: true } });
    process.stdout.write(formatMigration(migration));

    await new Promise((r) => setTimeout(r, 1000));
    const summary = await traffic.stop();
    say('the connections, through the migration');
    process.stdout.write(describeTraffic(summary));

    say('after');
    process.stdout.write(formatStatus(await call(controller, controllerApi.status)));
    const errors = Object.values(summary.errors).reduce((a, b) => a + b, 0);
    const ok = migration.state === 'done' && !migration.error && errors === 0;
    say(ok ? `done: ${vip.name} moved with ${summary.connections.ok} live connections and not one reset` : 'FAILED: see above');
    return ok ? 0 : 1;
  } finally {
    say(`taking lab '${name}' down`);
    await labDown({ name });
  }
}
