/**
 * What the controller keeps: the migration journal (migrations, their steps, the commit point),
 * the inventory (appliances, VIPs, owners, pins, maintenance) and the operator's settings,
 * behind one interface with two implementations: one SQLite file (sqlite-store.ts, the
 * default: one controller) and etcd (etcd-store.ts: several controllers, one leader).
 *
 * Every write is durable when its promise resolves; a migration step runs only after its
 * record is. Schema versions count applied changes; a store written by a newer vipshift is
 * refused without being touched.
 */
import type { MigrationProgress, Phase } from '../migration/migration.js';

export type MigrationReason = 'operator' | 'rebalance' | 'drain';
export type RebalanceMode = 'auto' | 'manual';

export interface JournalMigration {
  id: string;
  vip: string;
  source: string;
  target: string;
  reason: MigrationReason;
  state: 'running' | 'done' | 'aborted';
  /** The last step written down as started (null: none yet). */
  step: Phase | null;
  committed: boolean;
  startedAt: number;
  finishedAt: number | null;
  /** Ended by a restarted controller's recovery. */
  recovered: boolean;
  error: string | null;
  progress: MigrationProgress | null;
}

export interface JournalEvent {
  at: number;
  event: 'begin' | 'step' | 'commit' | 'end' | 'recover' | 'recover_failed';
  step: Phase | null;
  detail: string | null;
}

export interface InventoryAppliance {
  name: string;
  api: string;
  capacity: number;
  maintenance: boolean;
  /** Polls in a row that got no answer. */
  failedPolls: number;
  lastSeenAt: number | null;
  lastError: string | null;
}

export interface VipTraffic {
  packetsPerSecond: number;
  bytesPerSecond: number;
  /** Live access-table entries. */
  connections: number;
  newConnectionsPerSecond: number;
}

export interface InventoryVip {
  name: string;
  owner: string;
  pinned: boolean;
  lastMovedAt: number | null;
  /** Measured traffic (null until two polls have answered). */
  traffic: VipTraffic | null;
  /** The smoothed load the assignment balances (null until measured). */
  load: number | null;
  sampledAt: number | null;
}

/** The journal of the steps of migrations, the inventory and the settings. */
export interface ControllerStore {
  readonly kind: 'sqlite' | 'etcd';
  schemaVersion(): Promise<number>;
  close(): Promise<void>;

  /**
   * Brings the inventory in line with the configuration: appliances get their API and capacity
   * from it; a VIP new to the store starts on its configured owner, a known VIP keeps the owner
   * recorded here. Maintenance and pins are left as they are.
   */
  syncConfiguration(appliances: { name: string; api: string; capacity: number }[], vips: { name: string; owner: string }[]): Promise<void>;
  appliances(): Promise<InventoryAppliance[]>;
  vips(): Promise<InventoryVip[]>;
  owners(): Promise<Map<string, string>>;
  /** Corrects an owner outside a migration (what the appliances say at start). */
  setOwner(vip: string, owner: string): Promise<void>;
  /** False when there is no such appliance. */
  setMaintenance(appliance: string, on: boolean): Promise<boolean>;
  /** False when there is no such VIP. */
  setPinned(vip: string, pinned: boolean): Promise<boolean>;
  /** One poll's outcome for every appliance and every measured VIP, at once. */
  recordPoll(appliances: { name: string; ok: boolean; error?: string }[], vips: { name: string; traffic: VipTraffic; load: number }[]): Promise<void>;
  setting(key: string): Promise<string | undefined>;
  setSetting(key: string, value: string): Promise<void>;

  /** Before the first step. Rejects if the VIP has a migration running. */
  begin(m: { id: string; vip: string; source: string; target: string; reason: MigrationReason }): Promise<void>;
  /** Before a step runs. */
  step(id: string, step: Phase): Promise<void>;
  /**
   * The commit point, before step 4 (the source forgets, then deletes its entries): from here
   * on, recovery finishes forward. It is step 4's record too (the migration's step becomes
   * `activate` in the same write; no `step` event of its own): the hold waits for one write
   * there, not two.
   */
  commit(id: string): Promise<void>;
  /** The end, with the VIP's owner from now on, at once: a `done` migration moves the VIP to its target. */
  end(id: string, outcome: { state: 'done' | 'aborted'; error?: string; progress?: MigrationProgress; recovered?: boolean }): Promise<void>;
  /** A recovering controller's decision about an unfinished migration, or why it could not act yet. */
  recovery(id: string, event: 'recover' | 'recover_failed', detail: string): Promise<void>;
  migration(id: string): Promise<JournalMigration | undefined>;
  /** Migrations written down as started and not as ended, oldest first. */
  unfinished(): Promise<JournalMigration[]>;
  /** The latest migrations, newest first. */
  history(limit?: number): Promise<JournalMigration[]>;
  events(id: string): Promise<JournalEvent[]>;
  /**
   * Keeps the store from growing without bound: ended migrations beyond a retention go, with
   * their events (etcd: and its history is compacted). Only the leader calls it. The SQLite
   * file has none: one controller's journal there is kept whole, as it always was.
   */
  prune?(): Promise<{ migrations: number; compactedTo: number | undefined }>;
}
