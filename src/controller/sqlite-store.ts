/**
 * The controller's store in one SQLite file (the default; the one module that owns
 * better-sqlite3 for the controller): the migration journal and the inventory (store.ts).
 *
 * Journal: a migration is written down before its first step, each step before it runs, the
 * commit point (the source may start deleting its entries) before it is passed, and the end
 * with the VIP's new owner in the same transaction. A controller killed at any moment finds
 * the migrations still `running` here and ends them with recover() (src/migration/migration.ts).
 *
 * Inventory: appliances (capacity weight, maintenance flag, poll health), VIPs (owner, pinned,
 * last moved, measured traffic), and operator settings (rebalance mode). Owners live here, so a
 * restarted controller does not believe its configuration's initial owners.
 *
 * WAL with synchronous=FULL: each record is on disk when the call returns, also across a power
 * cut; a few ms per write, and the controller writes rarely (a migration, a poll).
 */
import Database from 'better-sqlite3';
import type { Database as Db } from 'better-sqlite3';
import type { MigrationProgress, Phase } from '../migration/migration.js';
import type { ControllerStore, InventoryAppliance, InventoryVip, JournalEvent, JournalMigration, MigrationReason, VipTraffic } from './store.js';
import { PHASES } from '../migration/migration.js';

/** Schema changes, in order: the database's schema_version is how many have been applied. */
const SCHEMA: string[] = [
  `CREATE TABLE appliances (
     name TEXT PRIMARY KEY,
     api TEXT NOT NULL,
     capacity REAL NOT NULL DEFAULT 1 CHECK (capacity > 0),
     maintenance INTEGER NOT NULL DEFAULT 0,
     failed_polls INTEGER NOT NULL DEFAULT 0,
     last_seen_at INTEGER,
     last_error TEXT
   );
   CREATE TABLE vips (
     name TEXT PRIMARY KEY,
     owner TEXT NOT NULL,
     pinned INTEGER NOT NULL DEFAULT 0,
     last_moved_at INTEGER,
     packets_per_s REAL,
     bytes_per_s REAL,
     connections INTEGER,
     new_connections_per_s REAL,
     load REAL,
     sampled_at INTEGER
   );
   CREATE TABLE migrations (
     id TEXT PRIMARY KEY,
     vip TEXT NOT NULL,
     source TEXT NOT NULL,
     target TEXT NOT NULL,
     reason TEXT NOT NULL,
     state TEXT NOT NULL CHECK (state IN ('running', 'done', 'aborted')),
     step TEXT,
     committed INTEGER NOT NULL DEFAULT 0,
     started_at INTEGER NOT NULL,
     finished_at INTEGER,
     recovered INTEGER NOT NULL DEFAULT 0,
     error TEXT,
     progress TEXT
   );
   CREATE UNIQUE INDEX migrations_one_running_per_vip ON migrations (vip) WHERE state = 'running';
   CREATE INDEX migrations_started ON migrations (started_at);
   CREATE TABLE migration_events (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     migration TEXT NOT NULL REFERENCES migrations (id),
     at INTEGER NOT NULL,
     event TEXT NOT NULL,
     step TEXT,
     detail TEXT
   );
   CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);`,
];

interface MigrationRow {
  id: string;
  vip: string;
  source: string;
  target: string;
  reason: MigrationReason;
  state: JournalMigration['state'];
  step: Phase | null;
  committed: number;
  started_at: number;
  finished_at: number | null;
  recovered: number;
  error: string | null;
  progress: string | null;
}

const toMigration = (r: MigrationRow): JournalMigration => ({
  id: r.id,
  vip: r.vip,
  source: r.source,
  target: r.target,
  reason: r.reason,
  state: r.state,
  step: r.step,
  committed: r.committed === 1,
  startedAt: r.started_at,
  finishedAt: r.finished_at,
  recovered: r.recovered === 1,
  error: r.error,
  progress: r.progress === null ? null : (JSON.parse(r.progress) as MigrationProgress),
});

export class SqliteStore implements ControllerStore {
  readonly kind = 'sqlite' as const;

  private readonly db: Db;

  /** Opens (creating if needed) the database at `path` (':memory:' for tests) and brings its schema up to date. */
  constructor(
    readonly path: string,
    private readonly now: () => number = Date.now,
  ) {
    try {
      this.db = new Database(path);
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = FULL');
      this.db.pragma('foreign_keys = ON');
      this.db.pragma('busy_timeout = 5000');
      this.upgrade();
    } catch (err) {
      throw new Error(`controller journal ${path}: ${(err as Error).message}`);
    }
  }

