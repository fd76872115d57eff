/**
 * Failover on the appliance, wired: the replicator (copies to the keepers) and the takeover
 * (standby VIPs pre-armed, becameMaster), with their clients and their share of the agent API.
 *
 * Agent API additions:
 *   POST /v1/vips/:name/takeover   claim the VIP's addresses here and take it over from the
 *                                  copies (what VRRP does on the master's silence, for an
 *                                  operator or a test when VRRP does not drive it) → TakeoverReport
 *   GET  /v1/status                gains `replication` (ReplicationStatus) and `failover`
 *                                  (standby or not, the last takeovers' reports)
 */
import type { Logger } from 'pino';
import type { Credentials } from '../api/auth.js';
import { ApiClient } from '../api/client.js';
import { KeeperClient } from '../keeper/client.js';
import { StepRefused, type AgentFailover } from './agent.js';
import type { MigrationStepName } from './agent-api.js';
import type { ApplianceConfig } from '../config/appliance.js';
import type { VipMode } from '../nat/ruleset.js';
import type { TransitionEvent } from '../vrrp/speaker.js';
import type { EventSink } from '../log/events.js';
import { Replicator, type AccessTable, type KeeperSink, type ReplicationStatus } from '../replication/replicator.js';
import { Takeover, readRecordStream, type EntrySource, type TakeoverAppliance, type TakeoverReport } from '../replication/takeover.js';

/** What failover needs of the appliance: a takeover's, and the VIP's addresses claimed here (an operator's takeover). */
export interface FailoverAppliance extends TakeoverAppliance {
  claimAddress(name: string): Promise<void>;
}

/** Where entries go to and come from: the keepers (pushed copies, read copies) and the other appliances' agents. */
export interface FailoverSources {
  /** One sink per keeper, by the keeper's name (the replicator's pushes). */
  sinks: Map<string, KeeperSink>;
  /** The keeper of each server, by the server's address (a takeover's reads). */
  keepers: Map<string, EntrySource>;
  /** The other appliances' agents. */
  peers: EntrySource[];
  /**
   * A reload changed the keepers: `sinks` and `keepers` follow the configuration in place (the
   * takeover reads the same map); clients of an unchanged keeper are kept, the others closed.
   */
  setKeepers(config: ApplianceConfig): void;
  close(): void;
}

/** The real sources: HTTP clients of the keepers' and the peers' APIs. */
export function httpSources(config: ApplianceConfig, credentials: Credentials): FailoverSources {
  /** Each keeper's clients (pushes; restores on their own connections), by name, server and API. */
  const keeperClients = new Map<string, { push: KeeperClient; fetch: KeeperClient }>();
  const sinks = new Map<string, KeeperSink>();
  const keepers = new Map<string, EntrySource>();
  const setKeepers = (next: ApplianceConfig): void => {
    const key = (k: ApplianceConfig['keepers'][number]) => `${k.name}\0${k.server}\0${k.api}`;
    const wanted = new Set(next.keepers.map(key));
    for (const [k, c] of keeperClients) {
      if (wanted.has(k)) continue;
      c.push.close();
      c.fetch.close();
      keeperClients.delete(k);
    }
    sinks.clear();
    keepers.clear();
    for (const k of next.keepers) {
      let c = keeperClients.get(key(k));
      if (!c) {
        c = {
          push: new KeeperClient(k.api, credentials, { peer: k.name, timeoutMs: next.replication.pushTimeoutMs }),
          // Restores get their own connections: never queued behind a push.
          fetch: new KeeperClient(k.api, credentials, { peer: k.name, timeoutMs: next.failover.fetchTimeoutMs }),
        };
        keeperClients.set(key(k), c);
      }
      const fetch = c.fetch;
      sinks.set(k.name, c.push);
      keepers.set(k.server, {
        name: k.name,
        entries: async (vip, signal) =>
          readRecordStream(await fetch.api.stream('GET', `/v1/vips/${encodeURIComponent(vip.address)}/copies?source=merged`, undefined, { signal }), signal),
      });
    }
  };
  setKeepers(config);
  const peerClients: ApiClient[] = [];
  const peers: EntrySource[] = config.failover.peers.map((p) => {
    const client = new ApiClient(p.api, credentials, { peer: p.name });
    peerClients.push(client);
    return {
      name: p.name,
      entries: async (vip, signal) => readRecordStream(await client.stream('GET', `/v1/vips/${encodeURIComponent(vip.name)}/entries?for=takeover`, undefined, { signal }), signal),
    };
  });
  return {
    sinks,
    keepers,
    peers,
    setKeepers,
    close: () => {
      for (const c of peerClients) c.close();
      for (const c of keeperClients.values()) {
        c.push.close();
        c.fetch.close();
      }
    },
  };
}

