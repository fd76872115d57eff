/**
 * `vipshift controller --config FILE [--credentials DIR]`: the controller process — the
 * site's inventory and the migrations, behind its authenticated API. With `store: sqlite`
 * (the default) it leads alone; with `store: etcd` it runs beside the other controllers of
 * the site and acts only while elected.
 */
import { rm } from 'node:fs/promises';
import { createLogger } from '../log/logger.js';
import { Authenticator, DEFAULT_CREDENTIALS_DIR, loadCredentials } from '../api/auth.js';
import { ApiClient } from '../api/client.js';
import { createApiServer } from '../api/server.js';
import { AgentClient } from '../controller/agent-client.js';
import { loadControllerConfig } from '../config/controller.js';
import { KeeperClient } from '../keeper/client.js';
import type { BackendChange } from '../config/edit.js';
import { CONTROLLER_ROLES, controllerRoutes } from '../controller/routes.js';
import { Controller, PAUSE_ENV, pauseFromEnv } from '../controller/controller.js';
import { SqliteStore } from '../controller/sqlite-store.js';
import { EtcdCluster, EtcdLeadership, EtcdStore } from '../controller/etcd-store.js';
import type { ControllerStore } from '../controller/store.js';
import { ControllerMetrics } from '../controller/metrics.js';
import { metricsRoute, processRegistry } from '../metrics/metrics.js';
import { startMetricsListener } from '../metrics/listener.js';
import { configRequired, runDaemon, type Stop } from './daemon.js';

const USAGE = 'usage: vipshift controller --config FILE [--credentials DIR]\n';

export function controller(args: string[]): Promise<number> {
  return runDaemon({ command: 'controller', usage: USAGE, options: ['config', 'credentials'], missing: configRequired }, args, (values) => start(values.config!, values.credentials));
}

async function start(configFile: string, credentialsOption: string | undefined): Promise<Stop> {
  const config = await loadControllerConfig(configFile);
  const credentialsDir = credentialsOption ?? DEFAULT_CREDENTIALS_DIR;
  const credentials = loadCredentials(credentialsDir, config.controller);
  const logger = createLogger({ name: 'controller' });
  const self = { name: config.controller, api: `http://${config.api.listen}` };
  const etcd = config.store === 'sqlite' ? undefined : new EtcdCluster(config.store.etcd);
  const leadership = etcd && new EtcdLeadership(etcd, self, logger.child({ part: 'election' }));
  const agents = new Map(
    config.appliances.map((a) => [
      a.name,
      new AgentClient(a.name, a.api, new ApiClient(a.api, credentials, { peer: a.name, timeoutMs: 30_000 }), leadership),
    ]),
  );
  const keepers = new Map(
    config.keepers.map((k) => {
      const client = new KeeperClient(k.api, credentials, { peer: k.name });
      return [k.name, { name: k.name, changeBackend: (vip: string, change: BackendChange) => client.changeBackend(vip, change) }];
    }),
  );
  const pause = pauseFromEnv(process.env[PAUSE_ENV], logger);
  let store: ControllerStore;
  if (etcd && leadership) {
    const onEtcd = new EtcdStore(etcd, leadership);
    // A store written by a newer vipshift is refused before this controller campaigns.
    await onEtcd.checkSchema();
    store = onEtcd;
  } else store = new SqliteStore(config.journal);
  const site = new Controller(config, agents, store, logger, {
    keepers,
    ...(pause ? { pause } : {}),
    ...(leadership && etcd ? { leadership, controlPlane: { controllers: () => leadership.controllers(), health: () => etcd.health() } } : {}),
  });
  const metrics = processRegistry();
  const migrationMetrics = new ControllerMetrics(metrics, () => site.runningMigrations(), () => ({ leading: site.leading(), elections: leadership?.elections ?? 1 }));
  site.onFinished = (final) => migrationMetrics.observe(final);
  // One authenticator for both listeners, so a nonce seen on one is a replay on the other.
  const authenticator = new Authenticator(credentials);
  const serve = () => createApiServer({ name: 'controller', routes: [...controllerRoutes(site), metricsRoute(metrics)], roles: CONTROLLER_ROLES, authenticator, logger, metrics });
  const server = serve();
  await server.listen(config.api.listen);
  // A local socket for the operator's CLI on the same box (in the lab: from the host).
  const local = config.api.socket ? serve() : undefined;
  if (config.api.socket) {
    await rm(config.api.socket, { force: true });
    await local?.listen({ path: config.api.socket });
  }
  const scrape = await startMetricsListener({ config: config.metrics, apiListen: config.api.listen, credentialsDir, registry: metrics, logger, name: 'controller' });
  if (leadership) {
    // Leading and following are serialised: a term's start finishes before the next change.
    let change = Promise.resolve();
    leadership.onChange((leading) => {
      change = change.then(() =>
        leading ? site.lead().catch((err: Error) => logger.error({ err: err.message }, 'taking over as leader failed')) : site.follow(),
      );
    });
    leadership.start();
  } else {
    // Unfinished migrations of an earlier run are ended before anything else can move a VIP.
    await site.open();
    site.startLoops();
  }
  logger.info({ api: server.url, store: etcd ? config.store : config.journal, rebalance: await site.rebalanceMode() }, 'controller ready');
  return async () => {
    await server.close();
    await local?.close();
    await scrape?.close();
    await leadership?.stop();
    await site.stop();
    await store.close();
    etcd?.close();
    return 0;
  };
}
