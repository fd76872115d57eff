/**
 * The NAT engine of one appliance: the mode table, the nftables ruleset that acts on it, the
 * hold queue, and the sysctls they need, in the calling process's network namespace.
 * It does not add or remove VIP addresses (VRRP / the migration do) and does not touch
 * conntrack entries (the access table has its own module).
 */
import type { ApplianceConfig, VipConfig } from '../config/appliance.js';
import { HoldQueue } from './hold.js';
import { ensureHoldQueueRule, removeHoldQueueRule } from '../kernel/iptables.js';
import { NetlinkElementWriter, type ElementWriter } from './nft-elements.js';
import { listCounters, nft, nftHasQueue, type NftRunner } from '../kernel/nft.js';
import { HOLD_MARK, TABLE, buildModeChange, buildRuleset, buildTeardown, heldDroppedCounter, newConnectionsCounter, rejectedCounter, trafficCounter, type HoldMethod, type VipMode } from './ruleset.js';
import { type NftBatch } from '../kernel/nft.js';
import { applySysctls } from '../kernel/sysctl.js';
import { floodCommands, sourceLimitedCounter, synproxiedCounter, vipLimitedCounter } from './flood.js';

export interface VipCounters {
  /** Packets and bytes of the VIP's connections forwarded by this appliance, both directions. */
  packets: number;
  bytes: number;
  /** Connections this appliance NATed as new (not the ones it imported in a migration). */
  newConnections: number;
  /** Unknown accesses answered with a reset. */
  rejected: number;
  /** SYNs answered by SYNPROXY (a SYN flood, or a rate above flood.synproxy.aboveRate): no entry made. */
  synproxied: number;
  /** New connections dropped over the VIP's rate limit / over a client address's limit (flood.ts). */
  limitedVip: number;
  limitedSource: number;
  /** Held now, released, dropped because the hold was full, dropped by a discard or policy drop. */
  held: number;
  released: number;
  overflowed: number;
  dropped: number;
}

export interface NatEngineOptions {
  /** nftables table name (default `vipshift`). */
  table?: string;
  /** Force a hold method instead of detecting one (policy drop always uses 'drop'). */
  holdMethod?: HoldMethod;
  nft?: NftRunner;
  /**
   * Applies mode changes (element commands only). Default: one nf_tables netlink
   * transaction from this process, which saves the spawn of `nft` on a migration's
   * critical path; the full ruleset at start and stop stays with `nft`.
   */
  elements?: ElementWriter;
}

interface QueuedChange {
  name: string;
  mode: VipMode | 'absent';
  resolve: () => void;
  reject: (e: Error) => void;
}

export class NatEngine {
  private config: ApplianceConfig | undefined;
  private readonly modes = new Map<string, VipMode>();
  private hold: HoldQueue | undefined;
  private method: HoldMethod | undefined;
  private readonly table: string;
  private readonly runner: NftRunner;
  private readonly elements: ElementWriter;
  /**
   * Mode changes run one at a time, so each transaction starts from the modes the last one
   * left; the changes asked for while one is applied go together in the next transaction.
   */
  private queued: QueuedChange[] = [];
  private draining: Promise<void> | undefined;

  constructor(private readonly options: NatEngineOptions = {}) {
    this.table = options.table ?? TABLE;
    this.runner = options.nft ?? nft;
    this.elements = options.elements ?? new NetlinkElementWriter();
  }

  /** How held packets are held on this kernel: 'nft-queue', 'iptables-queue' or 'drop'. */
  get holdMethod(): HoldMethod | undefined {
    return this.method;
  }

  /**
   * Sysctls, the hold queue, then the ruleset with the VIPs in their first modes: by default
   * those this appliance owns `normal`; a standby starts with every VIP held instead.
   */
  async start(config: ApplianceConfig, initialModes?: Map<string, VipMode>): Promise<void> {
    if (this.config) throw new Error('the NAT engine is already started');
    await applySysctls();
    const method: HoldMethod =
      config.hold.policy === 'drop' ? 'drop' : (this.options.holdMethod ?? ((await nftHasQueue(this.runner)) ? 'nft-queue' : 'iptables-queue'));
    const modes = new Map<string, VipMode>(initialModes ?? config.vips.filter((v) => v.owner === config.appliance).map((v) => [v.name, 'normal']));
    let hold: HoldQueue | undefined;
    try {
      if (method !== 'drop') {
        hold = new HoldQueue({ queueNumber: config.hold.queueNumber, queueLength: config.hold.queueLength, vips: config.vips });
        // Held from the first packet: a VIP that starts `migrating` is held like one put there later.
        for (const [name, mode] of modes) if (mode === 'migrating') hold.hold(name);
        await hold.open();
      }
      if (method === 'iptables-queue') await ensureHoldQueueRule(HOLD_MARK, config.hold.queueNumber);
      const ruleset = buildRuleset(config, modes, { hold: method, queueNumber: config.hold.queueNumber, table: this.table });
      ruleset.nftables.push(...floodCommands(config, this.table));
      await this.runner.apply(ruleset);
    } catch (e) {
      await hold?.close().catch(() => undefined);
      if (method === 'iptables-queue') await removeHoldQueueRule(HOLD_MARK, config.hold.queueNumber).catch(() => undefined);
      throw e;
    }
    this.config = config;
    this.method = method;
    this.hold = hold;
    for (const [name, mode] of modes) this.modes.set(name, mode);
  }

  /** The mode table: VIP name → mode; a VIP not in it is not ours. */
  modeTable(): Map<string, VipMode> {
    return new Map(this.modes);
  }

