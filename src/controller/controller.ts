/**
 * The controller (the patent's control mechanism 52): knows the appliances and who owns
 * which VIP, runs migrations through the appliances' agents, and answers for the site.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { migrate, type MigrationOptions, type MigrationProgress } from '../migration/migration.js';
import type { ApplianceStatus } from '../nat/appliance.js';
import type { AgentClient } from './agent-client.js';
import type { ControllerConfig } from './config.js';

export interface SiteVip {
  name: string;
  owner: string;
  mode: string;
  entries: number;
}

export interface SiteStatus {
  vips: SiteVip[];
  appliances: (ApplianceStatus & { name: string; reachable: boolean; error?: string })[];
  migrations: MigrationProgress[];
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

const HISTORY = 50;

/** Drills for tests and rehearsals: fail at a step, or skip the hold (the negative control). */
export type Drill = Pick<MigrationOptions, 'abortAt' | 'skipPrepare'>;

export class Controller {
  private readonly owners: Map<string, string>;
  private readonly running = new Map<string, MigrationProgress>();
  private readonly history: MigrationProgress[] = [];
  /** Entries per VIP on its owner, as last seen: the progress total of a migration starting now. */
  private readonly lastEntries = new Map<string, number>();

  constructor(
    readonly config: ControllerConfig,
    private readonly agents: Map<string, AgentClient>,
    private readonly logger: Logger,
  ) {
    this.owners = new Map(config.vips.map((v) => [v.name, v.owner]));
  }

  owner(vip: string): string | undefined {
    return this.owners.get(vip);
  }

  /**
   * Learns the owners from the appliances themselves: the one with the VIP `normal` in
   * its mode table owns it. Used at start, so a restarted controller agrees with the site.
   */
  async reconcile(): Promise<void> {
    for (const agent of this.agents.values()) {
      const status = await agent.status().catch(() => undefined);
      for (const vip of status?.vips ?? []) if (vip.mode === 'normal') this.owners.set(vip.name, agent.name);
    }
  }

  async status(): Promise<SiteStatus> {
    const appliances = await Promise.all(
      [...this.agents.values()].map(async (agent) => {
        try {
          return { name: agent.name, reachable: true, ...(await agent.status()) };
        } catch (err) {
          return { name: agent.name, appliance: agent.name, vips: [], vrrp: [], reachable: false, error: (err as Error).message };
        }
      }),
    );
    const vips = this.config.vips.map((v) => {
      const owner = this.owners.get(v.name) ?? v.owner;
      const onOwner = appliances.find((a) => a.name === owner)?.vips.find((s) => s.name === v.name);
      const migrating = [...this.running.values()].find((m) => m.vip === v.name);
      if (onOwner) this.lastEntries.set(v.name, onOwner.entries);
      return {
        name: v.name,
        owner,
        mode: migrating ? 'migrating' : (onOwner?.mode ?? 'unknown'),
        entries: onOwner?.entries ?? 0,
      };
    });
    return { vips, appliances, migrations: this.migrations() };
  }

  migrations(): MigrationProgress[] {
    return [...this.running.values(), ...this.history];
  }

  migration(id: string): MigrationProgress | undefined {
    return this.running.get(id) ?? this.history.find((m) => m.id === id);
  }

  /**
   * Starts moving a VIP; resolves once it is under way with its first progress record.
   * `done` resolves when it has finished or aborted.
   */
  start(vip: string, to: string, drill: Drill = {}): { progress: MigrationProgress; done: Promise<MigrationProgress> } {
    const from = this.owners.get(vip);
    if (!from) throw new MigrationRefused(`no VIP named '${vip}'`, 'vip', 404);
    const target = this.agents.get(to);
    if (!target) throw new MigrationRefused(`no appliance named '${to}'`, 'to', 404);
    if (from === to) throw new MigrationRefused(`${vip} is already on ${to}`, 'to');
    if ([...this.running.values()].some((m) => m.vip === vip)) throw new MigrationRefused(`${vip} is being migrated already`, 'vip');
    const source = this.agents.get(from);
    if (!source) throw new MigrationRefused(`${vip} is owned by ${from}, which is not in the inventory`, 'vip');
    const id = randomUUID();
    const log = this.logger.child({ migration: id, vip });
    log.info({ from, to, ...drill }, 'migration starting');
    const done = migrate(id, vip, source, target, {
      stepTimeoutMs: this.config.migration.stepTimeoutMs,
      ...drill,
      ...(this.lastEntries.has(vip) ? { expectedEntries: this.lastEntries.get(vip) } : {}),
      onProgress: (p) => {
        const before = this.running.get(id);
        if (before && before.step !== p.step) log.info({ step: before.step, ms: p.steps[`${before.step}_ms`] }, 'step done');
        this.running.set(id, p);
      },
    }).then((final) => {
      this.running.delete(id);
      this.history.unshift(final);
      this.history.length = Math.min(this.history.length, HISTORY);
      if (final.state === 'done') this.owners.set(vip, to);
      log.info({ state: final.state, totalMs: final.totalMs, steps: final.steps, entries: final.entries.moved, released: final.released, error: final.error }, 'migration finished');
      return final;
    });
    const progress = this.running.get(id);
    if (!progress) throw new Error('the migration reported no progress');
    return { progress, done };
  }
}
