/**
 * `vipshift keeper --config FILE [--credentials DIR]`: the keeper of table copies on a server
 * (src/keeper). --credentials overrides the configuration's `pki` directory.
 * Runs until SIGTERM or SIGINT; copies live on in its SQLite database.
 */
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { loadCredentials } from '../api/auth.js';
import { loadKeeperConfig } from '../config/keeper.js';
import { Keeper } from '../keeper/keeper.js';
import { SockDiag } from '../netlink/sockdiag.js';
import { processRegistry } from '../metrics/metrics.js';
import { startMetricsListener } from '../metrics/listener.js';

const USAGE = 'usage: vipshift keeper --config FILE [--credentials DIR]\n';

export async function keeper(args: string[]): Promise<number> {
  let values: { config?: string; credentials?: string };
  try {
    ({ values } = parseArgs({ args, options: { config: { type: 'string' }, credentials: { type: 'string' } } }));
  } catch (err) {
    process.stderr.write(`vipshift keeper: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (!values.config) {
    process.stderr.write(`vipshift keeper: --config is required\n${USAGE}`);
    return 2;
  }
  const config = await loadKeeperConfig(values.config);
  const logger = pino({ name: 'keeper', base: { keeper: config.keeper } });
  const credentialsDir = values.credentials ?? config.pki;
  const credentials = loadCredentials(credentialsDir, config.keeper);
  const metrics = processRegistry();
  const k = await Keeper.start(config, { credentials, logger, metrics, ...(config.sockdiag ? { socketTable: new SockDiag() } : {}) });
  const scrape = await startMetricsListener({ config: config.metrics, apiListen: config.api.listen, credentialsDir, registry: metrics, logger, name: 'keeper' });
  logger.info({ listen: k.url, database: config.database, copies: k.status().copies, sockdiag: config.sockdiag }, 'keeper started');
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await scrape?.close();
  await k.close();
  logger.info('keeper stopped');
  return 0;
}
