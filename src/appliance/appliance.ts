/**
 * One appliance: the NAT engine (nftables + hold queue), the access table (conntrack)
 * and the VIP addresses, driven through the steps of a migration. The agent API
 * (agent.ts) is a thin HTTP face over this class.
 */
import type { Readable } from 'node:stream';
import type { Conntrack, CreateResult } from '../netlink/conntrack.js';
import { IPS_DYING, IPS_SEEN_REPLY } from '../netlink/ctnetlink.js';
import { RECORD_SIZE, RecordStreamReader, encodeStreamHeader, handshakeCompleted, readRecord, selectRecords, worthMoving, rec } from '../netlink/entry-record.js';
import type { BfdStatus } from '../vrrp/bfd-peers.js';
import type { InstanceStatus } from '../vrrp/speaker.js';
import type { AccessTableMirror, Difference, MirrorStatus } from '../nat/access-table-mirror.js';
import type { VipAddressing } from './addressing.js';
import type { TableStatus, TableWatch } from './table-watch.js';
import { EntryCounts } from '../nat/entry-counts.js';
import { backendKey, findBackend, type ApplianceConfig, type VipConfig } from '../config/appliance.js';
import { checkRecords, type RecordRefusal } from '../config/vip-records.js';
import { ReconfigureError, type BackendStatus, type NatEngine, type ReconfigureResult, type VipCounters } from '../nat/engine.js';
import type { SynproxyPort } from '../nat/flood.js';
import { editBackends, type ApplianceConfigFile, type BackendChange } from '../config/edit.js';
import type { VipMode } from '../nat/ruleset.js';
import type { BackendCheckStatus } from '../health/monitor.js';
import { targetPort } from '../health/targets.js';

export interface BackendView extends BackendStatus {
  /** Live access-table entries to this backend on this appliance. */
  connections: number;
  /** Its health check here (src/health): absent when it is not checked. */
  check?: BackendCheckStatus;
}

export interface VipStatus extends VipCounters {
  name: string;
  address: string;
  mode: VipMode | 'absent';
  /** Live access-table entries of the VIP on this appliance. */
  entries: number;
  backends: BackendView[];
}

export interface ApplianceStatus {
  appliance: string;
  vips: VipStatus[];
  /** VRRP state per instance (VRID), when this appliance runs the speaker. */
  vrrp: InstanceStatus[];
  /** BFD to the VRRP peers (RFC 5880), when an instance uses it. */
  bfd?: BfdStatus;
  /** The access table mirror (access-table-mirror.ts), when the appliance keeps one. */
  mirror?: MirrorStatus;
  /** The conntrack table's size, headroom and refusals (table-watch.ts), when watched. */
  conntrack?: TableStatus;
}

/** A pre-copy repeats while the last round's difference had more entries than this. */
export const PRECOPY_ROUND_UNTIL = 2000;
/** At most this many rounds after the first copy: a VIP changing faster is cut over anyway. */
export const PRECOPY_MAX_ROUNDS = 3;

/** A target's pre-copy: entries it holds for the VIP now, failures, and each further round's difference. */
export interface PrecopyOutcome {
  created: number;
  failed: number;
  rounds: number[];
  /** The mirror indexing the entries created here, at the pre-copy's end (ms). */
  indexMs?: number;
}

/** What a target made of a difference (step 3 after a pre-copy, or a further pre-copy round). */
export interface DifferenceResult {
  /** Entries created or recreated (changed ones, timeouts refreshed). */
  created: number;
  /** Entries deleted because they ended on the source. */
  ended: number;
  failed: number;
  /** The VIP's entries here from the migration, pre-copy and differences together. */
  total: number;
}

export class UnknownVipError extends Error {
  constructor(readonly vip: string) {
    super(`no VIP named '${vip}' in this appliance's configuration`);
  }
}

