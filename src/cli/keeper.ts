/**
 * `vipshift keeper --config FILE [--credentials DIR]`: the keeper of table copies on a server
 * (src/keeper). --credentials overrides the configuration's `pki` directory.
 * Runs until SIGTERM or SIGINT; copies live on in its SQLite database.
 */
import { pino } from 'pino';
import { loadCredentials } from '../api/auth.js';
import { KeeperConfigFile, loadKeeperConfig } from '../config/keeper.js';
import { Keeper } from '../keeper/keeper.js';
import { ServerSockets } from '../keeper/server-sockets.js';
import { processRegistry } from '../metrics/metrics.js';
import { startMetricsListener } from '../metrics/listener.js';
import { configRequired, runDaemon } from './daemon.js';

const USAGE = 'usage: vipshift keeper --config FILE [--credentials DIR]\n';

export function keeper(args: string[]): Promise<number> {
  return runDaemon({ command: 'keeper', usage: USAGE, options: ['config', 'credentials'], missing: configRequired }, args, async (values) => {
    const config = await loadKeeperConfig(values.config!);
    const logger = pino({ name: 'keeper', base: { keeper: config.keeper } });
    const credentialsDir = values.credentials ?? config.pki;
    const credentials = loadCredentials(credentialsDir, config.keeper);
    const metrics = processRegistry();
    const k = await Keeper.start(config, { credentials, logger, metrics, configFile: new KeeperConfigFile(values.config!), ...(config.sockdiag ? { socketTable: new ServerSockets() } : {}) });
    const scrape = await startMetricsListener({ config: config.metrics, apiListen: config.api.listen, credentialsDir, registry: metrics, logger, name: 'keeper' });
    logger.info({ listen: k.url, database: config.database, copies: k.status().copies, sockdiag: config.sockdiag }, 'keeper started');
    return async () => {
      await scrape?.close();
      await k.close();
      logger.info('keeper stopped');
      return 0;
    };
  });
}
