/**
 * `vipshift appliance --config FILE [--credentials DIR]`: the appliance process — the NAT
 * engine, the access table, the VIP addresses and the agent API the controller drives
 * (src/appliance/start.ts). It runs until SIGTERM or SIGINT.
 */
import { parseArgs } from 'node:util';
import { DEFAULT_CREDENTIALS_DIR } from '../api/auth.js';
import { startAppliance } from '../appliance/start.js';
import { loadApplianceConfig } from '../config/appliance.js';
import { createLogger } from '../log/logger.js';

const USAGE = 'usage: vipshift appliance --config FILE [--credentials DIR]\n';

export async function appliance(args: string[]): Promise<number> {
  let values: { config?: string; credentials?: string };
  try {
    ({ values } = parseArgs({ args, options: { config: { type: 'string' }, credentials: { type: 'string' } } }));
  } catch (err) {
    process.stderr.write(`vipshift appliance: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (!values.config) {
    process.stderr.write(`vipshift appliance: --config is required\n${USAGE}`);
    return 2;
  }
  const config = await loadApplianceConfig(values.config);
  const logger = createLogger({ name: 'appliance', base: { appliance: config.appliance } });
  const running = await startAppliance({
    config,
    configPath: values.config,
    credentialsDir: values.credentials ?? DEFAULT_CREDENTIALS_DIR,
    logger,
    speakerCommand: (configPath) => [process.execPath, process.argv[1]!, 'vrrp', '--config', configPath, '--control'],
    onFatal: (err) => {
      logger.error({ err: err.message }, 'the VRRP speaker died: stopping the appliance');
      process.kill(process.pid, 'SIGTERM');
    },
  });
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await running.stop();
  return 0;
}
