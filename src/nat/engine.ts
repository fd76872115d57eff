/**
 * The NAT engine of one appliance: the mode table, the nftables ruleset that acts on it, the
 * hold queue, and the sysctls they need, in the calling process's network namespace.
 * It does not add or remove VIP addresses (VRRP / the migration do) and does not touch
 * conntrack entries (the access table has its own module).
 */
import { backendKey, type ApplianceConfig, type VipConfig } from '../config/appliance.js';
import { backendState, poolTable, type BackendState, type Health, type PoolTable } from './pool.js';
import { HoldQueue } from './hold.js';
import { ensureHoldQueueRule, removeHoldQueueRule } from '../kernel/iptables.js';
import { NetlinkElementWriter, type ElementWriter } from './nft-elements.js';
import { listCounters, nft, nftHasQueue, type NftRunner } from '../kernel/nft.js';
import {
  HOLD_MARK,
  TABLE,
  buildModeChange,
  buildPoolChange,
  buildRuleset,
  buildTeardown,
  buildVipAdd,
  buildVipDelete,
  heldDroppedCounter,
  modeElements,
  newConnectionsCounter,
  rejectedCounter,
  trafficCounter,
  unavailableCounter,
  type HoldMethod,
  type VipMode,
} from './ruleset.js';
import { type NftBatch } from '../kernel/nft.js';
import { applySysctls } from '../kernel/sysctl.js';
import { floodCommands, floodVipCommands, sourceLimitedCounter, synproxiedCounter, synproxyEngageCommands, synproxyPortsOf, vipLimitedCounter, type SynproxyPort } from './flood.js';

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
  /** New connections refused (TCP reset) because no backend was up and there is no sorry server. */
  unavailable: number;
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
   * Applies mode and pool changes (element commands only). Default: one nf_tables netlink
   * transaction from this process, which saves the spawn of `nft` on a migration's critical
   * path and nft's parsing of a reload's thousands of slots; the full ruleset at start and
   * stop, and the objects of VIPs added or removed at run time, stay with `nft`.
   */
  elements?: ElementWriter;
}

/** A backend as the engine runs it. */
export interface BackendStatus {
  address: string;
  /** Absent: the VIP's port the client asked for. */
  port?: number;
  weight: number;
  state: BackendState;
  reason: string;
}

/** What a reconfiguration changed (VIP names). */
export interface ReconfigureResult {
  added: string[];
  removed: string[];
  changed: string[];
}

/** A reconfiguration the engine refuses: nothing was changed. */
export class ReconfigureError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
    this.name = 'ReconfigureError';
  }
}