/** What else the appliance reports on or reads from, when it has it. */
export interface ApplianceParts {
  /** VRRP state per instance (the speaker). */
  vrrpState?: () => InstanceStatus[];
  /** BFD sessions to the peers (the speaker), undefined when no instance uses BFD. */
  bfdState?: () => BfdStatus | undefined;
  /** The access table kept in memory (access-table-mirror.ts); without it, every read dumps. */
  mirror?: AccessTableMirror;
  /** The conntrack table's fill (table-watch.ts). */
  table?: TableWatch;
  /** The backends' health checks (src/health), by VIP, address and checked port. */
  checks?: { statusOf(vip: string, address: string, port: number): BackendCheckStatus | undefined };
  /** Reads the configuration for a reload (default: configFile). */
  loadConfig?: () => Promise<ApplianceConfig>;
  /** The configuration file: re-read by a reload, written by backend changes made at run time. */
  configFile?: ApplianceConfigFile;
  /** The other parts built from the configuration, which follow a change made at run time (start.ts). */
  followers?: readonly ConfigFollower[];
}

/**
 * A part built from the configuration (the access table mirror, replication, the health
 * checks...) that follows a reload or a backend change once the NAT engine and the addresses
 * have. startAppliance composes them; each says which top-level fields it takes at run time.
 */
export interface ConfigFollower {
  /** Top-level fields of the configuration this part takes at run time: a change of any other is refused. */
  readonly fields?: readonly string[];
  follow(next: ApplianceConfig, change: ReconfigureResult): void | Promise<void>;
}

/** A backend named by a request (a health check, the CLI) that the VIP does not have. */
export class UnknownBackendError extends Error {
  constructor(
    readonly vip: string,
    readonly backend: string,
  ) {
    super(`VIP ${vip} has no backend ${backend}`);
  }
}

/**
 * How long a reader of a VIP's entries waits for a rebuild of the access table mirror under
 * way before it dumps the kernel's table itself (a dump beside the rebuild walks the same
 * table and slows both). `hold`: step 3's whole table inside the hold, and the entries of a
 * backend going down whose clients must learn at once — a dump of one VIP costs the hold less
 * than a rebuild of all of them. `precopy`: the pre-copy's snapshot, before the hold, within
 * the target's request (a mirror that cannot vouch by then means a whole step 3).
 * `console`: a person waiting for a page. `background`: the replicator's resynchronisations and
 * refreshes of the keepers' copies, whose changes wait in the backlog meanwhile.
 */
export const READ_WAIT_MS = { hold: 0, precopy: 20_000, console: 20_000, background: 600_000 } as const;

/** Per-backend connection counts are read at most this often (each reads the VIP's entries). */
const CONNECTIONS_TTL_MS = 1000;
/**
 * A VIP counts as in a migration from its first step 3 on this appliance (export or import)
 * to its last (forget, delete-entries, activate, abort), or for this long if the controller
 * never comes back to it: a reload must not change it under the migration's feet.
 */
const MIGRATION_LOCK_MS = 120_000;

/** Entry records another member sent that do not belong to the VIP they were sent for. */
export interface RefusedEntries {
  /** A migration's import, a keeper's or a peer's answer to a takeover. */
  kind: 'import' | 'keeper' | 'peer';
  /** The member that sent them. */
  source: string;
  vip: string;
  reason: RecordRefusal;
  records: number;
}

export class Appliance {
  private current: ApplianceConfig;
  private vips: Map<string, VipConfig>;
  private readonly migrations = new Map<string, number>();
  /** Reloads and backend changes run one at a time (each reads, changes and writes the file). */
  private changing: Promise<unknown> = Promise.resolve();
  private readonly connections = new Map<string, { at: number; counts: Promise<Map<string, number>> }>();
  private readonly refused = new Map<string, RefusedEntries>();
  private readonly mirror: AccessTableMirror | undefined;
  private readonly counts: EntryCounts;
  /** VIPs with entries pre-copied here by a migration, and how many (until step 4 or an abort). */
  private readonly precopied = new Map<string, number>();
  /** Pre-copies running here: an abort stops one and waits for it before deleting what it made. */
  private readonly precopying = new Map<string, { generation: number; work: Promise<unknown> }>();
  private generation = 0;

  constructor(
    config: ApplianceConfig,
    private readonly engine: NatEngine,
    private readonly conntrack: Conntrack,
    private readonly addressing: VipAddressing,
    private readonly parts: ApplianceParts = {},
  ) {
    this.mirror = parts.mirror;
    this.current = config;
    this.vips = new Map(config.vips.map((v) => [v.name, v]));
    this.counts = new EntryCounts(() => this.conntrack.countByMark());
  }

  /** The configuration running now (a reload or a backend change replaces it). */
  get config(): ApplianceConfig {
    return this.current;
  }

