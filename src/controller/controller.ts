/**
 * The controller (the patent's control mechanism 52): knows the appliances and who owns which
 * VIP (its store keeps both: store.ts), measures their traffic, plans who should own what
 * (assignment.ts), runs migrations through the appliances' agents, writing each step down
 * before it runs, and ends the ones a previous run of it left unfinished.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { ApiError, type RequestOptions } from '../api/client.js';
import { PHASES, migrate, recover, type MigrationAgent, type MigrationOptions, type MigrationProgress, type Phase } from '../migration/migration.js';
import type { AgentStatus } from '../appliance/agent-api.js';
import { FULL_RATIO } from '../appliance/table-watch.js';
import { algorithms, type AssignmentAlgorithm, type AssignmentInput, type Plan } from './assignment.js';
import type { ControllerConfig } from '../config/controller.js';
import type { ControllerStore, InventoryAppliance, InventoryVip, JournalMigration, MigrationReason, RebalanceMode, VipTraffic } from './store.js';
import { TrafficMeter, type ApplianceSample } from './statistics.js';
import { NotLeaderError, type ControllerIdentity, type Leadership } from './leadership.js';
import { backendChanges, backendReplay, type ConfiguredBackend } from './backends.js';
import type { BackendChange } from '../config/edit.js';
import type { ReconfigureResult } from '../nat/engine.js';

/** What the controller needs of an appliance: the migration's operations and its status. */
export interface ApplianceAgent extends MigrationAgent {
  status(options?: RequestOptions): Promise<AgentStatus>;
  /** Tells the appliance the epoch of a new leader, so that it refuses the older ones from now on. */
  announceEpoch?(): Promise<void>;
  /** Adds, removes, weights or drains a backend in the appliance's configuration (applied and written there); the VIP's backends afterwards. */
  changeBackend(vip: string, change: BackendChange): Promise<{ vip: string; backends: ConfiguredBackend[] }>;
  /** The appliance re-reads its configuration file and applies the difference. */
  reload(): Promise<ReconfigureResult>;
}

/** What one appliance answered to a change sent to every appliance. */
export interface ApplianceOutcome {
  appliance: string;
  ok: boolean;
  result?: unknown;
  error?: string;
}

/** What the controller needs of a keeper: the backend changes of the VIPs it keeps copies of. */
export interface KeeperAgent {
  readonly name: string;
  changeBackend(vip: string, change: BackendChange): Promise<unknown>;
}

/** What one keeper answered to a backend change; `skipped`: the VIP is not one of its VIPs. */
export interface KeeperOutcome {
  keeper: string;
  ok: boolean;
  result?: unknown;
  skipped?: string;
  error?: string;
}

/** The controllers of the site and the health of their store, for the operator. */
export interface ControlPlaneStatus {
  self: string;
  store: 'sqlite' | 'etcd';
  leader: ControllerIdentity | null;
  leading: boolean;
  epoch: number | null;
  /** When leader, leading and epoch were read (ms since the Unix epoch). */
  asOf: number;
  elections: number;
  controllers: ControllerIdentity[];
  etcd?: { endpoint: string; healthy: boolean; leader?: boolean; version?: string; error?: string }[];
}

/** What the controller asks of the store's cluster beyond the store (etcd: its members). */
export interface ControlPlane {
  controllers(): Promise<ControllerIdentity[]>;
  health(): Promise<NonNullable<ControlPlaneStatus['etcd']>>;
}

export interface SiteVip {
  name: string;
  owner: string;
  mode: string;
  entries: number;
  pinned: boolean;
  lastMovedAt: string | null;
  traffic: VipTraffic | null;
  load: number | null;
}

export interface SiteStatus {
  vips: SiteVip[];
  appliances: (AgentStatus & { name: string; reachable: boolean; up: boolean; maintenance: boolean; capacity: number; error?: string })[];
  migrations: MigrationProgress[];
  rebalance: RebalanceMode;
  controllers?: ControlPlaneStatus;
}

export interface PlanReport extends Plan {
  mode: RebalanceMode;
  at: string;
  /** Why nothing would be carried out now although the plan has moves (idle site, stale measurements...). */
  holdingBack?: string;
  input: AssignmentInput;
}

export class MigrationRefused extends Error {
  constructor(
    message: string,
    readonly field: string,
    readonly status = 409,
  ) {
    super(message);
  }
}

/** Drills for tests and rehearsals: fail at a step, or skip the hold (the negative control). */
export type Drill = Pick<MigrationOptions, 'abortAt' | 'skipPrepare'>;

export const PAUSE_ENV = 'VIPSHIFT_TEST_PAUSE_STEP';
/** How often the leader prunes the store's history (and once when it starts leading). */
const PRUNE_SECONDS = 600;
/** The store's setting with each VIP's backends as last set through the controller (JSON, by VIP). */
const DESIRED_BACKENDS = 'backends';
/** The store's setting with each keeper's backend changes that did not reach it yet (JSON, by keeper, in order). */
const KEEPER_BACKLOG = 'keeper-backends';

/** A backend change of a VIP that a keeper has still to take. */
interface KeeperChange {
  vip: string;
  change: BackendChange;
}

/** No answer (unreachable, timed out) or a server error: the keeper decided nothing, so the change is sent again. */
const undecided = (e: { status?: number }) => e.status === undefined || e.status === 0 || e.status >= 500;

