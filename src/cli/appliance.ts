/**
 * `vipshift appliance --config FILE [--credentials DIR]`: the appliance process — the NAT
 * engine, the access table, the VIP addresses and the agent API the controller drives.
 */
import { parseArgs } from 'node:util';
import { createLogger } from '../log/logger.js';
import { Authenticator, DEFAULT_CREDENTIALS_DIR, loadCredentials } from '../api/auth.js';
import { createApiServer } from '../api/server.js';
import { Conntrack } from '../netlink/conntrack.js';
import { Addresses } from '../netlink/route.js';
import { AccessTableMirror } from '../nat/access-table-mirror.js';
import { AGENT_ROLES, agentRoutes, peerClients } from '../appliance/agent.js';
import { DirectAddressing, VrrpAddressing } from '../appliance/addressing.js';
import { Announcer } from '../appliance/announce.js';
import { Appliance } from '../appliance/appliance.js';
import { failoverWarnings, loadApplianceConfig } from '../config/appliance.js';
import { NatEngine } from '../nat/engine.js';
import { registerApplianceMetrics } from '../appliance/metrics.js';
import { metricsRoute, processRegistry } from '../metrics/metrics.js';
import { Failover } from '../appliance/failover.js';
import { Hooks, eventsRoute } from '../appliance/hooks.js';
import { EventBus } from '../log/events.js';
import { registerReplicationMetrics } from '../replication/metrics.js';
import { registerBfdMetrics, registerVrrpMetrics } from '../vrrp/metrics.js';
import { SpeakerProcess } from '../vrrp/process.js';

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
  const credentials = loadCredentials(values.credentials ?? DEFAULT_CREDENTIALS_DIR, config.appliance);
  const logger = createLogger({ name: 'appliance', base: { appliance: config.appliance } });
  const metrics = processRegistry();
  // The events of the box: the notify hooks run on them, `vipshift events` streams them.
  const events = new EventBus(config.appliance);
  const hooks = new Hooks(config.notify, logger.child({ part: 'hooks' }), metrics);
  hooks.attach(events);

  const { standby } = config.failover;
  for (const warning of failoverWarnings(config)) logger.warn({ config: values.config }, warning);
  const engine = new NatEngine();
  // A standby holds every VIP from the start: one becomes `normal` here only by a takeover
  // (its connections restored first) or a migration's step 4, never with an empty table.
  await engine.start(config, standby ? new Map(config.vips.map((v) => [v.name, 'migrating' as const])) : undefined);
  // 4,000 creates per sendmsg (~800 KB): a migration's import of 100,000 entries makes 25
  // round trips through this busy event loop instead of 100.
  const conntrack = new Conntrack({ batchRecords: 4000 });
  const addresses = new Addresses();
  const announcer = new Announcer();
  const direct = new DirectAddressing(config, addresses, (ifname, address) => announcer.announce(ifname, address));
  // The speaker runs in a child process of its own (src/vrrp/process.ts says why).
  const speaker = config.vrrp?.instances.length
    ? new SpeakerProcess([process.execPath, process.argv[1]!, 'vrrp', '--config', values.config, '--control'])
    : undefined;
  const addressing = speaker ? new VrrpAddressing(config, speaker, direct) : direct;
  // The mirror listens before any address is here, and fills itself from one dump.
  const mirror = new AccessTableMirror(conntrack, config.vips.map((v) => v.id), logger.child({ part: 'mirror' }));
  await mirror.start();
  const box = new Appliance(config, engine, conntrack, addressing, { vrrpState: () => speaker?.state() ?? [], bfdState: () => speaker?.bfdStatus(), mirror });
  // Replication listens before any address is here (conntrack reports only entries created
  // while someone listens); a VRRP takeover of a standby VIP installs the keepers' copies.
  const failover = new Failover({ config, credentials, appliance: box, conntrack, modes: () => engine.modeTable(), speaker, logger, events });
  failover.listen();
  if (speaker) {
    await speaker.start();
    // Without its speaker the appliance must not go on holding addresses nobody defends.
    speaker.once('exit', (err: Error) => {
      logger.error({ err: err.message }, 'the VRRP speaker died: stopping the appliance');
      process.kill(process.pid, 'SIGTERM');
    });
  }
  await box.start(standby ? (vip) => failover.takeover.becameMaster(vip) : undefined);
  await failover.start();

  const peerClient = peerClients(config.failover.peers, credentials);
  registerApplianceMetrics(metrics, () => box.status());
  registerReplicationMetrics(metrics, () => failover.replicator.status());
  if (speaker) {
    registerVrrpMetrics(speaker, metrics);
    registerBfdMetrics(speaker, metrics);
  }
  const server = createApiServer({ name: 'agent', routes: [...failover.routes(agentRoutes(box, peerClient, logger)), eventsRoute(events), metricsRoute(metrics)], roles: AGENT_ROLES, authenticator: new Authenticator(credentials), logger, metrics });
  await server.listen(config.api.listen);
  logger.info({ api: server.url, holdMethod: engine.holdMethod, vips: [...engine.modeTable().keys()] }, 'appliance ready');

  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  logger.info('stopping: giving up the VIP addresses and removing the ruleset');
  await server.close();
  await failover.stop();
  if (speaker) await speaker.stop(); // a master announces priority 0 and drops its addresses
  else for (const vip of config.vips) await box.releaseAddress(vip.name).catch(() => undefined);
  await engine.stop();
  hooks.detach();
  await hooks.idle();
  announcer.close();
  mirror.close();
  conntrack.close();
  return 0;
}
