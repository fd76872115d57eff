/**
 * Takeover of a VIP whose master went silent (the patent's embodiment 3).
 *
 * A standby appliance keeps every VIP it backs up pre-armed as `migrating`: from the first
 * packet that reaches it after VRRP moved the address here, packets of the VIP are held, never
 * answered with a reset. `becameMaster(vip)` then, with no controller on the path:
 *   1. asks, in parallel, the keepers of the VIP's servers for their copies (`merged`: in dnat
 *      mode a keeper with sockdiag on adds entries rebuilt from its server's sockets, patent
 *      variant 1) and the other appliances' agents for their entries (variants 13/14: the
 *      failed appliance may still answer; it is given `peerTimeoutMs`, no more);
 *   2. installs what came back (the peers' entries first: they are the freshest; a copy of a
 *      connection already installed is skipped by the kernel as existing);
 *   3. activates the VIP: `normal`, then the held packets are released in arrival order.
 *
 * A standby whose conntrack table is full (or that cannot create some entries for another
 * reason) installs what fits and still activates: unlike a migration, whose source keeps the
 * VIP when the target cannot take it, a takeover has no owner to give the VIP back to — the
 * old one went silent. Holding the VIP would stall every connection instead of some. So it says
 * so: the report's `notInstalled` (how many, whether the table was full), an error in the log
 * naming the consequence, and the reason of the `takeover` event.
 */
import type { Logger } from 'pino';
import type { Readable } from 'node:stream';
import type { CreateResult } from '../netlink/conntrack.js';
import type { ApplianceConfig, VipConfig } from '../config/appliance.js';
import type { VipMode } from '../nat/ruleset.js';
import { RECORD_SIZE, RecordStreamReader } from '../netlink/entry-record.js';

/** Where a VIP's entries may come from on a takeover. */
/** What a takeover needs of the appliance: its VIPs, the mode table's hold and the access table. */
export interface TakeoverAppliance {
  /** The configuration running now (a reload replaces it): the VIPs a standby holds. */
  readonly config: Pick<ApplianceConfig, 'vips'>;
  vip(name: string): VipConfig;
  prepare(name: string): Promise<void>;
  activate(name: string): Promise<{ released: number }>;
  deleteEntries(name: string): Promise<void>;
  /** Creates the records that belong to the VIP, refuses (and counts) the others. */
  installEntries(vip: string, records: Buffer, from: { kind: 'keeper' | 'peer'; source: string }): Promise<CreateResult & { refused: number }>;
  /** Deletes entries a migration's pre-copy left here, if any (appliance.ts). */
  dropPrecopy(name: string): Promise<void>;
}

export interface EntrySource {
  name: string;
  /** Entry records of the VIP (no stream header). */
  entries(vip: VipConfig, signal: AbortSignal): Promise<Buffer>;
}

export interface TakeoverOptions {
  config: ApplianceConfig;
  appliance: TakeoverAppliance;
  modes: () => Map<string, VipMode>;
  /** The keeper of each server, by the server's address. */
  keepers: Map<string, EntrySource>;
  /** The other appliances' agents. */
  peers: EntrySource[];
  logger: Logger;
  /** Called once a VIP is `normal` here (the replicator starts on it at once). */
  onActivated?: (vip: string, report: TakeoverReport) => void;
}

export interface SourceReport {
  name: string;
  records?: number;
  /** Records that did not belong to the VIP (config/vip-records.ts): not installed. */
  refused?: number;
  error?: string;
  ms: number;
}

export interface TakeoverReport {
  vip: string;
  /** Wall clock (ms since the epoch) when the takeover began. */
  startedAt: number;
  /** `already normal`: nothing to do (a repeated call). */
  outcome: 'activated' | 'already normal';
  keepers: SourceReport[];
  peers: SourceReport[];
  created: number;
  existing: number;
  failed: number;
  /** Records refused for not belonging to the VIP, from every source. */
  refused: number;
  released: number;
  /** From the call to each step's end. */
  ms: { fetched: number; installed: number; activated: number };
  /** Connections whose entries the kernel refused: activated without them (see the module's comment). */
  notInstalled?: { entries: number; tableFull: boolean; reason: string };
}

