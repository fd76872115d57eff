/**
 * One appliance process: the NAT engine, the access table and its mirror, the VIP addresses
 * (directly or through the VRRP speaker), replication and failover, and the agent API the
 * controller drives. `startAppliance()` brings them up in the one order that loses no
 * connection and no event; `stop()` takes them down in reverse.
 */
import path from 'node:path';
import { Authenticator, loadCredentials } from '../api/auth.js';
import { createApiServer, type ApiServer } from '../api/server.js';
import { failoverWarnings, type ApplianceConfig } from '../config/appliance.js';
import type { ApplianceConfigFile } from '../config/edit.js';
import type { Logger } from 'pino';
import { metricsRoute, processRegistry } from '../metrics/metrics.js';
import { startMetricsListener } from '../metrics/listener.js';
import { AccessTableMirror } from '../nat/access-table-mirror.js';
import { TableWatch } from './table-watch.js';
import { NatEngine, type ReconfigureResult } from '../nat/engine.js';
import { Conntrack } from '../netlink/conntrack.js';
import { Addresses } from '../netlink/route.js';
import { registerReplicationMetrics } from '../replication/metrics.js';
import { registerBfdMetrics, registerVrrpMetrics } from '../vrrp/metrics.js';
import { SpeakerProcess } from '../vrrp/process.js';
import { DirectAddressing, VrrpAddressing } from './addressing.js';
import { AGENT_ROLES, EpochFence, FileEpochStore, agentRoutes, peerClients } from './agent.js';
import { Announcer } from './announce.js';
import { Appliance, type ConfigFollower, READ_WAIT_MS } from './appliance.js';
import { Failover, httpSources } from './failover.js';
import { backendChecks } from './health.js';
import { healthTargets } from '../health/targets.js';
import { Hooks, eventsRoute } from './hooks.js';
import { registerApplianceMetrics, registerRefusedEntriesMetrics } from './metrics.js';
import { EventBus } from '../log/events.js';

export interface ApplianceStartOptions {
  config: ApplianceConfig;
  /** The configuration file, handed to the VRRP speaker's child process. */
  configPath: string;
  credentialsDir: string;
  logger: Logger;
  /** How the speaker's child process is started: this program with `vrrp --config FILE --control`. */
  speakerCommand: (configPath: string) => string[];
  /** Called when a part the appliance cannot run without has died (the speaker). */
  onFatal: (err: Error) => void;
  /** Reads the configuration again for a reload (SIGHUP, `vipshift reload`). */
  loadConfig?: () => Promise<ApplianceConfig>;
  /** The configuration file backend changes made at run time are written into (absent: refused). */
  configFile?: ApplianceConfigFile;
}

export interface RunningAppliance {
  appliance: Appliance;
  server: ApiServer;
  stop(): Promise<void>;
}

