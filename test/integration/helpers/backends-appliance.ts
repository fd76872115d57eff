/**
 * Runs the Appliance (NAT engine, conntrack, direct addressing, its configuration file) in
 * the appliance namespace of the backends test. JSON lines: { id, op, args } in,
 * { id, ok, result | error } out (an error carries its name: ConfigError, ReconfigureError).
 */
import { createInterface } from 'node:readline';
import { Appliance } from '../../../src/appliance/appliance.js';
import { DirectAddressing } from '../../../src/appliance/addressing.js';
import { ApplianceConfigFile } from '../../../src/config/edit.js';
import { Conntrack } from '../../../src/netlink/conntrack.js';
import { Addresses } from '../../../src/netlink/route.js';
import { NatEngine } from '../../../src/nat/engine.js';

let engine: NatEngine | undefined;
let box: Appliance | undefined;
const conntrack = new Conntrack();
const addresses = new Addresses();

const ops: Record<string, (args: any) => Promise<unknown> | unknown> = {
  start: async ({ file }: { file: string }) => {
    const configFile = new ApplianceConfigFile(file);
    const { config } = await configFile.read();
    engine = new NatEngine();
    await engine.start(config);
    box = new Appliance(config, engine, conntrack, new DirectAddressing(config, addresses, () => undefined), { configFile });
    await box.start();
    return { holdMethod: engine.holdMethod };
  },
  status: () => box!.status(),
  setBackendHealth: ({ vip, address, port, up, reason }) => box!.setBackendHealth(vip, { address, port }, up, reason),
  changeBackend: ({ vip, change }) => box!.changeBackend(vip, change),
  reload: () => box!.reload(),
  modeTable: () => Object.fromEntries(engine!.modeTable()),
};

const rl = createInterface({ input: process.stdin });
rl.on('line', async (line) => {
  const { id, op, args } = JSON.parse(line) as { id: number; op: string; args: unknown };
  try {
    const fn = ops[op];
    if (!fn) throw new Error(`unknown op ${op}`);
    const result = await fn(args ?? {});
    process.stdout.write(`${JSON.stringify({ id, ok: true, result: result ?? null })}\n`);
  } catch (e) {
    process.stdout.write(`${JSON.stringify({ id, ok: false, error: `${(e as Error).name}: ${(e as Error).message}` })}\n`);
  }
});
rl.on('close', async () => {
  await engine?.stop().catch(() => undefined);
  conntrack.close();
  process.exit(0);
});