export class Takeover {
  private readonly running = new Map<string, Promise<TakeoverReport>>();
  private readonly done: TakeoverReport[] = [];
  private readonly settings: ApplianceConfig['failover'];
  /** Entries of VIPs given up, deleted after `deleteGraceMs`. */
  private readonly deletions = new Map<string, NodeJS.Timeout>();
  private readonly deleteGraceMs: number;

  constructor(private readonly options: TakeoverOptions) {
    this.settings = options.config.failover;
    // Long past the new master's ask to its peers (peerTimeoutMs) and its keepers' answers.
    this.deleteGraceMs = Math.max(2000, 4 * this.settings.peerTimeoutMs);
  }

  /** The VIPs not `normal` or `migrating` here become `migrating` (held), if this appliance is a standby. */
  async arm(): Promise<string[]> {
    if (!this.settings.standby) return [];
    const modes = this.options.modes();
    const armed: string[] = [];
    for (const vip of this.options.appliance.config.vips) {
      if (modes.has(vip.name) || this.running.has(vip.name)) continue;
      await this.options.appliance.prepare(vip.name);
      armed.push(vip.name);
    }
    if (armed.length > 0) this.options.logger.info({ vips: armed }, 'standby: VIPs pre-armed (held until a takeover)');
    return armed;
  }

  /** The last takeovers, newest last. */
  reports(): TakeoverReport[] {
    return [...this.done];
  }

  /** The VRRP instance of `vip` became master here: install its entries and activate it. */
  becameMaster(vip: string): Promise<TakeoverReport> {
    const current = this.running.get(vip);
    if (current) return current;
    const work = this.run(vip).finally(() => this.running.delete(vip));
    this.running.set(vip, work);
    return work;
  }

  /**
   * Another appliance became master for `vip`: it serves the VIP's connections from now on.
   * Hold the VIP again (standby) at once; delete our entries of it, stale from now on, only
   * once the new master has had the time to read them from us (its takeover asks its peers
   * first: a preempting owner coming back finds the freshest entries here).
   */
  async becameBackup(vip: string): Promise<void> {
    await this.running.get(vip)?.catch(() => undefined);
    if (this.options.modes().get(vip) !== 'normal') return;
    await this.options.appliance.prepare(vip);
    this.options.logger.warn({ vip, deleteInMs: this.deleteGraceMs }, 'another appliance is master for the VIP: held again');
    clearTimeout(this.deletions.get(vip));
    const timer = setTimeout(() => {
      this.deletions.delete(vip);
      // Master here again meanwhile: the entries are live again.
      if (this.options.modes().get(vip) !== 'migrating' || this.running.has(vip)) return;
      this.options.appliance.deleteEntries(vip).then(
        () => this.options.logger.info({ vip }, 'stale entries of a VIP another appliance serves deleted'),
        (err: Error) => this.options.logger.error({ vip, err: err.message }, 'deleting stale entries failed'),
      );
    }, this.deleteGraceMs);
    timer.unref();
    this.deletions.set(vip, timer);
  }

  /** Whether a takeover of `vip` is under way here. */
  takingOver(vip: string): boolean {
    return this.running.has(vip);
  }

  /**
   * A migration of `vip` to this appliance begins: the entries of a VIP given up here are not
   * deleted later under it (its pre-copy deletes them first, appliance.ts).
   */
  keepEntries(vip: string): void {
    clearTimeout(this.deletions.get(vip));
    this.deletions.delete(vip);
  }

  /** Cancels pending deletions (the process stops). */
  stop(): void {
    for (const timer of this.deletions.values()) clearTimeout(timer);
    this.deletions.clear();
  }