  private migrating(name: string, on: boolean): void {
    if (on) this.migrations.set(name, performance.now());
    else this.migrations.delete(name);
  }

  private inMigration(name: string): boolean {
    const since = this.migrations.get(name);
    return since !== undefined && performance.now() - since < MIGRATION_LOCK_MS;
  }

  /**
   * `vipshift reload` and SIGHUP: re-reads the configuration file and applies the difference
   * (VIPs added and removed, backends changed, keepers) to the NAT engine, then to every part
   * that follows the configuration. An invalid file (ConfigError, file:line:field) or a change
   * that cannot be made at run time (ReconfigureError, naming the field) changes nothing.
   */
  reload(): Promise<ReconfigureResult> {
    return this.serially(async () => {
      const { loadConfig, configFile } = this.parts;
      if (loadConfig) return this.applyConfig(await loadConfig());
      if (!configFile) throw new Error('this appliance was started without a configuration file to re-read');
      return this.applyConfig((await configFile.read()).config);
    });
  }

  /**
   * Adds, removes, weights or drains one backend of a VIP: the configuration file is edited
   * (comments kept), the result validated and applied as one nft transaction, then written,
   * so the box runs on its last copy across a restart. Nothing changes if any step refuses.
   */
  changeBackend(vip: string, change: BackendChange): Promise<{ vip: string; backends: BackendView[] }> {
    return this.serially(async () => {
      const file = this.parts.configFile;
      if (!file) throw new ReconfigureError(['this appliance runs from keepalived.conf: change its backends there and reload']);
      this.vip(vip);
      const { text } = await file.read();
      const edited = editBackends(text, file.path, vip, change);
      await this.applyConfig(edited.config);
      await file.write(edited.text);
      const connections = await this.backendConnections(this.vip(vip));
      return { vip, backends: this.engine.backends(vip).map((b) => ({ ...b, connections: connections.get(backendKey(b)) ?? 0 })) };
    });
  }

  private serially<T>(work: () => Promise<T>): Promise<T> {
    const run = this.changing.then(work);
    this.changing = run.catch(() => undefined);
    return run;
  }

  private async applyConfig(next: ApplianceConfig): Promise<ReconfigureResult> {
    const before = this.current;
    const problems: string[] = [];
    const followers = this.parts.followers ?? [];
    const changeable = new Set(['vips', ...followers.flatMap((f) => f.fields ?? [])]);
    for (const key of new Set([...Object.keys(before), ...Object.keys(next)])) {
      if (changeable.has(key)) continue;
      const a = JSON.stringify((before as unknown as Record<string, unknown>)[key]);
      const b = JSON.stringify((next as unknown as Record<string, unknown>)[key]);
      if (a !== b) problems.push(`${key}: cannot change at run time (restart the appliance)`);
    }
    const after = new Map(next.vips.map((v) => [v.name, v]));
    for (const vip of before.vips) {
      const now = after.get(vip.name);
      if (JSON.stringify(now) !== JSON.stringify(vip) && this.inMigration(vip.name)) problems.push(`VIP ${vip.name} is in a migration on this appliance: reload again once it is done`);
    }
    if (problems.length > 0) throw new ReconfigureError(problems);
    const modes = this.engine.modeTable();
    const result = await this.engine.reconfigure(next);
    this.current = next;
    this.vips = new Map(next.vips.map((v) => [v.name, v]));
    this.connections.clear();
    for (const name of result.removed) {
      const vip = before.vips.find((v) => v.name === name)!;
      if (modes.get(name) === 'normal') await this.addressing.release(vip);
    }
    // A VIP added here for this appliance to own starts serving, as at start.
    for (const name of result.added) {
      const vip = after.get(name)!;
      if (vip.owner !== next.appliance) continue;
      await this.addressing.claim(vip);
      await this.engine.setMode(name, 'normal');
    }
    for (const follower of followers) await follower.follow(next, result);
    return result;
  }

  vip(name: string): VipConfig {
    const vip = this.vips.get(name);
    if (!vip) throw new UnknownVipError(name);
    return vip;
  }