  /** Applies the schema changes this database has not had yet, each in its own transaction. */
  private upgrade(): void {
    this.db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
    const row = this.db.prepare('SELECT version FROM schema_version').get() as { version: number } | undefined;
    if (!row) this.db.prepare('INSERT INTO schema_version (version) VALUES (0)').run();
    const version = row?.version ?? 0;
    if (version > SCHEMA.length) {
      throw new Error(`schema version ${version} is newer than this vipshift knows (${SCHEMA.length}): refusing to touch it`);
    }
    for (let v = version; v < SCHEMA.length; v++) {
      this.db.transaction(() => {
        this.db.exec(SCHEMA[v]!);
        this.db.prepare('UPDATE schema_version SET version = ?').run(v + 1);
      })();
    }
  }

  async schemaVersion(): Promise<number> {
    return (this.db.prepare('SELECT version FROM schema_version').get() as { version: number }).version;
  }

  async close(): Promise<void> {
    this.db.close();
  }

  // -------------------------------------------------------------------------------------------
  // Inventory

  /**
   * Brings the inventory in line with the configuration: appliances get their API and capacity
   * from it (the operator edits those there); a VIP new to the database starts on its configured
   * owner, a known VIP keeps the owner recorded here. Maintenance and pins are left as they are.
   */
  async syncConfiguration(appliances: { name: string; api: string; capacity: number }[], vips: { name: string; owner: string }[]): Promise<void> {
    const upsert = this.db.prepare(
      'INSERT INTO appliances (name, api, capacity) VALUES (@name, @api, @capacity) ON CONFLICT (name) DO UPDATE SET api = excluded.api, capacity = excluded.capacity',
    );
    const addVip = this.db.prepare('INSERT INTO vips (name, owner) VALUES (@name, @owner) ON CONFLICT (name) DO NOTHING');
    this.db.transaction(() => {
      for (const a of appliances) upsert.run(a);
      for (const v of vips) addVip.run(v);
    })();
  }

  async appliances(): Promise<InventoryAppliance[]> {
    const rows = this.db.prepare('SELECT * FROM appliances ORDER BY name').all() as {
      name: string;
      api: string;
      capacity: number;
      maintenance: number;
      failed_polls: number;
      last_seen_at: number | null;
      last_error: string | null;
    }[];
    return rows.map((r) => ({
      name: r.name,
      api: r.api,
      capacity: r.capacity,
      maintenance: r.maintenance === 1,
      failedPolls: r.failed_polls,
      lastSeenAt: r.last_seen_at,
      lastError: r.last_error,
    }));
  }

  async vips(): Promise<InventoryVip[]> {
    const rows = this.db.prepare('SELECT * FROM vips ORDER BY name').all() as {
      name: string;
      owner: string;
      pinned: number;
      last_moved_at: number | null;
      packets_per_s: number | null;
      bytes_per_s: number | null;
      connections: number | null;
      new_connections_per_s: number | null;
      load: number | null;
      sampled_at: number | null;
    }[];
    return rows.map((r) => ({
      name: r.name,
      owner: r.owner,
      pinned: r.pinned === 1,
      lastMovedAt: r.last_moved_at,
      traffic:
        r.packets_per_s === null
          ? null
          : { packetsPerSecond: r.packets_per_s, bytesPerSecond: r.bytes_per_s ?? 0, connections: r.connections ?? 0, newConnectionsPerSecond: r.new_connections_per_s ?? 0 },
      load: r.load,
      sampledAt: r.sampled_at,
    }));
  }

  async owners(): Promise<Map<string, string>> {
    const rows = this.db.prepare('SELECT name, owner FROM vips').all() as { name: string; owner: string }[];
    return new Map(rows.map((r) => [r.name, r.owner]));
  }

  /** Corrects an owner outside a migration (what the appliances say at start). */
  async setOwner(vip: string, owner: string): Promise<void> {
    this.db.prepare('UPDATE vips SET owner = ? WHERE name = ?').run(owner, vip);
  }

  async setMaintenance(appliance: string, on: boolean): Promise<boolean> {
    return this.db.prepare('UPDATE appliances SET maintenance = ? WHERE name = ?').run(on ? 1 : 0, appliance).changes === 1;
  }

  async setPinned(vip: string, pinned: boolean): Promise<boolean> {
    return this.db.prepare('UPDATE vips SET pinned = ? WHERE name = ?').run(pinned ? 1 : 0, vip).changes === 1;
  }

  /** One poll's outcome for every appliance and every measured VIP, in one transaction. */
  async recordPoll(
    appliances: { name: string; ok: boolean; error?: string }[],
    vips: { name: string; traffic: VipTraffic; load: number }[],
  ): Promise<void> {
    const at = this.now();
    const ok = this.db.prepare('UPDATE appliances SET failed_polls = 0, last_seen_at = ?, last_error = NULL WHERE name = ?');
    const failed = this.db.prepare('UPDATE appliances SET failed_polls = failed_polls + 1, last_error = ? WHERE name = ?');
    const traffic = this.db.prepare(
      'UPDATE vips SET packets_per_s = @packetsPerSecond, bytes_per_s = @bytesPerSecond, connections = @connections, new_connections_per_s = @newConnectionsPerSecond, load = @load, sampled_at = @at WHERE name = @name',
    );
    this.db.transaction(() => {
      for (const a of appliances) {
        if (a.ok) ok.run(at, a.name);
        else failed.run(a.error ?? 'no answer', a.name);
      }
      for (const v of vips) traffic.run({ ...v.traffic, load: v.load, at, name: v.name });
    })();
  }

