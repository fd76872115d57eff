/**
 * Runs the appliance as `vipshift appliance` composes it (startAppliance: NAT engine, access
 * table mirror, replication to the keepers, health checks, its configuration file) in the
 * appliance namespace of the backends test. JSON lines: { id, op, args } in,
 * { id, ok, result | error } out (an error carries its name: ConfigError, ReconfigureError).
 */
import { createInterface } from 'node:readline';
import { pino } from 'pino';
import { loadCredentials } from '../../../src/api/auth.js';
import { startAppliance, type RunningAppliance } from '../../../src/appliance/start.js';
import { ApplianceConfigFile } from '../../../src/config/edit.js';
import { KeeperClient } from '../../../src/keeper/client.js';
import { RECORD_SIZE, readRecord } from '../../../src/netlink/entry-record.js';

let running: RunningAppliance | undefined;
let credentials = '';
const box = () => running!.appliance;

const ops: Record<string, (args: any) => Promise<unknown> | unknown> = {
  start: async ({ file, credentialsDir }: { file: string; credentialsDir: string }) => {
    credentials = credentialsDir;
    const configFile = new ApplianceConfigFile(file);
    const { config } = await configFile.read();
    running = await startAppliance({
      config,
      configPath: file,
      credentialsDir,
      logger: pino({ level: 'warn' }, pino.destination(2)),
      speakerCommand: () => [],
      onFatal: (err) => {
        process.stderr.write(`fatal: ${err.message}\n`);
        process.exit(1);
      },
      configFile,
    });
    return null;
  },
  status: () => box().status(),
  setBackendHealth: ({ vip, address, port, up, reason }) => box().setBackendHealth(vip, { address, port }, up, reason),
  changeBackend: ({ vip, change }) => box().changeBackend(vip, change),
  reload: () => box().reload(),
  modeTable: async () => Object.fromEntries((await box().status()).vips.filter((v) => v.mode !== 'absent').map((v) => [v.name, v.mode])),
  /** The VIP's entries as the appliance reads them (the mirror, when it vouches), by client port. */
  entries: async ({ vip }: { vip: string }) => {
    const ports: number[] = [];
    const r = await box().readRecords(box().vip(vip).id, (chunk) => {
      for (let o = 0; o < chunk.length; o += RECORD_SIZE) ports.push(readRecord(chunk, o).client.port);
    });
    return { from: r.from, clientPorts: ports.sort((a, b) => a - b) };
  },
  /** A keeper's copies of a VIP (by its address), by client port, read as this appliance. */
  keeperCopies: async ({ url, address }: { url: string; address: string }) => {
    const client = new KeeperClient(url, loadCredentials(credentials, box().config.appliance));
    try {
      const copies = await client.copies(address, 'copies');
      return Array.from({ length: copies.length / RECORD_SIZE }, (_, i) => readRecord(copies, i * RECORD_SIZE).client.port).sort((a, b) => a - b);
    } finally {
      client.close();
    }
  },
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
  await running?.stop().catch(() => undefined);
  process.exit(0);
});