  /**
   * At start the mode table follows who holds the addresses (addressing.ts): a VIP is
   * `normal` here exactly when this appliance holds it, whatever the configuration's
   * first owner says. With `takeOver` (a standby, whose engine starts with every VIP held)
   * a VIP held here becomes `normal` through it — its connections restored from the
   * keepers' copies and the peers first: this appliance may be coming back to VIPs whose
   * connections another appliance carried meanwhile — and the others stay held.
   */
  async start(takeOver?: (vip: string) => Promise<unknown>): Promise<void> {
    const held = await this.addressing.settle([...this.vips.values()]);
    const modes = this.engine.modeTable();
    for (const vip of this.vips.values()) {
      if (takeOver) {
        if (held.has(vip.name)) await takeOver(vip.name);
        continue;
      }
      const want = held.has(vip.name) ? 'normal' : 'absent';
      if ((modes.get(vip.name) ?? 'absent') !== want) await this.engine.setMode(vip.name, want);
    }
  }

  async status(): Promise<ApplianceStatus> {
    const modes = this.engine.modeTable();
    const counters = await this.engine.allCounters();
    const vips: VipStatus[] = [];
    for (const vip of this.vips.values()) {
      const connections = await this.backendConnections(vip);
      vips.push({
        name: vip.name,
        address: vip.address,
        mode: modes.get(vip.name) ?? 'absent',
        entries: this.mirror?.count(vip.id) ?? (await this.counts.get(vip.id)),
        ...counters.get(vip.name)!,
        backends: this.engine.backends(vip.name).map((b) => {
          const check = this.parts.checks?.statusOf(vip.name, b.address, targetPort(vip, b));
          return { ...b, connections: connections.get(backendKey(b)) ?? 0, ...(check ? { check } : {}) };
        }),
      });
    }
    const bfd = this.parts.bfdState?.();
    const conntrack = await this.parts.table?.look();
    return {
      appliance: this.config.appliance,
      vips,
      vrrp: this.parts.vrrpState?.() ?? [],
      ...(bfd ? { bfd } : {}),
      ...(this.mirror ? { mirror: this.mirror.status() } : {}),
      ...(conntrack ? { conntrack } : {}),
    };
  }

  /**
   * What a backend's health check says, applied to the VIP's pool as one nft transaction
   * (only the slots that change hands). A backend going down under `onDown: reset` also
   * loses its live connections' entries, so each client's next packet gets a reset.
   * `backend.port` names a backend configured with that port, or one without a port (it
   * serves the VIP's ports) when it is one of the VIP's ports.
   *
   * And in every case a TCP VIP loses the entries of the handshakes nobody answered yet
   * (SEEN_REPLY clear): the dead backend's are no connection, and conntrack keeps them in
   * SYN_SENT for 120 s, where they catch the client's retransmitted SYN (and any new
   * connection reusing the tuple) and send it to the dead backend again; deleted, that SYN
   * is a new connection and meets the new pool. One request, filtered inside the kernel by
   * the VIP's mark and the status bit (a dump would walk the whole table to userspace); it
   * also takes the few handshakes to live backends still waiting for their SYN-ACK at that
   * instant, which then complete on the client's retransmitted SYN, a second late.
   */
  async setBackendHealth(name: string, backend: { address: string; port: number }, up: boolean, reason: string): Promise<void> {
    const vip = this.vip(name);
    const b = findBackend(vip, backend.address, backend.port);
    if (!b) throw new UnknownBackendError(name, `${backend.address}:${backend.port}`);
    const { state } = await this.engine.setBackendHealth(name, backendKey(b), { up, reason });
    if (state !== 'down') return;
    if (vip.protocol === 'tcp') await this.conntrack.deleteByMark(vip.id, 0xffffffff, { value: 0, mask: IPS_SEEN_REPLY });
    if (vip.onDown === 'reset') await this.resetConnections(vip, b);
    this.counts.invalidate();
  }

  /** Deletes the entries of `vip`'s connections to backend `b`: their clients learn at once. */
  private async resetConnections(vip: VipConfig, b: VipConfig['backends'][number]): Promise<number> {
    const doomed: { src: string; dst: string; sport: number; dport: number; proto: number }[] = [];
    await this.readRecords(vip.id, (chunk) => {
      for (let o = 0; o + RECORD_SIZE <= chunk.length; o += RECORD_SIZE) {
        const r = readRecord(chunk, o);
        if (r.server.address === b.address && (b.port === undefined ? vip.ports.includes(r.server.port) : r.server.port === b.port)) {
          doomed.push({ src: r.client.address, dst: r.vip.address, sport: r.client.port, dport: r.vip.port, proto: r.proto });
        }
      }
    }, READ_WAIT_MS.hold);
    let deleted = 0;
    for (const tuple of doomed) if (await this.conntrack.delete(tuple)) deleted++;
    this.counts.invalidate();
    this.connections.delete(vip.name);
    return deleted;
  }