export async function startAppliance(options: ApplianceStartOptions): Promise<RunningAppliance> {
  const { config, logger } = options;
  const credentials = loadCredentials(options.credentialsDir, config.appliance);
  const metrics = processRegistry();
  // The events of the box: the notify hooks run on them, `vipshift events` streams them.
  const events = new EventBus(config.appliance);
  const hooks = new Hooks(config.notify, logger.child({ part: 'hooks' }), metrics);
  hooks.attach(events);

  const { standby } = config.failover;
  for (const warning of failoverWarnings(config)) logger.warn({ config: options.configPath }, warning);
  const engine = new NatEngine();
  // A standby holds every VIP from the start: one becomes `normal` here only by a takeover
  // (its connections restored first) or a migration's step 4, never with an empty table.
  await engine.start(config, standby ? new Map(config.vips.map((v) => [v.name, 'migrating' as const])) : undefined);
  // 500 creates or deletes per sendmsg: the kernel runs a sendmsg's batch without a preemption
  // point (a PREEMPT_NONE kernel, the lab's), and 4,000 creates or 1,000 deletes with their
  // events held a CPU for ~100 ms on a loaded box (perf sched), long enough to starve the VRRP
  // speaker past its peer's BFD detection time; 500 cost next to nothing in throughput
  // (bench/conntrack.ts: creates at 500 / 1,000 per batch 208 / 205 ms per 100,000).
  const conntrack = new Conntrack({ batchRecords: 500 });
  const addresses = new Addresses();
  const announcer = new Announcer();
  const direct = new DirectAddressing(config, addresses, (ifname, address) => announcer.announce(ifname, address));
  // The speaker runs in a child process of its own (src/vrrp/process.ts says why).
  const speaker = config.vrrp?.instances.length ? new SpeakerProcess(options.speakerCommand(options.configPath)) : undefined;
  const addressing = speaker ? new VrrpAddressing(config, speaker, direct) : direct;
  // The mirror listens before any address is here, and fills itself from one dump.
  const mirror = new AccessTableMirror(conntrack, config.vips.map((v) => v.id), logger.child({ part: 'mirror' }));
  await mirror.start();
  const table = new TableWatch(conntrack, logger.child({ part: 'conntrack' }));
  table.start();
  // Every VIP's backends are checked here, owned or not: a takeover starts with the right pool.
  const checks = backendChecks({
    appliance: config.appliance,
    vips: config.vips,
    sink: { setBackendHealth: (vip, backend, up, reason) => box.setBackendHealth(vip, backend, up, reason) },
    logger: logger.child({ part: 'health' }),
    events,
    registry: metrics,
  });
  // The one reconfiguration path (a reload, SIGHUP, a backend change): the appliance applies
  // the NAT engine's part and the addresses, then each of these in turn. Whatever else is
  // built from the file (the API, VRRP, flood limits, hold, replication's settings...) cannot
  // change at run time: the appliance refuses such a reload, naming the field.
  const follow = (part: string, work: (next: ApplianceConfig, change: ReconfigureResult) => void | Promise<void>) => async (next: ApplianceConfig, change: ReconfigureResult) => {
    try {
      await work(next, change);
    } catch (err) {
      logger.error({ part, err: (err as Error).message }, 'could not follow the configuration change');
    }
  };
  const followers: ConfigFollower[] = [
    // The mirror keeps the VIPs' tables: one added is filled from a dump of its mark alone,
    // not waited for (its reads dump until then).
    { follow: follow('mirror', (next) => void mirror.setMarks(next.vips.map((v) => v.id))) },
    // The checks follow the backends (a kept one keeps its state).
    { follow: follow('health', (next) => checks.setTargets(healthTargets(next.vips))) },
  ];
  const box: Appliance = new Appliance(config, engine, conntrack, addressing, {
    vrrpState: () => speaker?.state() ?? [],
    bfdState: () => speaker?.bfdStatus(),
    mirror,
    table,
    checks,
    followers,
    ...(options.loadConfig ? { loadConfig: options.loadConfig } : {}),
    ...(options.configFile ? { configFile: options.configFile } : {}),
  });
  // Replication listens before any address is here (conntrack reports only entries created
  // while someone listens); a VRRP takeover of a standby VIP installs the keepers' copies.
  const failover = new Failover({
    config,
    appliance: box,
    table: { subscribe: (o) => conntrack.subscribe(o), readRecords: (mark, onChunk) => box.readRecords(mark, onChunk, READ_WAIT_MS.background), get: (orig) => conntrack.get(orig) },
    sources: httpSources(config, credentials),
    modes: () => engine.modeTable(),
    speaker,
    logger,
    events,
  });
  failover.listen();
  // Replication's VIPs and keepers, the takeover's keepers, a standby's held VIPs.
  followers.push({ fields: ['keepers'], follow: follow('failover', (next) => failover.reconfigure(next)) });
  if (speaker) {
    await speaker.start();
    if (speaker.priorityError) logger.warn({ err: speaker.priorityError }, 'the VRRP speaker runs at the normal priority (CAP_SYS_NICE missing): a loaded appliance may be taken for dead by its peers');
    // Without its speaker the appliance must not go on holding addresses nobody defends.
    speaker.once('exit', (err: Error) => options.onFatal(err));
  }
  await box.start(standby ? (vip) => failover.takeover.becameMaster(vip) : undefined);
  await failover.start();
  checks.start();

  const peerClient = peerClients(config.failover.peers, credentials);
  registerApplianceMetrics(metrics, () => box.status());
  registerRefusedEntriesMetrics(metrics, config.appliance, () => box.refusedEntries());
  registerReplicationMetrics(metrics, () => failover.replicator.status());
  if (speaker) {
    registerVrrpMetrics(speaker, metrics);
    registerBfdMetrics(speaker, metrics);
  }
  // The newest controller epoch outlives a restart: a deposed leader stays refused.
  const epochs = new FileEpochStore(path.join(config.stateDir, `${config.appliance}.controller-epoch`));
  const fence = new EpochFence({
    load: () => {
      try {
        return epochs.load();
      } catch (err) {
        // Left as it is for the operator; the next leader's epoch replaces it.
        logger.error({ err: (err as Error).message }, 'the recorded controller epoch is unreadable: starting from none');
        return 0;
      }
    },
    save: (epoch) => epochs.save(epoch),
  });
  const routes = agentRoutes(box, { peerClient, logger, failover, fence });
  const server = createApiServer({ name: 'agent', routes: [...routes, eventsRoute(events), metricsRoute(metrics)], roles: AGENT_ROLES, authenticator: new Authenticator(credentials), logger, metrics });
  await server.listen(config.api.listen);
  const scrape = await startMetricsListener({ config: config.metrics, apiListen: config.api.listen, credentialsDir: options.credentialsDir, registry: metrics, logger, name: 'appliance' });
  logger.info({ api: server.url, holdMethod: engine.holdMethod, vips: [...engine.modeTable().keys()] }, 'appliance ready');

  return {
    appliance: box,
    server,
    async stop() {
      logger.info('stopping: giving up the VIP addresses and removing the ruleset');
      await server.close();
      await scrape?.close();
      checks.stop();
      await failover.stop();
      if (speaker) await speaker.stop(); // a master announces priority 0 and drops its addresses
      else for (const vip of box.config.vips) await box.releaseAddress(vip.name).catch(() => undefined);
      await engine.stop();
      hooks.detach();
      await hooks.idle();
      announcer.close();
      mirror.close();
      table.stop();
      conntrack.close();
    },
  };
}