export interface FailoverOptions {
  config: ApplianceConfig;
  appliance: FailoverAppliance;
  /** The access table the replicator copies: conntrack's events and the appliance's reader. */
  table: AccessTable;
  sources: FailoverSources;
  modes: () => Map<string, VipMode>;
  /** The VRRP speaker: its transitions to master start takeovers. */
  speaker?: { on(event: 'transition', listener: (e: TransitionEvent) => void): unknown } | undefined;
  logger: Logger;
  /** Where VRRP transitions, takeovers and the end of migrations are reported (hooks, `vipshift events`). */
  events?: EventSink;
  /** Monotonic milliseconds (performance.now by default): how long a planned migration shields its VIP. */
  now?: () => number;
}

/** How often a standby re-arms VIPs that left this appliance (a migration away, an abort). */
const ARM_POLL_MS = 200;
/** The steps that open a migration on an appliance (MigrationStepObserver). */
const OPENING: ReadonlySet<MigrationStepName> = new Set(['precopy', 'prepare', 'address']);

/** A migration the controller started here and never finished stops shielding its VIP after this long. */
const PLANNED_MS = 60_000;

export class Failover implements AgentFailover {
  readonly replicator: Replicator;
  readonly takeover: Takeover;
  private readonly now: () => number;
  private armTimer: NodeJS.Timeout | undefined;
  private arming: Promise<unknown> = Promise.resolve();
  /** VRRP instance → the VIP whose address (or inside address) it carries, and back. */
  private readonly vipOfInstance = new Map<string, string>();
  private readonly instancesOfVip = new Map<string, string[]>();
  /** The VRRP instances that are master here now. */
  private readonly masters = new Set<string>();
  /**
   * VIPs the controller is migrating here (step 1 seen, step 4 or an abort not yet): their
   * VRRP claim is step 2 of that migration, not a failover, and the controller moves the
   * entries itself.
   */
  private readonly planned = new Map<string, number>();

  constructor(private readonly options: FailoverOptions) {
    const { config, logger, sources } = options;
    this.now = options.now ?? (() => performance.now());
    this.replicator = new Replicator({
      config,
      table: options.table,
      sinks: sources.sinks,
      modes: options.modes,
      serving: (vip) => this.serving(vip.name),
      logger: logger.child({ part: 'replication' }),
    });
    this.takeover = new Takeover({
      config,
      appliance: options.appliance,
      modes: options.modes,
      keepers: sources.keepers,
      peers: sources.peers,
      logger: logger.child({ part: 'takeover' }),
      onActivated: (vip, report) => {
        this.replicator.syncModes();
        options.events?.emit({ event: 'takeover', vip, ...(report.notInstalled ? { reason: report.notInstalled.reason } : {}) });
      },
    });
    this.mapInstances(config);
    options.speaker?.on('transition', (event: TransitionEvent) => {
      this.report(event);
      this.onTransition(event);
    });
  }

  /** VRRP instance → the VIP whose address (or inside address) it carries, and back. */
  private mapInstances(config: ApplianceConfig): void {
    this.vipOfInstance.clear();
    this.instancesOfVip.clear();
    for (const instance of config.vrrp?.instances ?? []) {
      const carried = new Set(instance.addresses.map((a) => a.address.split('/')[0]));
      const vip = config.vips.find((v) => carried.has(v.address) || carried.has(v.insideAddress));
      if (!vip) continue;
      this.vipOfInstance.set(instance.name, vip.name);
      this.instancesOfVip.set(vip.name, [...(this.instancesOfVip.get(vip.name) ?? []), instance.name]);
    }
  }

  /**
   * A reload (the appliance's configuration already switched to `next`): the keepers copies go
   * to and restores come from, the VIPs replicated, and on a standby the VIPs added are held
   * at once (pre-armed) like those it started with.
   */
  async reconfigure(next: ApplianceConfig): Promise<void> {
    this.mapInstances(next);
    this.options.sources.setKeepers(next);
    this.replicator.reconfigure(next, this.options.sources.sinks);
    const arm = this.arming.then(() => this.takeover.arm());
    this.arming = arm.catch((err: Error) => this.options.logger.error({ err: err.message }, 'standby: arming failed'));
    await arm;
  }

  /**
   * Whether this appliance serves the VIP's address: VRRP master for it (or no VRRP instance
   * carries it). Only then are its copies ours to write: an appliance that starts with a VIP
   * `normal` but is not (yet) master must not resynchronise the keepers with an empty table.
   */
  serving(vip: string): boolean {
    const instances = this.instancesOfVip.get(vip);
    return !instances || instances.some((i) => this.masters.has(i));
  }

  /** keepalived's notify_master / notify_backup / notify_fault, as events. */
  private report(event: TransitionEvent): void {
    if (event.to === 'initialize') return;
    const vip = this.vipOfInstance.get(event.instance);
    this.options.events?.emit({ event: event.to, instance: event.instance, ...(vip ? { vip } : {}), reason: event.reason });
  }