  private vip(name: string): VipConfig {
    if (!this.config) throw new Error('the NAT engine is not started');
    const vip = this.config.vips.find((v) => v.name === name);
    if (!vip) throw new Error(`no VIP named '${name}' in the configuration of ${this.config.appliance}`);
    return vip;
  }

  /**
   * Puts a VIP in a mode with one atomic transaction of set elements. Going to `migrating`
   * starts holding its packets; leaving it does not release what is held: call release()
   * (after `normal`) or discard().
   */
  setMode(name: string, mode: VipMode | 'absent'): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queued.push({ name, mode, resolve, reject });
      this.draining ??= this.drain();
    });
  }

  private async drain(): Promise<void> {
    while (this.queued.length > 0) await this.applyTogether(this.queued.splice(0));
    this.draining = undefined;
  }

  /** The element commands of one change against `modes` (updated); empty if nothing changes. */
  private plan(change: QueuedChange, modes: Map<string, VipMode>): NftBatch {
    const vip = this.vip(change.name);
    const from = modes.get(change.name) ?? 'absent';
    if (change.mode === 'absent') modes.delete(change.name);
    else modes.set(change.name, change.mode);
    return buildModeChange(vip, from, change.mode, { table: this.table });
  }

  /**
   * Several queued changes in one transaction. If the kernel refuses it, nothing changed:
   * each is then tried alone, so one bad change does not fail the others.
   */
  private async applyTogether(changes: QueuedChange[]): Promise<void> {
    if (changes.length === 1) return this.applyAlone(changes[0]!);
    const modes = new Map(this.modes);
    const planned: QueuedChange[] = [];
    const batch: NftBatch = { nftables: [] };
    const holding: string[] = [];
    for (const change of changes) {
      try {
        const commands = this.plan(change, modes).nftables;
        if (commands.length > 0 && change.mode === 'migrating') holding.push(change.name);
        batch.nftables.push(...commands);
        planned.push(change);
      } catch (e) {
        change.reject(e as Error);
      }
    }
    try {
      for (const name of holding) this.hold?.hold(name);
      await this.elements.apply(batch);
    } catch {
      for (const c of planned) await this.applyAlone(c);
      return;
    }
    this.modes.clear();
    for (const [name, mode] of modes) this.modes.set(name, mode);
    for (const c of planned) c.resolve();
  }

  private async applyAlone(change: QueuedChange): Promise<void> {
    try {
      const modes = new Map(this.modes);
      const batch = this.plan(change, modes);
      if (batch.nftables.length > 0) {
        if (change.mode === 'migrating') this.hold?.hold(change.name);
        await this.elements.apply(batch);
      }
      this.modes.clear();
      for (const [name, mode] of modes) this.modes.set(name, mode);
      change.resolve();
    } catch (e) {
      change.reject(e as Error);
    }
  }

  /** Accepts the VIP's held packets in the order they arrived; returns how many. */
  release(name: string): number {
    this.vip(name);
    return this.hold?.release(name) ?? 0;
  }

  /** Drops the VIP's held packets; returns how many. */
  discard(name: string): number {
    this.vip(name);
    return this.hold?.discard(name) ?? 0;
  }

  async counters(name: string): Promise<VipCounters> {
    const counters = await this.allCounters([name]);
    return counters.get(name)!;
  }

  /** Counters of several VIPs (default: all) from one listing of the table's counters. */
  async allCounters(names: string[] = this.config?.vips.map((v) => v.name) ?? []): Promise<Map<string, VipCounters>> {
    const vips = names.map((n) => this.vip(n));
    const nftCounters = await listCounters(this.table, this.runner);
    const out = new Map<string, VipCounters>();
    for (const vip of vips) {
      const traffic = nftCounters.get(trafficCounter(vip));
      const hold = this.hold?.counters(vip.name) ?? { held: 0, released: 0, overflowed: 0, dropped: 0 };
      out.set(vip.name, {
        packets: traffic?.packets ?? 0,
        bytes: traffic?.bytes ?? 0,
        newConnections: nftCounters.get(newConnectionsCounter(vip))?.packets ?? 0,
        rejected: nftCounters.get(rejectedCounter(vip))?.packets ?? 0,
        synproxied: nftCounters.get(synproxiedCounter(vip))?.packets ?? 0,
        limitedVip: nftCounters.get(vipLimitedCounter(vip))?.packets ?? 0,
        limitedSource: nftCounters.get(sourceLimitedCounter(vip))?.packets ?? 0,
        held: hold.held,
        released: hold.released,
        overflowed: hold.overflowed,
        dropped: hold.dropped + (nftCounters.get(heldDroppedCounter(vip))?.packets ?? 0),
      });
    }
    return out;
  }

  /** Hold-queue health: undecodable messages, refused verdicts, receive-buffer overruns. */
  holdHealth(): { malformed: number; unattributed: number; verdictErrors: number; overruns: number } {
    const h = this.hold;
    return { malformed: h?.malformed ?? 0, unattributed: h?.book.unattributed ?? 0, verdictErrors: h?.verdictErrors ?? 0, overruns: h?.overruns ?? 0 };
  }

  /** Removes the table, the iptables-nft rule and the queue (packets still held are dropped). */
  async stop(): Promise<void> {
    const config = this.config;
    if (!config) return;
    await this.draining;
    await this.runner.apply(buildTeardown({ table: this.table }));
    this.elements.close?.();
    if (this.method === 'iptables-queue') await removeHoldQueueRule(HOLD_MARK, config.hold.queueNumber);
    await this.hold?.close();
    this.hold = undefined;
    this.config = undefined;
    this.method = undefined;
    this.modes.clear();
  }
}