  private async run(name: string): Promise<TakeoverReport> {
    const t0 = performance.now();
    const since = () => Math.round((performance.now() - t0) * 100) / 100;
    const vip = this.options.appliance.vip(name);
    const mode = this.options.modes().get(name);
    const report: TakeoverReport = {
      vip: name,
      startedAt: Date.now(),
      outcome: 'activated',
      keepers: [],
      peers: [],
      created: 0,
      existing: 0,
      failed: 0,
      refused: 0,
      released: 0,
      ms: { fetched: 0, installed: 0, activated: 0 },
    };
    if (mode === 'normal') return { ...report, outcome: 'already normal' };
    // Not pre-armed (standby off): hold from now on.
    if (mode !== 'migrating') await this.options.appliance.prepare(name);
    await this.options.appliance.dropPrecopy(name);

    const keepers = [...new Set(vip.backends.map((s) => this.options.keepers.get(s.address)).filter((k): k is EntrySource => k !== undefined))];
    type Fetched = { records: Buffer; kind: 'keeper' | 'peer'; report: SourceReport };
    const fetchFrom = async (source: EntrySource, kind: Fetched['kind'], timeoutMs: number, into: SourceReport[]): Promise<Fetched | undefined> => {
      const started = performance.now();
      const ms = () => Math.round((performance.now() - started) * 100) / 100;
      try {
        const records = await source.entries(vip, AbortSignal.timeout(timeoutMs));
        const sourceReport: SourceReport = { name: source.name, records: records.length / RECORD_SIZE, ms: ms() };
        into.push(sourceReport);
        return { records, kind, report: sourceReport };
      } catch (err) {
        into.push({ name: source.name, error: (err as Error).message, ms: ms() });
        return undefined;
      }
    };
    const fromPeers = this.settings.peerTimeoutMs > 0 ? this.options.peers.map((p) => fetchFrom(p, 'peer', this.settings.peerTimeoutMs, report.peers)) : [];
    const fromKeepers = keepers.map((k) => fetchFrom(k, 'keeper', this.settings.fetchTimeoutMs, report.keepers));
    const peerRecords = await Promise.all(fromPeers);
    const keeperRecords = await Promise.all(fromKeepers);
    report.ms.fetched = since();

    let tableFull = 0;
    for (const fetched of [...peerRecords, ...keeperRecords]) {
      if (!fetched || fetched.records.length === 0) continue;
      const r = await this.options.appliance.installEntries(name, fetched.records, { kind: fetched.kind, source: fetched.report.name });
      report.created += r.created;
      report.existing += r.existing;
      report.failed += r.failures.length;
      // conntrack answers a create it has no room for (its table full of connections: it evicts unassured entries first) with ENOMEM.
      tableFull += r.failures.filter((f) => f.code === 'ENOMEM').length;
      if (r.refused > 0) {
        fetched.report.refused = r.refused;
        report.refused += r.refused;
        this.options.logger.warn({ vip: name, source: fetched.report.name, refused: r.refused }, 'takeover: records that do not belong to the VIP refused');
      }
      if (r.failures.length > 0) this.options.logger.warn({ vip: name, failures: r.failures.slice(0, 5) }, 'takeover: some entries were refused by the kernel');
    }
    report.ms.installed = since();
    if (report.failed > 0) {
      const reason = `${report.failed} of ${report.created + report.existing + report.failed} entries not installed${tableFull > 0 ? ` (${tableFull} for a full conntrack table)` : ''}`;
      report.notInstalled = { entries: report.failed, tableFull: tableFull > 0, reason };
      this.options.logger.error(
        { vip: name, notInstalled: report.failed, tableFull: tableFull > 0 },
        `takeover of ${name}: ${reason}; activating with the rest (no other owner to give it back to): those connections' next packets find no entry and are answered with a reset`,
      );
    }

    report.released = (await this.options.appliance.activate(name)).released;
    report.ms.activated = since();
    this.options.onActivated?.(name, report);
    this.done.push(report);
    if (this.done.length > 16) this.done.shift();
    this.options.logger.info(report, `takeover of ${name}`);
    return report;
  }
}

/** Reads a record stream (entry-record.ts: header, then records) into one buffer of records. */
export async function readRecordStream(stream: Readable, signal: AbortSignal): Promise<Buffer> {
  const reader = new RecordStreamReader();
  const parts: Buffer[] = [];
  const abort = () => stream.destroy(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
  if (signal.aborted) abort();
  signal.addEventListener('abort', abort, { once: true });
  try {
    for await (const piece of stream as AsyncIterable<Buffer>) {
      const whole = reader.push(piece);
      if (whole.length > 0) parts.push(Buffer.from(whole));
    }
    reader.end();
  } finally {
    signal.removeEventListener('abort', abort);
  }
  return Buffer.concat(parts);
}
