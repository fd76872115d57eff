/**
 * `vipshift controller --config FILE [--credentials DIR]`: the controller process — the
 * site's inventory and the migrations, behind its authenticated API.
 */
import { rm } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { Authenticator, loadCredentials } from '../api/auth.js';
import { ApiClient } from '../api/client.js';
import { createApiServer } from '../api/server.js';
import { AgentClient } from '../controller/agent-client.js';
import { controllerConfigSchema } from '../controller/config.js';
import { controllerRoutes } from '../controller/routes.js';
import { Controller } from '../controller/controller.js';
import { loadConfigFile } from '../nat/config.js';

const USAGE = 'usage: vipshift controller --config FILE [--credentials DIR]\n';

export async function controller(args: string[]): Promise<number> {
  let values: { config?: string; credentials?: string };
  try {
    ({ values } = parseArgs({ args, options: { config: { type: 'string' }, credentials: { type: 'string' } } }));
  } catch (err) {
    process.stderr.write(`vipshift controller: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (!values.config) {
    process.stderr.write(`vipshift controller: --config is required\n${USAGE}`);
    return 2;
  }
  const config = await loadConfigFile(values.config, controllerConfigSchema);
  const credentials = loadCredentials(values.credentials ?? '/var/lib/vipshift/credentials', config.controller);
  const logger = pino({ name: 'controller' });
  const agents = new Map(
    config.appliances.map((a) => [a.name, new AgentClient(a.name, a.api, new ApiClient(a.api, credentials, { peer: a.name, timeoutMs: 30_000 }))]),
  );
  const site = new Controller(config, agents, logger);
  await site.reconcile();
  // One authenticator for both listeners, so a nonce seen on one is a replay on the other.
  const authenticator = new Authenticator(credentials);
  const serve = () => createApiServer({ name: 'controller', routes: controllerRoutes(site), authenticator, logger });
  const server = serve();
  await server.listen(config.api.listen);
  // A local socket for the operator's CLI on the same box (in the lab: from the host).
  const local = config.api.socket ? serve() : undefined;
  if (config.api.socket) {
    await rm(config.api.socket, { force: true });
    await local?.listen({ path: config.api.socket });
  }
  logger.info({ api: server.url }, 'controller ready');
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await server.close();
  await local?.close();
  return 0;
}