  /**
   * VRRP moved a VIP here or away without a migration of the controller: a standby takes it
   * over when it becomes master, and gives it up (held again, its entries deleted) when
   * another appliance becomes master (the owner came back and preempted, or a split brain).
   */
  private onTransition(event: TransitionEvent): void {
    const vip = this.vipOfInstance.get(event.instance);
    if (!vip) return;
    const before = this.serving(vip);
    if (event.to === 'master') this.masters.add(event.instance);
    else this.masters.delete(event.instance);
    const after = this.serving(vip);
    this.replicator.syncModes();
    if (before === after || !this.options.config.failover.standby) return;
    const since = this.planned.get(vip);
    if (since !== undefined && this.now() - since < PLANNED_MS) return;
    const fail = (what: string) => (err: Error) => this.options.logger.error({ vip, err: err.message, reason: event.reason }, `${what} failed`);
    if (after) {
      if (this.options.modes().get(vip) !== 'normal') this.takeover.becameMaster(vip).catch(fail('takeover'));
    } else {
      this.takeover.becameBackup(vip).catch(fail('giving the VIP up'));
    }
  }

  /** Subscribes to conntrack's events: before the NAT engine starts making entries. */
  listen(): void {
    this.replicator.start();
  }

  /** Once the NAT engine runs: the standby's holds, kept armed. */
  async start(): Promise<void> {
    await this.takeover.arm();
    if (this.options.config.failover.standby) {
      this.armTimer = setInterval(() => {
        this.arming = this.arming.then(() => this.takeover.arm()).catch((err: Error) => this.options.logger.error({ err: err.message }, 'standby: arming failed'));
      }, ARM_POLL_MS);
    }
  }

  /**
   * The pre-copy and steps 1 and 2 open a migration here (target, source); step 4, an abort or
   * a forget close it. The pre-copy holds the VIP here for seconds: a VRRP flap then (a BFD
   * session lost to a loaded machine) must not take the VIP over and drop the pre-copy.
   */
  stepStarted(vip: string, step: MigrationStepName): void {
    if (!OPENING.has(step)) return;
    if (this.takeover.takingOver(vip)) throw new StepRefused(`a takeover of ${vip} is under way on this appliance: try the migration again once it has ended`);
    this.planned.set(vip, this.now());
    this.takeover.keepEntries(vip);
  }

  stepEnded(vip: string, step: MigrationStepName, succeeded: boolean): void {
    if (OPENING.has(step)) return;
    this.planned.delete(vip);
    if (succeeded && step === 'activate') this.options.events?.emit({ event: 'migrationDone', vip });
    if (succeeded && step === 'abort') this.options.events?.emit({ event: 'migrationAborted', vip });
  }

  /**
   * A migration's abort here. Its target gives the address back before it, so being VRRP
   * master for the VIP now means the source did not take it back (it died mid-migration) and
   * VRRP chose this appliance, a transition the migration's shield kept from taking the VIP
   * over: that takeover happens now, from the peers' and keepers' copies, the VIP held
   * throughout. Dropping the VIP instead would answer its packets with resets and leave it to
   * nobody; a VIP already taken over so stays. Otherwise `abort` drops what the migration left here.
   */
  async abortMigration(vip: string, abort: () => Promise<void>): Promise<void> {
    if (!this.options.config.failover.standby || !this.serving(vip)) return abort();
    if (this.options.modes().get(vip) === 'normal') {
      this.options.logger.warn({ vip }, 'VRRP master for the VIP and serving it: a migration\'s abort leaves it');
      return;
    }
    this.options.logger.warn({ vip }, 'VRRP master for the VIP when its migration was aborted (the source did not take the address back): taking it over');
    await this.takeover.becameMaster(vip);
  }

  /** The agent's status carries replication and failover. */
  statusSections(): { replication: ReplicationStatus; failover: ReturnType<Failover['status']> } {
    return { replication: this.replicator.status(), failover: this.status() };
  }

  /** An operator's (or a test's) takeover of a VIP on this appliance, without VRRP. */
  async takeOver(vip: string): Promise<TakeoverReport> {
    // Held before the address arrives, so the first packet is not answered with a reset.
    if (!this.options.modes().has(vip)) await this.options.appliance.prepare(vip);
    await this.options.appliance.claimAddress(vip);
    return this.takeover.becameMaster(vip);
  }

  /** Whether this appliance backs VIPs up, and its last takeovers (newest last). */
  status(): { standby: boolean; takeovers: TakeoverReport[] } {
    return { standby: this.options.config.failover.standby, takeovers: this.takeover.reports() };
  }

  async stop(): Promise<void> {
    if (this.armTimer) clearInterval(this.armTimer);
    await this.arming;
    this.takeover.stop();
    this.replicator.stop();
    this.options.sources.close();
  }
}