  /**
   * Live entries per backend (backendKey) of a VIP, read at most once a second. While the
   * mirror rebuilds, the last counts stand whatever their age: a status polled every few
   * seconds would otherwise dump every VIP's table beside the rebuild (at most one dump per
   * VIP when there are none yet: a status does not wait for a rebuild).
   */
  private backendConnections(vip: VipConfig): Promise<Map<string, number>> {
    const cached = this.connections.get(vip.name);
    if (cached && (performance.now() - cached.at < CONNECTIONS_TTL_MS || this.mirror?.rebuilding)) return cached.counts;
    const counts = (async () => {
      // Keyed by the server's address and port as numbers: a status may count 100,000 entries.
      const byServer = new Map<number, number>();
      const count = (chunk: Buffer) => {
        for (let o = 0; o + RECORD_SIZE <= chunk.length; o += RECORD_SIZE) {
          const at = rec.serverAddress(chunk, o) * 65536 + rec.serverPort(chunk, o);
          byServer.set(at, (byServer.get(at) ?? 0) + 1);
        }
      };
      // From the mirror as it is (no barrier: a count); a dump only without a complete mirror.
      const current = this.mirror?.current(vip.id);
      if (current) count(current);
      else await this.readRecords(vip.id, count, READ_WAIT_MS.hold);
      const out = new Map<string, number>();
      for (const b of vip.backends) {
        const address = b.address.split('.').reduce((n, x) => n * 256 + Number(x), 0);
        const ports = b.port === undefined ? vip.ports : [b.port];
        out.set(backendKey(b), ports.reduce((n, p) => n + (byServer.get(address * 65536 + p) ?? 0), 0));
      }
      return out;
    })();
    this.connections.set(vip.name, { at: performance.now(), counts });
    counts.catch(() => this.connections.delete(vip.name));
    return counts;
  }

  // Step 1 (target).
  async prepare(name: string): Promise<void> {
    this.vip(name);
    await this.engine.setMode(name, 'migrating');
  }

  // Step 2: the VIP and its inside address move together (addressing.ts).
  releaseAddress(name: string): Promise<void> {
    return this.addressing.release(this.vip(name));
  }

  claimAddress(name: string): Promise<void> {
    return this.addressing.claim(this.vip(name));
  }

  /**
   * A VIP's entries as record chunks (by its ct mark): from the mirror when it vouches for
   * being complete, else from a dump of the kernel's table. Step 3's export, the console's
   * pages and the replicator's resynchronisations and refreshes all read here, each waiting
   * for a rebuild of the mirror under way as long as it may (READ_WAIT_MS).
   */
  async readRecords(mark: number, onChunk: (records: Buffer) => void, waitMs: number = READ_WAIT_MS.hold): Promise<{ records: number; from: 'mirror' | 'dump' }> {
    const snapshot = await this.mirror?.snapshot(mark, waitMs);
    if (!snapshot) return { records: (await this.conntrack.dumpRecords(mark, onChunk)).records, from: 'dump' };
    // Pieces of 1,000 records: a migration's target creates while the rest is on its way.
    const piece = 1000 * RECORD_SIZE;
    for (let at = 0; at < snapshot.length; at += piece) onChunk(snapshot.subarray(at, at + piece));
    return { records: snapshot.length / RECORD_SIZE, from: 'mirror' };
  }

  /**
   * Step 3 (source): the VIP's entries as a record stream (entry-record.ts) — the ones worth
   * moving: connections and handshakes in flight, not a SYN flood's half-open leftovers.
   * A migration's read locks the VIP's configuration until its step 4; a takeover's read by a
   * peer (`migration: false`) has no step 4 here, and must not keep reloads and backend
   * changes of the VIP refused for MIGRATION_LOCK_MS.
   */
  async exportEntries(name: string, write: (chunk: Buffer) => void, options: { migration?: boolean } = {}): Promise<{ records: number; skipped: number; from: 'mirror' | 'dump' }> {
    const vip = this.vip(name);
    if (options.migration ?? true) this.migrating(name, true);
    write(encodeStreamHeader());
    let records = 0;
    const read = await this.readRecords(
      vip.id,
      (chunk) => {
        const moving = selectRecords(chunk, worthMoving);
        records += moving.length / RECORD_SIZE;
        if (moving.length > 0) write(moving);
      },
      READ_WAIT_MS.hold,
    );
    return { records, skipped: read.records - records, from: read.from };
  }