/**
 * The test hook: `VIPSHIFT_TEST_PAUSE_STEP=STEP[:MS][,STEP[:MS]...]` (default 30000 ms) makes
 * every migration wait MS in the middle of each STEP named (see MigrationOptions.pause), so
 * that a test can kill the controller there, or act there and end the wait early with
 * SIGUSR2. Read only when set; a wrong value stops the controller at start. The pause counts
 * against migration.stepTimeoutMs: set that above MS.
 */
export function pauseFromEnv(value: string | undefined, logger?: Logger): ((step: Phase) => Promise<void>) | undefined {
  if (value === undefined || value === '') return undefined;
  const pauses = new Map<Phase, number>();
  for (const part of value.split(',')) {
    const m = /^([a-z_]+)(?::(\d+))?$/.exec(part);
    const step = m?.[1] as Phase | undefined;
    if (!m || !step || !PHASES.includes(step)) throw new Error(`${PAUSE_ENV}=${value}: expected STEP[:MS][,STEP[:MS]...] with STEP one of ${PHASES.join(', ')}`);
    pauses.set(step, m[2] === undefined ? 30_000 : Number(m[2]));
  }
  // Listened to for as long as the hook is set: a signal outside a pause must not end the process.
  const waiting = new Set<() => void>();
  process.on('SIGUSR2', () => {
    for (const end of [...waiting]) end();
  });
  return async (at) => {
    const ms = pauses.get(at);
    if (ms === undefined) return;
    logger?.warn({ step: at, ms }, `test hook ${PAUSE_ENV}: pausing in the middle of ${at}`);
    await new Promise<void>((resolve) => {
      const end = () => {
        clearTimeout(timer);
        waiting.delete(end);
        resolve();
      };
      const timer = setTimeout(end, ms);
      waiting.add(end);
    });
  };
}

const HISTORY = 50;

export interface ControllerOptions {
  now?: () => number;
  pause?: (step: Phase) => Promise<void>;
  /** Several controllers on etcd: who leads (default: this one, always). */
  leadership?: Leadership;
  controlPlane?: ControlPlane;
  /** The keepers of the configuration: backend changes reach them too. */
  keepers?: Map<string, KeeperAgent>;
}

export class Controller {
  private readonly running = new Map<string, { progress: MigrationProgress; done: Promise<MigrationProgress> }>();
  /** VIPs whose migration is being checked and written down. */
  private readonly starting = new Set<string>();
  /** Unfinished migrations of an earlier run still to be ended (an appliance did not answer yet). */
  private readonly unrecovered = new Map<string, JournalMigration>();
  /** Appliances that answered a poll since this controller started. */
  private readonly answered = new Set<string>();
  private readonly meter: TrafficMeter;
  private readonly algorithm: AssignmentAlgorithm;
  private readonly now: () => number;
  private readonly timers = new Set<NodeJS.Timeout>();
  /** Rounds of the loops running now: a stop waits for them (a poll writes to the store). */
  private readonly rounds = new Set<Promise<void>>();
  private stopped = false;
  /**
   * Set until the journal's unfinished migrations are read (open()): the API listens before
   * that, and a migration started then would not see that its VIP has one still to end.
   */
  private opening = true;
  /** Leadership terms started: the loops of an earlier term end by themselves. */
  private term = 0;
  /** Each appliance's answer to the last poll it answered. */
  private readonly lastStatuses = new Map<string, AgentStatus>();
  /** Backend changes and their replays, one at a time: a replay never undoes a change under way. */
  private backendWork: Promise<unknown> = Promise.resolve();
  /** The last replay refused per appliance and VIP: said once, not at every poll. */
  private readonly replayRefused = new Map<string, string>();
  /** Told of every migration that ends (metrics). */
  onFinished?: (final: MigrationProgress) => void;

  constructor(
    readonly config: ControllerConfig,
    private readonly agents: Map<string, ApplianceAgent>,
    private readonly store: ControllerStore,
    private readonly logger: Logger,
    private readonly options: ControllerOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    this.meter = new TrafficMeter(config.rebalance.load, config.statistics.smoothing);
    this.algorithm = algorithms[config.rebalance.algorithm]!();
  }

  leading(): boolean {
    return this.options.leadership?.leading() ?? true;
  }

  leader(): ControllerIdentity | undefined {
    return this.options.leadership ? this.options.leadership.leader() : { name: this.config.controller, api: `http://${this.config.api.listen}` };
  }

  /** Refuses what only the leader may do. */
  private mustLead(): void {
    if (!this.leading()) throw new NotLeaderError(this.leader());
  }

  /**
   * This controller was elected: what it knew as a follower is dropped, unfinished migrations
   * are ended by the usual rules (the previous leader may have died in one), the appliances
   * learn the new epoch, and the loops start. Statistics are relearned from the next polls.
   */
  async lead(): Promise<void> {
    this.opening = true;
    this.endTerm();
    this.stopped = false;
    this.unrecovered.clear();
    this.answered.clear();
    this.lastStatuses.clear();
    await Promise.all(
      [...this.agents.values()].map((a) =>
        a.announceEpoch?.().catch((err: Error) => this.logger.warn({ appliance: a.name, err: err.message }, 'could not tell an appliance the new epoch')),
      ),
    );
    await this.open();
    this.startLoops();
  }

  /** This controller no longer leads: its loops stop; a migration under way fails at its next write or request. */
  follow(): void {
    this.stopped = true;
    this.endTerm();
    this.unrecovered.clear();
  }