/** What of a VIP a reload cannot change while it exists (its rules and keys are built on them). */
const FIXED_FIELDS = ['id', 'address', 'insideAddress', 'prefixLength', 'protocol', 'ports', 'mode', 'snatPorts', 'scheduler'] as const;

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
  /** Pool changes, reconfigurations and mode-change rounds run one at a time, in order. */
  private serial: Promise<unknown> = Promise.resolve();
  /** What the checks said, per VIP, per backend (backendKey). */
  private readonly health = new Map<string, Map<string, Health>>();
  /** The slot tables in the kernel, per VIP. */
  private readonly pools = new Map<string, PoolTable>();

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
      const pools = new Map(config.vips.map((v) => [v.name, poolTable(v, this.health.get(v.name))]));
      const ruleset = buildRuleset(config, modes, { hold: method, queueNumber: config.hold.queueNumber, table: this.table }, pools);
      ruleset.nftables.push(...floodCommands(config, this.table));
      await this.runner.apply(ruleset);
      for (const [name, pool] of pools) this.pools.set(name, pool);
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
      this.draining ??= this.exclusive(() => this.drain());
    });
  }

  /** Runs `work` after everything asked before it; the next waits for it. */
  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.serial.then(work);
    this.serial = run.catch(() => undefined);
    return run;
  }

  /**
   * Records what a backend's check said and applies the pool that follows, as one atomic
   * transaction of the slots that change hands. Returns the backend's state afterwards, and
   * whether the pool changed.
   */
  setBackendHealth(name: string, key: string, health: Health): Promise<{ state: BackendState; changed: boolean }> {
    return this.exclusive(async () => {
      const vip = this.vip(name);
      const backend = vip.backends.find((b) => backendKey(b) === key);
      if (!backend) throw new Error(`VIP ${name} has no backend ${key}`);
      const healths = new Map(this.health.get(name));
      healths.set(key, health);
      const changed = await this.applyPool(vip, healths);
      this.health.set(name, healths);
      return { state: backendState(backend, health).state, changed };
    });
  }

  /** Installs the pool `vip` has with `healths`; whether anything changed. */
  private async applyPool(vip: VipConfig, healths: ReadonlyMap<string, Health>): Promise<boolean> {
    const from = this.pools.get(vip.name) ?? { targets: [], slots: [], unavailable: false };
    const to = poolTable(vip, healths);
    const batch = buildPoolChange(vip, from, to, { table: this.table });
    if (batch.nftables.length === 0) return false;
    await this.elements.apply(batch);
    this.pools.set(vip.name, to);
    return true;
  }

  /** Every backend of a VIP with its state. */
  backends(name: string): BackendStatus[] {
    const vip = this.vip(name);
    const healths = this.health.get(name);
    return vip.backends.map((b) => ({
      address: b.address,
      ...(b.port === undefined ? {} : { port: b.port }),
      weight: b.weight,
      ...backendState(b, healths?.get(backendKey(b))),
    }));
  }

  /**
   * Moves to `next`: VIPs added and removed, pools changed, in one nft transaction; the mode
   * of every VIP left in place is untouched (a held VIP stays held, its held dnat replies
   * following its backends). Refused, with every reason and nothing changed, when a VIP's
   * fixed fields change. Whether a VIP is in a migration is the appliance's to check.
   */
  reconfigure(next: ApplianceConfig): Promise<ReconfigureResult> {
    return this.exclusive(async () => {
      const config = this.config;
      const method = this.method;
      if (!config || !method) throw new Error('the NAT engine is not started');
      const before = new Map(config.vips.map((v) => [v.name, v]));
      const after = new Map(next.vips.map((v) => [v.name, v]));
      const problems: string[] = [];
      const result: ReconfigureResult = { added: [], removed: [], changed: [] };
      for (const [name, old] of before) {
        const now = after.get(name);
        if (!now) result.removed.push(name);
        else if (JSON.stringify(old) !== JSON.stringify(now)) {
          for (const f of FIXED_FIELDS) {
            if (JSON.stringify(old[f]) !== JSON.stringify(now[f])) problems.push(`VIP ${name}: ${f} cannot change at run time (remove the VIP in one reload, add it back in the next)`);
          }
          result.changed.push(name);
        }
      }
      for (const name of after.keys()) if (!before.has(name)) result.added.push(name);
      if (problems.length > 0) throw new ReconfigureError(problems);

      const options = { table: this.table, hold: method };
      // The pools (and held modes) of the VIPs that stay: element changes only, one netlink
      // transaction however many slots change hands.
      const elements: NftBatch['nftables'] = [];
      const undo: NftBatch['nftables'] = [];
      const pools = new Map<string, PoolTable>();
      const healths = new Map<string, Map<string, Health>>();
      for (const name of result.changed) {
        const vip = after.get(name)!;
        // A backend that stays keeps what its check said; a new one starts up.
        const keys = new Set(vip.backends.map(backendKey));
        const kept = new Map([...(this.health.get(name) ?? [])].filter(([k]) => keys.has(k)));
        healths.set(name, kept);
        const to = poolTable(vip, kept);
        const from = this.pools.get(name) ?? { targets: [], slots: [], unavailable: false };
        pools.set(name, to);
        elements.push(...buildPoolChange(vip, from, to, { table: this.table }).nftables);
        undo.push(...buildPoolChange(before.get(name)!, to, from, { table: this.table }).nftables);
        // A held VIP's elements name its dnat backends (their replies are held too).
        const mode = this.modes.get(name);
        if (mode && JSON.stringify([...modeElements(before.get(name)!, mode)]) !== JSON.stringify([...modeElements(vip, mode)])) {
          elements.push(...buildModeChange(before.get(name)!, mode, 'absent', { table: this.table }).nftables, ...buildModeChange(vip, 'absent', mode, { table: this.table }).nftables);
          undo.push(...buildModeChange(vip, mode, 'absent', { table: this.table }).nftables, ...buildModeChange(before.get(name)!, 'absent', mode, { table: this.table }).nftables);
        }
      }
      // The VIPs added and removed: their chains, maps and counters with the elements that hook
      // them in, one nft transaction. No packet of a VIP that stays goes through them.
      const objects: NftBatch['nftables'] = [];
      for (const name of result.removed) {
        const vip = before.get(name)!;
        objects.push(...buildVipDelete(vip, this.pools.get(name) ?? poolTable(vip), this.modes.get(name), options), ...floodVipCommands(config, vip, this.table, 'delete'));
      }
      for (const name of result.added) {
        const vip = after.get(name)!;
        const pool = poolTable(vip);
        pools.set(name, pool);
        objects.push(...buildVipAdd(vip, pool, undefined, options), ...floodVipCommands(next, vip, this.table, 'add'));
      }
      await this.elements.apply({ nftables: elements });
      if (objects.length > 0) {
        try {
          await this.runner.apply({ nftables: objects });
        } catch (e) {
          // Nothing changed but the pools: put them back, so the refusal changes nothing.
          await this.elements.apply({ nftables: undo });
          throw e;
        }
      }

      for (const name of result.removed) {
        this.hold?.remove(before.get(name)!);
        this.modes.delete(name);
        this.pools.delete(name);
        this.health.delete(name);
      }
      for (const name of result.added) this.hold?.add(after.get(name)!);
      for (const [name, pool] of pools) this.pools.set(name, pool);
      for (const [name, h] of healths) this.health.set(name, h);
      this.config = next;
      return result;
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

  /** The VIP's ports SYNPROXY answers for here, with their seconds left; none with SYNPROXY off. */
  async synproxyPorts(name: string): Promise<SynproxyPort[]> {
    const vip = this.vip(name);
    if (!this.config?.flood.synproxy.enabled) return [];
    return synproxyPortsOf(await this.runner.list(['set', 'ip', this.table, 'synproxy_active']), vip);
  }

  /**
   * Puts the VIP's `ports` in SYNPROXY's hands here for the seconds they had left (a migration's
   * target, from its source); a port already there keeps its own.
   */
  async engageSynproxy(name: string, ports: readonly SynproxyPort[]): Promise<void> {
    const vip = this.vip(name);
    if (!this.config?.flood.synproxy.enabled) return;
    const commands = synproxyEngageCommands(vip, ports, this.table);
    if (commands.length > 0) await this.exclusive(() => this.runner.apply({ nftables: commands }));
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
        unavailable: nftCounters.get(unavailableCounter(vip))?.packets ?? 0,
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
    await this.serial;
    await this.runner.apply(buildTeardown({ table: this.table }));
    this.elements.close?.();
    if (this.method === 'iptables-queue') await removeHoldQueueRule(HOLD_MARK, config.hold.queueNumber);
    await this.hold?.close();
    this.hold = undefined;
    this.config = undefined;
    this.method = undefined;
    this.modes.clear();
    this.pools.clear();
  }
}