  /**
   * Step 3 (target): create entries from a record stream as it arrives. Each create takes
   * every record that came in while the previous one ran (after the first piece, nearly
   * all of them): fewer, larger batches, each a round trip through this process's busy
   * event loop. An entry that exists already (a retried step) counts as created.
   */
  async importEntries(
    name: string,
    records: Readable,
    onBatch: (moved: number) => void,
    options: { live?: () => boolean; source?: string } = {},
  ): Promise<{ created: number; failed: number; refused: number }> {
    const { live = () => true, source = 'unknown' } = options;
    this.vip(name);
    this.migrating(name, true);
    const reader = new RecordStreamReader();
    const waiting: Buffer[] = [];
    let ended = false;
    let failure: unknown;
    let wake: (() => void) | undefined;
    records.on('data', (piece: Buffer) => {
      try {
        const whole = reader.push(piece);
        if (whole.length > 0) waiting.push(whole);
      } catch (err) {
        failure ??= err;
        records.destroy();
      }
      wake?.();
    });
    records.once('end', () => {
      ended = true;
      wake?.();
    });
    records.once('error', (err) => {
      failure ??= err;
      wake?.();
    });
    let created = 0;
    let failed = 0;
    let refused = 0;
    for (;;) {
      if (failure === undefined && !live()) {
        failure = new Error(`the pre-copy of ${name} was aborted`);
        records.destroy();
      }
      if (failure !== undefined) throw failure;
      if (waiting.length === 0) {
        if (ended) break;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
        continue;
      }
      const batch = waiting.length === 1 ? waiting[0]! : Buffer.concat(waiting);
      waiting.length = 0;
      const r = await this.installEntries(name, batch, { kind: 'import', source });
      created += r.created + r.existing;
      failed += r.failures.length;
      refused += r.refused;
      onBatch(created);
    }
    reader.end();
    this.counts.invalidate();
    return { created, failed, refused };
  }

  /**
   * Creates the records that belong to the VIP (config/vip-records.ts) and refuses the rest,
   * counted by where they came from: what another member sends us is checked before the kernel
   * sees it.
   */
  async installEntries(name: string, records: Buffer, from: { kind: RefusedEntries['kind']; source: string }): Promise<CreateResult & { refused: number }> {
    const check = this.admit(name, records, from);
    const r = check.accepted.length > 0 ? await this.createEntries(check.accepted) : { created: 0, existing: 0, failures: [] };
    return { ...r, refused: check.refused };
  }

  /** The records that belong to the VIP; the others are tallied by origin and reason. */
  private admit(name: string, records: Buffer, from: { kind: RefusedEntries['kind']; source: string }): ReturnType<typeof checkRecords> {
    const check = checkRecords(records, [this.vip(name)]);
    for (const [reason, n] of Object.entries(check.reasons) as [RecordRefusal, number][]) {
      const key = `${from.kind}\0${from.source}\0${name}\0${reason}`;
      const tally = this.refused.get(key) ?? { ...from, vip: name, reason, records: 0 };
      tally.records += n;
      this.refused.set(key, tally);
    }
    return check;
  }

  /** Records refused so far, by origin, VIP and reason (vipshift_entries_refused_total). */
  refusedEntries(): RefusedEntries[] {
    return [...this.refused.values()].map((t) => ({ ...t }));
  }

  /**
   * Source of a pre-copy: the VIP's entries, and from that moment a change journal for the
   * migration in the mirror. Undefined when the mirror cannot vouch (then no pre-copy).
   */
  async trackEntries(name: string, migration: string): Promise<Buffer | undefined> {
    const records = await this.mirror?.track(this.vip(name).id, migration, READ_WAIT_MS.precopy);
    // Connections only: a handshake in flight now is in a difference once it completes (or, young, by its short timeout).
    return records && selectRecords(records, handshakeCompleted);
  }