  private endTerm(): void {
    this.term++;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  async controlPlane(): Promise<ControlPlaneStatus> {
    const l = this.options.leadership;
    const cp = this.options.controlPlane;
    const [controllers, etcd] = await Promise.all([
      cp?.controllers().catch(() => []) ?? [{ name: this.config.controller, api: `http://${this.config.api.listen}` }],
      cp?.health(),
    ]);
    return {
      self: this.config.controller,
      store: this.store.kind,
      leader: this.leader() ?? null,
      leading: this.leading(),
      epoch: l?.epoch() ?? null,
      asOf: Date.now(),
      elections: l?.elections ?? 1,
      controllers,
      ...(etcd ? { etcd } : {}),
    };
  }

  /** The agent of an appliance of the inventory (the console's access-table pages go through it). */
  agent(name: string): ApplianceAgent | undefined {
    return this.agents.get(name);
  }

  async owner(vip: string): Promise<string | undefined> {
    return (await this.store.owners()).get(vip);
  }

  // -------------------------------------------------------------------------------------------
  // Start: recovery, then what the appliances say

  /**
   * Ends every migration the journal has as unfinished (an earlier run died in it), then learns
   * the owners of the other VIPs from the appliances. A migration whose appliances do not answer
   * stays unfinished and is tried again at every poll; its VIP is not moved meanwhile.
   */
  async open(): Promise<void> {
    await this.store.syncConfiguration(this.config.appliances, this.config.vips);
    for (const m of await this.store.unfinished()) this.unrecovered.set(m.id, m);
    this.opening = false;
    await this.recoverUnfinished();
    await this.reconcile();
  }

  private async recoverUnfinished(): Promise<void> {
    for (const m of [...this.unrecovered.values()]) {
      const source = this.agents.get(m.source);
      const target = this.agents.get(m.target);
      const log = this.logger.child({ migration: m.id, vip: m.vip });
      if (!source || !target) {
        await this.store.recovery(m.id, 'recover_failed', `appliance ${source ? m.target : m.source} is not in the configuration`);
        log.error({ source: m.source, target: m.target }, 'cannot recover a migration: its appliance is no longer configured');
        continue;
      }
      const decision = m.committed ? 'finish forward (past the commit point)' : `give back to ${m.source} (reached ${m.step ?? 'no step'}, not committed)`;
      await this.store.recovery(m.id, 'recover', decision);
      log.warn({ step: m.step, committed: m.committed, from: m.source, to: m.target }, `recovering an unfinished migration: ${decision}`);
      try {
        const state = await recover(m.vip, source, target, { reached: m.step, committed: m.committed });
        const error = m.error ?? `interrupted at ${m.step ?? 'its start'}; recovered: ${decision}`;
        await this.store.end(m.id, { state, error, recovered: true, progress: { ...(m.progress ?? this.blankProgress(m)), state, error } });
        this.unrecovered.delete(m.id);
        log.info({ state, owner: state === 'done' ? m.target : m.source }, 'unfinished migration recovered');
      } catch (err) {
        await this.store.recovery(m.id, 'recover_failed', (err as Error).message);
        log.error({ err: (err as Error).message }, 'recovering a migration failed; trying again at the next poll');
      }
    }
  }

  private blankProgress(m: JournalMigration): MigrationProgress {
    return {
      id: m.id,
      vip: m.vip,
      from: m.source,
      to: m.target,
      state: m.state,
      step: m.step ?? 'prepare',
      startedAt: new Date(m.startedAt).toISOString(),
      steps: {},
      entries: { moved: 0, total: 0 },
      released: 0,
    };
  }

  /**
   * Checks the journal's owners against the appliances: the one with the VIP `normal` in its
   * mode table owns it. The journal is corrected where exactly one appliance says so; two
   * appliances with one VIP `normal` is logged as an error and left for the operator.
   */
  async reconcile(): Promise<void> {
    const statuses = await Promise.all(
      [...this.agents.values()].map(async (a) => ({ name: a.name, status: await a.status({ timeoutMs: 5000 }).catch(() => undefined) })),
    );
    const busy = new Set([...this.unrecovered.values(), ...[...this.running.values()].map((r) => r.progress)].map((m) => m.vip));
    const owners = await this.store.owners();
    for (const [vip, recorded] of owners) {
      if (busy.has(vip)) continue;
      const claim = statuses.filter((s) => s.status?.vips.some((v) => v.name === vip && v.mode === 'normal')).map((s) => s.name);
      if (claim.length === 1 && claim[0] !== recorded) {
        this.logger.warn({ vip, journal: recorded, appliances: claim[0] }, 'owner in the journal differs from the appliances: taking the appliances\' word');
        await this.store.setOwner(vip, claim[0]!);
      } else if (claim.length > 1) {
        this.logger.error({ vip, appliances: claim }, 'several appliances have the VIP normal: left for the operator');
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Loops: statistics and rebalancing

  /** Starts polling the appliances and (in auto) rebalancing. */
  startLoops(): void {
    const term = this.term;
    const over = () => this.stopped || term !== this.term;
    const every = (seconds: number, work: () => Promise<void>) => {
      const tick = async () => {
        if (over()) return;
        const round = work().catch((err: unknown) => this.logger.error({ err }, 'controller loop failed'));
        this.rounds.add(round);
        await round;
        this.rounds.delete(round);
        if (over()) return;
        const t = setTimeout(() => {
          this.timers.delete(t);
          void tick();
        }, seconds * 1000);
        this.timers.add(t);
      };
      void tick();
    };
    every(this.config.statistics.intervalSeconds, () => this.poll());
    every(this.config.rebalance.intervalSeconds, () => this.rebalanceOnce());
    if (this.store.prune) every(PRUNE_SECONDS, () => this.prune());
  }

  /** The store's retention applied (ended migrations beyond it, etcd's old revisions). */
  private async prune(): Promise<void> {
    const r = await this.store.prune!();
    if (r.migrations > 0 || r.compactedTo !== undefined) this.logger.info(r, 'journal pruned');
  }

  /** Stops the loops and waits for their rounds and the migrations under way (bounded by their step timeouts). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.term++;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await Promise.all([...this.rounds]);
    await this.idle();
  }

  /** Resolves when every migration under way now has ended. */
  async idle(): Promise<void> {
    await Promise.all([...this.running.values()].map((r) => r.done));
  }

  /** One round of statistics: every appliance's counters, rates derived, recorded in the inventory. */
  async poll(): Promise<void> {
    const timeoutMs = Math.max(1000, this.config.statistics.intervalSeconds * 1000);
    const answers = await Promise.all(
      [...this.agents.values()].map(async (agent) => {
        try {
          const status = await agent.status({ timeoutMs });
          return { agent, status, at: this.now() };
        } catch (err) {
          return { agent, error: (err as Error).message };
        }
      }),
    );
    const samples: ApplianceSample[] = [];
    for (const a of answers) {
      if (!a.status) continue;
      this.answered.add(a.agent.name);
      for (const c of backendChanges(a.agent.name, this.lastStatuses.get(a.agent.name), a.status)) {
        const { appliance, ...fields } = c;
        if (c.to === 'down') this.logger.warn({ appliance, ...fields }, `backend down on ${appliance}`);
        else this.logger.info({ appliance, ...fields }, `backend ${c.from === 'up' ? 'down and up again' : 'up'} on ${appliance}`);
      }
      this.lastStatuses.set(a.agent.name, a.status);
      samples.push({
        appliance: a.agent.name,
        at: a.at,
        vips: Object.fromEntries(
          a.status.vips.map((v) => [v.name, { packets: v.packets, bytes: v.bytes, newConnections: v.newConnections ?? 0, entries: v.entries }]),
        ),
      });
    }
    const measured = this.meter.update(samples);
    await this.store.recordPoll(
      answers.map((a) => (a.status ? { name: a.agent.name, ok: true } : { name: a.agent.name, ok: false, error: a.error })),
      measured,
    );
    for (const a of answers) if (a.error) this.logger.warn({ appliance: a.agent.name, error: a.error }, 'appliance did not answer the poll');
    if (this.unrecovered.size > 0) await this.recoverUnfinished();
    await this.replayBackends(answers.flatMap((a) => (a.status ? [{ agent: a.agent, status: a.status }] : [])));
    await this.replayKeepers();
  }

  /** Up: answered since we started and not failed downAfterPolls polls in a row. */
  private isUp(a: InventoryAppliance): boolean {
    return this.answered.has(a.name) && a.failedPolls < this.config.statistics.downAfterPolls;
  }

  async rebalanceMode(): Promise<RebalanceMode> {
    const stored = await this.store.setting('rebalance');
    return stored === 'auto' || stored === 'manual' ? stored : this.config.rebalance.mode;
  }

  /** Persisted: a restarted controller keeps the operator's choice over the configuration's. */
  async setRebalanceMode(mode: RebalanceMode): Promise<void> {
    this.mustLead();
    await this.store.setSetting('rebalance', mode);
    this.logger.info({ mode }, 'rebalance mode set');
  }

  private migratingVips(): Set<string> {
    return new Set([...this.starting, ...[...this.running.values()].map((r) => r.progress.vip), ...[...this.unrecovered.values()].map((m) => m.vip)]);
  }

  /** What the assignment sees now. */
  async assignmentInput(overrides: { coolDownSeconds?: number } = {}): Promise<AssignmentInput> {
    const migrating = this.migratingVips();
    const appliances = (await this.store.appliances()).filter((a) => this.agents.has(a.name));
    const known = new Set(appliances.map((a) => a.name));
    const configured = new Set(this.config.vips.map((v) => v.name));
    return {
      appliances: appliances.map((a) => ({ name: a.name, capacity: a.capacity, up: this.isUp(a), maintenance: a.maintenance })),
      vips: (await this.store.vips())
        .filter((v) => configured.has(v.name) && known.has(v.owner))
        .map((v) => ({ name: v.name, owner: v.owner, load: v.load ?? 0, pinned: v.pinned, lastMovedAt: v.lastMovedAt, migrating: migrating.has(v.name) })),
      settings: {
        threshold: this.config.rebalance.threshold,
        coolDownSeconds: overrides.coolDownSeconds ?? this.config.rebalance.coolDownSeconds,
        maxConcurrent: this.config.rebalance.maxConcurrent,
        now: this.now(),
      },
    };
  }

  /** The plan now, and why it would not be carried out (if so). */
  async plan(): Promise<PlanReport> {
    const input = await this.assignmentInput();
    const plan = this.algorithm.plan(input);
    const report: PlanReport = { ...plan, mode: await this.rebalanceMode(), at: new Date(this.now()).toISOString(), input };
    const holdingBack = await this.holdingBack(input);
    if (holdingBack) report.holdingBack = holdingBack;
    return report;
  }

  /** Reasons not to rebalance automatically although the algorithm proposes moves. */
  private async holdingBack(input: AssignmentInput): Promise<string | undefined> {
    if (this.unrecovered.size > 0) return `${this.unrecovered.size} unfinished migration(s) of an earlier run still to recover`;
    const total = input.vips.reduce((sum, v) => sum + v.load, 0);
    const vips = await this.store.vips();
    const stale = this.now() - 3 * this.config.statistics.intervalSeconds * 1000;
    if (vips.every((v) => v.sampledAt === null || v.sampledAt < stale)) return 'no recent measurements';
    if (total < this.config.rebalance.minLoad) {
      return `the site is nearly idle (total load ${total.toFixed(1)} < rebalance.minLoad ${this.config.rebalance.minLoad} ${this.config.rebalance.load}/s)`;
    }
    return undefined;
  }

  /** One round of automatic rebalancing (auto mode only): the plan's moves are started. */
  async rebalanceOnce(): Promise<void> {
    if ((await this.rebalanceMode()) !== 'auto') return;
    const report = await this.plan();
    if (report.moves.length === 0) return;
    if (report.holdingBack && report.moves.every((m) => m.reason === 'rebalance')) {
      this.logger.debug({ holdingBack: report.holdingBack }, 'not rebalancing');
      return;
    }
    for (const move of report.moves) {
      if (report.holdingBack && move.reason !== 'drain') continue;
      try {
        this.logger.info({ vip: move.vip, from: move.from, to: move.to, reason: move.reason, why: move.why, loads: move.loads }, 'rebalancing');
        await this.start(move.vip, move.to, {}, move.reason);
      } catch (err) {
        this.logger.warn({ vip: move.vip, err: (err as Error).message }, 'planned move refused');
      }
    }
  }

  // -------------------------------------------------------------------------------------------
  // Operator actions

  async setPinned(vip: string, pinned: boolean): Promise<InventoryVip> {
    this.mustLead();
    if (!(await this.store.setPinned(vip, pinned))) throw new MigrationRefused(`no VIP named '${vip}'`, 'name', 404);
    this.logger.info({ vip, pinned }, pinned ? 'VIP pinned' : 'VIP unpinned');
    return (await this.store.vips()).find((v) => v.name === vip)!;
  }

  async setMaintenance(appliance: string, on: boolean): Promise<InventoryAppliance> {
    this.mustLead();
    if (!this.agents.has(appliance) || !(await this.store.setMaintenance(appliance, on))) {
      throw new MigrationRefused(`no appliance named '${appliance}'`, 'name', 404);
    }
    this.logger.info({ appliance, maintenance: on }, on ? 'appliance in maintenance' : 'appliance out of maintenance');
    return (await this.store.appliances()).find((a) => a.name === appliance)!;
  }

  /**
   * Moves every VIP off an appliance (it goes into maintenance first, so it gets nothing back),
   * one plan round after another until nothing more can move; cool-downs do not apply, pins do.
   */
  async drain(appliance: string): Promise<{ appliance: string; migrations: MigrationProgress[]; waiting: Plan['waiting']; remaining: string[] }> {
    this.mustLead();
    await this.setMaintenance(appliance, true);
    const migrations: MigrationProgress[] = [];
    let waiting: Plan['waiting'] = [];
    for (;;) {
      const plan = this.algorithm.plan(await this.assignmentInput({ coolDownSeconds: 0 }));
      const moves = plan.moves.filter((m) => m.reason === 'drain' && m.from === appliance);
      const owners = await this.store.owners();
      waiting = plan.waiting.filter((w) => owners.get(w.vip) === appliance);
      if (moves.length === 0) {
        // Migrations under way (auto rebalancing's drain moves) count too: wait for them.
        const busy = [...this.running.values()].filter((r) => r.progress.from === appliance);
        if (busy.length === 0) break;
        await Promise.all(busy.map((r) => r.done));
        continue;
      }
      const started = moves.map((m) =>
        this.start(m.vip, m.to, {}, 'drain').then(
          (s) => s.done,
          (err: Error) => {
            this.logger.warn({ vip: m.vip, err: err.message }, 'drain move refused');
            return undefined;
          },
        ),
      );
      const finished = (await Promise.all(started)).filter((m): m is MigrationProgress => m !== undefined);
      migrations.push(...finished);
      if (finished.length === 0 || finished.every((m) => m.state !== 'done')) break; // no progress: stop rather than spin
    }
    const remaining = [...(await this.store.owners())].filter(([, owner]) => owner === appliance).map(([vip]) => vip);
    return { appliance, migrations, waiting, remaining };
  }

  // -------------------------------------------------------------------------------------------
  // Backends and configuration

  /**
   * A backend change sent to every appliance and every keeper: each appliance holds the
   * site's VIPs (the one owning a VIP and those standing by for it alike), each keeper the VIPs
   * whose copies it accepts (a copy of a connection to a server that is not one of its VIP's
   * backends is refused there). Each applies the change and writes it to its own file, so
   * each runs on its last copy while the controller is away. A keeper without the VIP has
   * nothing to change (skipped). An added backend reaches the keepers first, so that the
   * copies of its first connections are accepted; any other change reaches the appliances
   * first. One box refusing or unreachable does not stop the others: every outcome is reported.
   */
  changeBackend(vip: string, change: BackendChange): Promise<{ appliances: ApplianceOutcome[]; keepers: KeeperOutcome[] }> {
    return this.backendsSerially(async () => {
      const appliances = () => this.everyAppliance((agent) => agent.changeBackend(vip, change));
      const keepers = () => this.everyKeeper(vip, change);
      let k: KeeperOutcome[] | undefined;
      if (change.action === 'add') k = await keepers();
      const a = await appliances();
      // What the appliances that took it have now is the VIP's backends from now on: one away
      // or refusing gets the difference once a poll finds it (replayBackends).
      const taken = a.find((o) => o.ok)?.result;
      if (taken) {
        const desired = await this.desiredBackends();
        desired.set(vip, taken.backends.map((b) => ({ address: b.address, ...(b.port === undefined ? {} : { port: b.port }), weight: b.weight })));
        await this.store.setSetting(DESIRED_BACKENDS, JSON.stringify(Object.fromEntries(desired)));
      }
      return { appliances: a, keepers: k ?? (await keepers()) };
    });
  }

  private backendsSerially<T>(work: () => Promise<T>): Promise<T> {
    const run = this.backendWork.then(work);
    this.backendWork = run.catch(() => undefined);
    return run;
  }

  /** Each VIP's backends as last set through the controller (the store keeps them: a new leader replays them too). */
  private desiredBackends(): Promise<Map<string, ConfiguredBackend[]>> {
    return this.settingByName<ConfiguredBackend[]>(DESIRED_BACKENDS, 'the backends last set through the controller are unreadable: nothing is replayed until the next change');
  }

  /** A setting kept as JSON by name; an unreadable one is said (`unreadable`) and read as empty. */
  private async settingByName<T>(key: string, unreadable: string): Promise<Map<string, T>> {
    const text = await this.store.setting(key);
    if (text === undefined) return new Map();
    try {
      return new Map(Object.entries(JSON.parse(text) as Record<string, T>));
    } catch (err) {
      this.logger.error({ setting: key, err: (err as Error).message }, unreadable);
      return new Map();
    }
  }

  /**
   * An appliance whose backends of a VIP differ from those last set through the controller
   * (it was down or unreachable when the change went out, or refused it) is given the
   * difference, change by change, each applied and written to its file there. Only VIPs
   * changed through the controller: until then each appliance's file is the truth.
   */
  private replayBackends(answered: { agent: ApplianceAgent; status: AgentStatus }[]): Promise<void> {
    return this.backendsSerially(async () => {
      const desired = await this.desiredBackends();
      if (desired.size === 0) return;
      for (const { agent, status } of answered) {
        for (const v of status.vips) {
          const want = desired.get(v.name);
          if (!want) continue;
          const key = `${agent.name}|${v.name}`;
          const changes = backendReplay(want, v.backends);
          if (changes.length === 0) this.replayRefused.delete(key);
          for (const change of changes) {
            try {
              await agent.changeBackend(v.name, change);
              this.replayRefused.delete(key);
              this.logger.info({ appliance: agent.name, vip: v.name, ...change }, `backend change replayed on ${agent.name}`);
            } catch (err) {
              const message = (err as Error).message;
              if (this.replayRefused.get(key) !== message) this.logger.warn({ appliance: agent.name, vip: v.name, ...change, err: message }, `${agent.name} did not take a replayed backend change`);
              this.replayRefused.set(key, message);
              break;
            }
          }
        }
      }
    });
  }

  /**
   * A keeper that does not answer (or answers a server error) keeps the change in its backlog
   * in the store, sent again in order at each poll until it decides (replayKeepers); a change
   * for a keeper with a backlog joins it, so that it never overtakes an earlier one.
   */
  private async everyKeeper(vip: string, change: BackendChange): Promise<KeeperOutcome[]> {
    const backlog = await this.keeperBacklog();
    const outcomes = await Promise.all(
      [...(this.options.keepers?.values() ?? [])].map(async (keeper): Promise<KeeperOutcome> => {
        const waiting = backlog.get(keeper.name) ?? [];
        if (waiting.length > 0) {
          backlog.set(keeper.name, [...waiting, { vip, change }]);
          return { keeper: keeper.name, ok: false, error: `queued behind ${waiting.length} earlier change(s) it has not taken yet: sent when it answers` };
        }
        try {
          return { keeper: keeper.name, ok: true, result: await keeper.changeBackend(vip, change) };
        } catch (err) {
          const e = err as Error & { status?: number; field?: string };
          if (e.status === 404 && e.field === 'vip') return { keeper: keeper.name, ok: true, skipped: e.message };
          this.logger.warn({ keeper: keeper.name, vip, action: change.action, address: change.address, port: change.port, err: e.message }, 'a keeper did not take a backend change');
          if (!undecided(e)) return { keeper: keeper.name, ok: false, error: e.message };
          backlog.set(keeper.name, [{ vip, change }]);
          return { keeper: keeper.name, ok: false, error: `${e.message} (queued: sent again when it answers)` };
        }
      }),
    );
    if (backlog.size > 0) await this.saveKeeperBacklog(backlog);
    return outcomes;
  }

  private keeperBacklog(): Promise<Map<string, KeeperChange[]>> {
    return this.settingByName<KeeperChange[]>(KEEPER_BACKLOG, 'the keepers\' backlog of backend changes is unreadable: dropped');
  }

  private async saveKeeperBacklog(backlog: Map<string, KeeperChange[]>): Promise<void> {
    await this.store.setSetting(KEEPER_BACKLOG, JSON.stringify(Object.fromEntries([...backlog].filter(([, changes]) => changes.length > 0))));
  }

  /** Each keeper's backlog sent in order: taken or refused changes leave it, the first unanswered one stops it. */
  private replayKeepers(): Promise<void> {
    return this.backendsSerially(async () => {
      const backlog = await this.keeperBacklog();
      if (backlog.size === 0) return;
      for (const [name, changes] of backlog) {
        const keeper = this.options.keepers?.get(name);
        if (!keeper) {
          this.logger.warn({ keeper: name, changes: changes.length }, 'backend changes for a keeper no longer configured dropped');
          backlog.set(name, []);
          continue;
        }
        while (changes.length > 0) {
          const { vip, change } = changes[0]!;
          try {
            await keeper.changeBackend(vip, change);
            this.logger.info({ keeper: name, vip, ...change }, `backend change replayed on keeper ${name}`);
          } catch (err) {
            const e = err as Error & { status?: number; field?: string };
            if (undecided(e)) break;
            if (!(e.status === 404 && e.field === 'vip')) this.logger.warn({ keeper: name, vip, ...change, err: e.message }, `keeper ${name} refused a replayed backend change`);
          }
          changes.shift();
        }
      }
      await this.saveKeeperBacklog(backlog);
    });
  }

  /** `vipshift reload`: every appliance (or the one named) re-reads its configuration file. */
  async reload(appliance?: string): Promise<ApplianceOutcome[]> {
    if (appliance !== undefined && !this.agents.has(appliance)) throw new MigrationRefused(`no appliance named '${appliance}'`, 'appliance', 404);
    return this.everyAppliance((agent) => agent.reload(), appliance);
  }

  private everyAppliance<T>(work: (agent: ApplianceAgent) => Promise<T>, only?: string): Promise<(ApplianceOutcome & { result?: T })[]> {
    return Promise.all(
      [...this.agents.values()]
        .filter((a) => only === undefined || a.name === only)
        .map(async (agent): Promise<ApplianceOutcome & { result?: T }> => {
          try {
            return { appliance: agent.name, ok: true, result: await work(agent) };
          } catch (err) {
            return { appliance: agent.name, ok: false, error: (err as Error).message };
          }
        }),
    );
  }

  // -------------------------------------------------------------------------------------------
  // Status and migrations

  async status(): Promise<SiteStatus> {
    const inventory = new Map((await this.store.appliances()).map((a) => [a.name, a]));
    const appliances = await Promise.all(
      [...this.agents.values()].map(async (agent) => {
        const inv = inventory.get(agent.name)!;
        // A follower does not poll: what it sees now is all it knows.
        const flags = (answered: boolean) => ({ up: this.leading() ? this.isUp(inv) : answered, maintenance: inv.maintenance, capacity: inv.capacity });
        try {
          return { name: agent.name, reachable: true, ...flags(true), ...(await agent.status({ timeoutMs: 5000 })) };
        } catch (err) {
          return { name: agent.name, appliance: agent.name, vips: [], vrrp: [], reachable: false, ...flags(false), error: (err as Error).message };
        }
      }),
    );
    const migrating = this.migratingVips();
    const vips = (await this.store.vips())
      .filter((v) => this.config.vips.some((c) => c.name === v.name))
      .map((v): SiteVip => {
        const onOwner = appliances.find((a) => a.name === v.owner)?.vips.find((s) => s.name === v.name);
        return {
          name: v.name,
          owner: v.owner,
          mode: migrating.has(v.name) ? 'migrating' : (onOwner?.mode ?? 'unknown'),
          entries: onOwner?.entries ?? 0,
          pinned: v.pinned,
          lastMovedAt: v.lastMovedAt === null ? null : new Date(v.lastMovedAt).toISOString(),
          traffic: v.traffic,
          load: v.load,
        };
      });
    return { vips, appliances, migrations: await this.migrations(), rebalance: await this.rebalanceMode(), controllers: await this.controlPlane() };
  }

  /** Migrations under way in this controller. */
  runningMigrations(): MigrationProgress[] {
    return [...this.running.values()].map((r) => r.progress);
  }

  async migrations(): Promise<MigrationProgress[]> {
    const running = this.runningMigrations();
    const ids = new Set(running.map((m) => m.id));
    const past = (await this.store.history(HISTORY))
      .filter((m) => !ids.has(m.id))
      .map((m) => m.progress ?? { ...this.blankProgress(m), ...(m.error ? { error: m.error } : {}) });
    return [...running, ...past];
  }

  async migration(id: string): Promise<MigrationProgress | undefined> {
    return (await this.migrations()).find((m) => m.id === id) ?? ((await this.store.migration(id))?.progress ?? undefined);
  }

  /**
   * Starts moving a VIP; returns at once with its first progress record. `done` resolves when
   * it has finished or aborted. The journal has it before anything runs.
   */
  async start(vip: string, to: string, drill: Drill = {}, reason: MigrationReason = 'operator'): Promise<{ progress: MigrationProgress; done: Promise<MigrationProgress> }> {
    // Claimed before the first await, so that two requests for one VIP cannot both pass the checks.
    this.mustLead();
    if (this.opening) throw new MigrationRefused(`${vip} not moved: the controller is still reading its journal's unfinished migrations; try again in a moment`, 'vip', 503);
    if (this.migratingVips().has(vip)) throw new MigrationRefused(`${vip} is being migrated already`, 'vip');
    this.starting.add(vip);
    try {
      return await this.startClaimed(vip, to, drill, reason);
    } catch (err) {
      if (err instanceof MigrationRefused || err instanceof NotLeaderError || this.store.kind !== 'etcd') throw err;
      // Nothing ran (the journal has no record of it): refused as a whole, saying why.
      throw new MigrationRefused(`${vip} not moved: etcd did not answer (${(err as Error).message}): etcd has no quorum or cannot be reached`, 'vip', 503);
    } finally {
      this.starting.delete(vip);
    }
  }

  /**
   * A VIP goes only to an appliance whose conntrack table has room for its entries, plus the
   * share kept for new connections (table-watch.ts): on a full target the creates of step 3
   * would fail and the migration abort anyway, after holding the VIP's packets for nothing.
   */
  private checkRoom(vip: string, from: string, to: string): void {
    const table = this.lastStatuses.get(to)?.conntrack;
    if (!table) return;
    const entries = this.lastStatuses.get(from)?.vips.find((v) => v.name === vip)?.entries ?? 0;
    const kept = Math.ceil(table.max * (1 - FULL_RATIO));
    if (table.full || table.headroom < entries + kept) {
      throw new MigrationRefused(
        `${to} has no room: its conntrack table holds ${table.entries} of ${table.max} entries${table.full ? ' (full)' : ''}; ${vip} needs ${entries} plus ${kept} kept for new connections`,
        'to',
      );
    }
  }

  private async startClaimed(vip: string, to: string, drill: Drill, reason: MigrationReason): Promise<{ progress: MigrationProgress; done: Promise<MigrationProgress> }> {
    const inventoryVip = (await this.store.vips()).find((v) => v.name === vip);
    if (!inventoryVip || !this.config.vips.some((v) => v.name === vip)) throw new MigrationRefused(`no VIP named '${vip}'`, 'vip', 404);
    const from = inventoryVip.owner;
    const target = this.agents.get(to);
    if (!target) throw new MigrationRefused(`no appliance named '${to}'`, 'to', 404);
    if (from === to) throw new MigrationRefused(`${vip} is already on ${to}`, 'to');
    if (inventoryVip.pinned) throw new MigrationRefused(`${vip} is pinned to ${from} (vipshift unpin ${vip} first)`, 'vip');
    const targetInventory = (await this.store.appliances()).find((a) => a.name === to)!;
    if (targetInventory.maintenance) throw new MigrationRefused(`${to} is in maintenance`, 'to');
    if (this.answered.has(to) && !this.isUp(targetInventory)) throw new MigrationRefused(`${to} is down (no answer to ${targetInventory.failedPolls} polls)`, 'to');
    const source = this.agents.get(from);
    if (!source) throw new MigrationRefused(`${vip} is owned by ${from}, which is not in the inventory`, 'vip');
    this.checkRoom(vip, from, to);

    const id = randomUUID();
    await this.store.begin({ id, vip, source: from, target: to, reason });
    const log = this.logger.child({ migration: id, vip });
    log.info({ from, to, reason, ...drill }, 'migration starting');
    let first: MigrationProgress | undefined;
    // The progress total until step 3 knows it: the source's entries at the last poll.
    const expectedEntries = this.lastStatuses.get(from)?.vips.find((v) => v.name === vip)?.entries;
    const done = migrate(id, vip, source, target, {
      stepTimeoutMs: this.config.migration.stepTimeoutMs,
      ...drill,
      ...(expectedEntries !== undefined ? { expectedEntries } : {}),
      journal: { step: (step) => this.store.step(id, step), commit: () => this.store.commit(id) },
      ...(this.options.pause ? { pause: this.options.pause } : {}),
      // A request of a step given up may still arrive (held by the network) and be answered.
      onLate: (step, err) =>
        log.warn(
          err === undefined ? { step, ok: true } : { step, ok: false, ...(err instanceof ApiError ? { status: err.status } : {}), error: err instanceof Error ? err.message : String(err) },
          'a step given up on its timeout was answered late',
        ),
      onProgress: (p) => {
        const entry = this.running.get(id);
        const was = entry?.progress.step;
        if (was && was !== p.step) log.info({ step: was, ms: was === 'precopy' ? p.precopy?.ms : p.steps[`${was}_ms`] }, 'step done');
        if (entry) entry.progress = p;
        else first = p;
      },
    }).then(async (final) => {
      if (final.recoveryFailed) {
        // The VIP is in between: leave the journal's record open and end it like an interrupted one.
        // A store out of reach (a leader cut off from etcd) leaves it to whoever leads next.
        const record = await this.store.migration(id).catch(() => undefined);
        if (record) this.unrecovered.set(id, { ...record, progress: final, error: final.error ?? null });
        log.error({ error: final.error }, 'migration failed and so did its recovery; trying again at the next poll');
      } else {
        try {
          await this.store.end(id, { state: final.state === 'done' ? 'done' : 'aborted', progress: final, ...(final.error ? { error: final.error } : {}) });
        } catch (err) {
          // The store refused (leadership lost, store unreachable): the record stays open and
          // whoever leads next ends it by the same rules as an interrupted one.
          const record = await this.store.migration(id).catch(() => undefined);
          if (record) this.unrecovered.set(id, { ...record, progress: final });
          log.error({ err: (err as Error).message }, 'the end of the migration could not be written down; it stays open');
        }
      }
      this.running.delete(id);
      this.onFinished?.(final);
      log.info({ state: final.state, totalMs: final.totalMs, steps: final.steps, entries: final.entries.moved, released: final.released, error: final.error }, 'migration finished');
      return final;
    });
    if (!first) throw new Error('the migration reported no progress');
    this.running.set(id, { progress: first, done });
    return { progress: first, done };
  }
}
