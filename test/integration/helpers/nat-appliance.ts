/**
 * Runs a NatEngine inside an appliance network namespace for the integration tests (the hold
 * queue's netlink socket lives in the namespace of its process). Requests are JSON lines on
 * stdin: { id, op, args }; answers are JSON lines on stdout: { id, ok, result | error }.
 */
import { createInterface } from 'node:readline';
import { parseApplianceConfig } from '../../../src/config/appliance.js';
import { NatEngine } from '../../../src/nat/engine.js';

let engine = new NatEngine();

const ops: Record<string, (args: any) => Promise<unknown> | unknown> = {
  start: async ({ config }: { config: unknown }) => {
    engine = new NatEngine();
    await engine.start(parseApplianceConfig(JSON.stringify(config), 'test.json'));
    return { holdMethod: engine.holdMethod };
  },
  setMode: ({ vip, mode }) => engine.setMode(vip, mode),
  release: ({ vip }) => engine.release(vip),
  discard: ({ vip }) => engine.discard(vip),
  counters: ({ vip }) => engine.counters(vip),
  modeTable: () => Object.fromEntries(engine.modeTable()),
  holdHealth: () => engine.holdHealth(),
  stop: () => engine.stop(),
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
    process.stdout.write(`${JSON.stringify({ id, ok: false, error: (e as Error).message })}\n`);
  }
});
rl.on('close', async () => {
  await engine.stop().catch(() => undefined);
  process.exit(0);
});