  /**
   * Source: what changed since the pre-copy (or the last round, which `restart` begins anew).
   * Junk stays out as it does of step 3; every entry that ended goes (the target may hold it).
   */
  async entryChanges(name: string, migration: string, restart: boolean): Promise<Difference> {
    const { id } = this.vip(name);
    if (!this.mirror) return { refused: 'this appliance keeps no access table mirror' };
    const diff = await this.mirror.changes(id, migration, restart);
    if ('refused' in diff) return diff;
    const records = selectRecords(diff.records, (b, o) => (rec.status(b, o) & IPS_DYING) !== 0 || worthMoving(b, o));
    return { records, upserts: records.length / RECORD_SIZE - diff.ended, ended: diff.ended };
  }

  /** Source: the migration no longer needs the VIP's change journal. */
  endTracking(name: string, migration?: string): void {
    this.mirror?.endTracking(this.vip(name).id, migration);
  }

  /**
   * Target of a pre-copy: the VIP is held first, as a standby holds the VIPs it backs up
   * (already so on a standby), so that no packet meets the pre-copied entries before the
   * migration has moved the address here and activated them: one that strays here (a stale
   * ARP cache) waits in the hold like any other. Then the entries are created as they arrive.
   */
  async precopy(name: string, records: Readable, nextDifference: () => Promise<Buffer>, onBatch: (moved: number) => void, source = 'unknown'): Promise<PrecopyOutcome> {
    const { id } = this.vip(name);
    const mode = this.engine.modeTable().get(name) ?? 'absent';
    if (mode === 'normal') {
      records.destroy();
      throw new Error(`${name} is normal here: nothing to pre-copy`);
    }
    // A repeated pre-copy starts from nothing: its difference will not know the old entries. So
    // do entries left here by a takeover given up (a VRRP flap) or an aborted migration: the
    // pre-copy's creates would find them existing and keep them as they were.
    const left = this.mirror?.count(id) ?? 1;
    if (this.precopied.has(name) || this.precopying.has(name) || left > 0) await this.deleteEntries(name);
    const generation = ++this.generation;
    const live = () => this.precopying.get(name)?.generation === generation;
    // Started once registered below (a microtask later), so that live() holds from its first step.
    const work = Promise.resolve().then(async (): Promise<PrecopyOutcome> => {
      if (mode === 'absent') await this.engine.setMode(name, 'migrating');
      const copied = await this.importEntries(name, records, onBatch, { live, source });
      this.precopied.set(name, copied.created);
      const outcome: PrecopyOutcome = { created: copied.created, failed: copied.failed, rounds: [] };
      // Further rounds while the difference is large: each makes the one left for the hold smaller.
      for (let last = Infinity; last > PRECOPY_ROUND_UNTIL && outcome.rounds.length < PRECOPY_MAX_ROUNDS; ) {
        const difference = await nextDifference();
        if (!live()) throw new Error(`the pre-copy of ${name} was aborted`);
        const r = await this.applyDifference(name, difference, source);
        last = r.created + r.ended;
        outcome.rounds.push(last);
        outcome.created = r.total;
        outcome.failed += r.failed;
      }
      const t0 = performance.now();
      this.mirror?.index(this.vip(name).id);
      outcome.indexMs = Math.round((performance.now() - t0) * 100) / 100;
      return outcome;
    });
    this.precopying.set(name, { generation, work });
    try {
      return await work;
    } finally {
      if (live()) this.precopying.delete(name);
    }
  }

  /**
   * Target: applies a difference (records; those marked IPS_DYING ended on the source).
   * Ended entries go first — a fullnat inside port they held may be a new entry's now —
   * then each changed or refreshed entry is recreated (deleted, created: during the hold
   * no packet falls between the two; before it none reaches the VIP here at all).
   */
  async applyDifference(name: string, difference: Buffer, source = 'unknown'): Promise<DifferenceResult> {
    // An ended record deletes an entry: it is checked like one created.
    const records = this.admit(name, difference, { kind: 'import', source }).accepted;
    const ended: Buffer[] = [];
    const upserts: Buffer[] = [];
    for (let o = 0; o < records.length; o += RECORD_SIZE) {
      const r = records.subarray(o, o + RECORD_SIZE);
      (rec.status(r, 0) & IPS_DYING ? ended : upserts).push(r);
    }
    const changed = Buffer.concat(upserts);
    const gone = await this.conntrack.deleteRecords(Buffer.concat(ended));
    const replaced = await this.conntrack.deleteRecords(changed);
    // The mirror must see those deletes before it learns of the creates of the same tuples.
    if (this.mirror && changed.length > 0 && !(await this.mirror.barrier())) void this.mirror.rebuild();
    const made = await this.createEntries(changed);
    const total = (this.precopied.get(name) ?? 0) - gone.deleted - replaced.deleted + made.created + made.existing;
    this.precopied.set(name, total);
    this.counts.invalidate();
    return { created: made.created + made.existing, ended: gone.deleted, failed: made.failures.length + gone.failures.length + replaced.failures.length, total };
  }