  async setting(key: string): Promise<string | undefined> {
    return (this.db.prepare('SELECT value FROM settings WHERE key = ?').get(key) as { value: string } | undefined)?.value;
  }

  async setSetting(key: string, value: string): Promise<void> {
    this.db.prepare('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  // -------------------------------------------------------------------------------------------
  // Journal

  private event(migration: string, event: JournalEvent['event'], step: Phase | null = null, detail: string | null = null): void {
    this.db.prepare('INSERT INTO migration_events (migration, at, event, step, detail) VALUES (?, ?, ?, ?, ?)').run(migration, this.now(), event, step, detail);
  }

  /** Before the first step. Throws if the VIP has a migration running (the unique index says so). */
  async begin(m: { id: string; vip: string; source: string; target: string; reason: MigrationReason }): Promise<void> {
    this.db.transaction(() => {
      this.db
        .prepare("INSERT INTO migrations (id, vip, source, target, reason, state, started_at) VALUES (@id, @vip, @source, @target, @reason, 'running', @at)")
        .run({ ...m, at: this.now() });
      this.event(m.id, 'begin', null, `${m.vip} ${m.source} → ${m.target} (${m.reason})`);
    })();
  }

  /** Before a step runs. */
  async step(id: string, step: Phase): Promise<void> {
    if (!PHASES.includes(step)) throw new Error(`unknown step '${step}'`);
    this.db.transaction(() => {
      this.db.prepare("UPDATE migrations SET step = ? WHERE id = ? AND state = 'running'").run(step, id);
      this.event(id, 'step', step);
    })();
  }

  /** The commit point and step 4's record in one transaction (store.ts): from here on, recovery finishes forward. */
  async commit(id: string): Promise<void> {
    this.db.transaction(() => {
      this.db.prepare("UPDATE migrations SET committed = 1, step = 'activate' WHERE id = ? AND state = 'running'").run(id);
      this.event(id, 'commit', 'move_entries');
    })();
  }

  /**
   * The end, with the VIP's owner from now on, in one transaction: a `done` migration moves
   * the VIP to its target and starts its cool-down.
   */
  async end(id: string, outcome: { state: 'done' | 'aborted'; error?: string; progress?: MigrationProgress; recovered?: boolean }): Promise<void> {
    const m = this.readMigration(id);
    if (!m) throw new Error(`no migration '${id}' in the journal`);
    const at = this.now();
    this.db.transaction(() => {
      this.db
        .prepare('UPDATE migrations SET state = ?, finished_at = ?, error = ?, progress = ?, recovered = ? WHERE id = ?')
        .run(outcome.state, at, outcome.error ?? null, outcome.progress ? JSON.stringify(outcome.progress) : null, outcome.recovered ? 1 : 0, id);
      if (outcome.state === 'done') this.db.prepare('UPDATE vips SET owner = ?, last_moved_at = ? WHERE name = ?').run(m.target, at, m.vip);
      this.event(id, 'end', m.step, outcome.state + (outcome.error ? `: ${outcome.error}` : ''));
    })();
  }

  /** A restarted controller's decision about an unfinished migration, or why it could not act yet. */
  async recovery(id: string, event: 'recover' | 'recover_failed', detail: string): Promise<void> {
    this.event(id, event, this.readMigration(id)?.step ?? null, detail);
  }

  async migration(id: string): Promise<JournalMigration | undefined> {
    return this.readMigration(id);
  }

  private readMigration(id: string): JournalMigration | undefined {
    const row = this.db.prepare('SELECT * FROM migrations WHERE id = ?').get(id) as MigrationRow | undefined;
    return row && toMigration(row);
  }

  /** Migrations written down as started and not as ended, oldest first. */
  async unfinished(): Promise<JournalMigration[]> {
    return (this.db.prepare("SELECT * FROM migrations WHERE state = 'running' ORDER BY started_at, rowid").all() as MigrationRow[]).map(toMigration);
  }

  /** The latest migrations, newest first. */
  async history(limit = 50): Promise<JournalMigration[]> {
    return (this.db.prepare('SELECT * FROM migrations ORDER BY started_at DESC, rowid DESC LIMIT ?').all(limit) as MigrationRow[]).map(toMigration);
  }

  async events(id: string): Promise<JournalEvent[]> {
    return this.db.prepare('SELECT at, event, step, detail FROM migration_events WHERE migration = ? ORDER BY seq').all(id) as JournalEvent[];
  }
}