  /**
   * A takeover of a VIP pre-copied here (its source died before the migration's step 2):
   * the pre-copied entries go, the keepers' copies are fresher, and an entry that ended on
   * the source since must not survive here.
   */
  async dropPrecopy(name: string): Promise<void> {
    if (this.precopied.has(name)) await this.deleteEntries(name);
  }

  /** The VIP's ports SYNPROXY answers for here, with their seconds left (a pre-copy's source hands them over). */
  synproxyPorts(name: string): Promise<SynproxyPort[]> {
    return this.engine.synproxyPorts(name);
  }

  /** A pre-copy's target: SYNPROXY answers here for the ports it did on the source, before the address moves. */
  engageSynproxy(name: string, ports: readonly SynproxyPort[]): Promise<void> {
    return this.engine.engageSynproxy(name, ports);
  }

  /** Fills the mirror again from one dump; its status once done (undefined: no mirror). */
  async rebuildMirror(): Promise<MirrorStatus | undefined> {
    await this.mirror?.rebuild();
    return this.mirror?.status();
  }

  /** Creates entries from records (a migration's import, a takeover's copies); the mirror learns them here. */
  async createEntries(records: Buffer): Promise<CreateResult> {
    const r = await this.conntrack.createFromRecords(records);
    this.mirror?.added(records, r.failures);
    this.parts.table?.failedCreates(r.failures.length);
    return r;
  }

  /** The VIP's whole access table as entry records, for the console's pages (access-page.ts). */
  async entryRecords(name: string): Promise<Buffer> {
    const chunks: Buffer[] = [];
    await this.readRecords(this.vip(name).id, (chunk) => chunks.push(chunk), READ_WAIT_MS.console);
    return Buffer.concat(chunks);
  }

  /** A pre-copy still running stops first, so that nothing it creates outlives a delete after. */
  private async stopPrecopy(name: string): Promise<void> {
    const running = this.precopying.get(name);
    this.precopying.delete(name);
    await running?.work.catch(() => undefined);
  }

  /**
   * `inHold`: a target inside the hold (step 3 copying the whole table after all) deletes at
   * once: the hold's length weighs more there than the rebuild an event overrun costs.
   */
  async deleteEntries(name: string, options: { inHold?: boolean } = {}): Promise<void> {
    const { id } = this.vip(name);
    await this.stopPrecopy(name);
    // The source's clean-up after a migration: its change journal would only fill with these.
    this.mirror?.endTracking(id);
    this.precopied.delete(name);
    this.migrating(name, false);
    // A large table goes a chunk at a time so that its destroy events do not overrun the
    // event sockets; what is left (or all of it, small or unvouched for) goes by mark.
    if (!options.inHold) await this.mirror?.deletePaced(id, (records) => this.conntrack.deleteRecords(records));
    await this.conntrack.deleteByMark(id);
    this.counts.invalidate();
  }

  // Step 4.
  async forget(name: string): Promise<void> {
    this.vip(name);
    this.migrating(name, false);
    await this.engine.setMode(name, 'absent');
  }

  /** Held packets are released only once the VIP is `normal`, so they meet the new entries. */
  async activate(name: string): Promise<{ released: number }> {
    this.vip(name);
    this.migrating(name, false);
    await this.engine.setMode(name, 'normal');
    this.precopied.delete(name);
    return { released: this.engine.release(name) };
  }

  /** Abort on the target: drop what was imported and what was held; the source keeps the VIP. */
  async abort(name: string): Promise<void> {
    const vip = this.vip(name);
    await this.stopPrecopy(name);
    this.migrating(name, false);
    await this.engine.setMode(name, 'absent');
    this.engine.discard(name);
    this.precopied.delete(name);
    await this.conntrack.deleteByMark(vip.id);
    this.counts.invalidate();
  }
}
