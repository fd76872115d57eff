/**
 * The changes waiting for one keeper: one per connection, the last one wins (an upsert of
 * the entry's record, or its delete), in the order the connections first changed. Pure: the
 * replicator (replicator.ts) feeds it events and dumps and takes batches out of it.
 *
 * Coalescing is what keeps replication cheap under load: a connection that changes several
 * times before the next batch leaves costs the keeper one row, and the backlog's size is
 * bounded by the number of connections, not of events.
 */
import type { CopyBatch } from '../keeper/batch.js';
import { keysOfRecords } from '../keeper/batch.js';
import { RECORD_SIZE, applyRecordUpdate, rec } from '../netlink/entry-record.js';

/**
 * A connection's identity in a record: its original tuple (client, VIP, client port, VIP
 * port, protocol), the keeper's primary key. As UTF-16 code units: each address two, each port one.
 */
export function recordKey(record: Buffer, offset = 0): string {
  return (
    String.fromCharCode(rec.clientAddress(record, offset) >>> 16, rec.clientAddress(record, offset) & 0xffff) +
    String.fromCharCode(rec.vipAddress(record, offset) >>> 16, rec.vipAddress(record, offset) & 0xffff) +
    String.fromCharCode(rec.clientPort(record, offset), rec.vipPort(record, offset)) +
    String.fromCharCode(rec.protocol(record, offset))
  );
}

interface Change {
  /** The entry's record (for a delete, only its key fields matter). */
  record: Buffer;
  deleted: boolean;
  /** When the connection's first change still waiting here arrived (ms). */
  at: number;
}

/** A batch taken out of the backlog, to push and, if the push fails, to put back. */
export interface TakenBatch {
  batch: CopyBatch;
  upserts: number;
  deletes: number;
  /** Arrival of its oldest change, ms: the batch's lag is measured from here. */
  oldestAt: number;
  changes: Map<string, Change>;
}

export class Backlog {
  private changes = new Map<string, Change>();
  /** Changes thrown away on overflows, in all. */
  dropped = 0;

  /** @param limit changes kept at most; beyond, everything is dropped (the owner resynchronises). */
  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`backlog limit must be a positive integer, got ${limit}`);
  }

  get size(): number {
    return this.changes.size;
  }

  /** Arrival of the oldest waiting change, or undefined when empty. */
  get oldestAt(): number | undefined {
    for (const c of this.changes.values()) return c.at;
    return undefined;
  }

  /**
   * Records a connection's latest state (`deleted`: it is gone). Returns false when that
   * took the backlog over its limit: it is then empty, and the keeper needs a resynchronisation.
   */
  put(record: Buffer, deleted: boolean, at: number): boolean {
    const key = recordKey(record);
    const prior = this.changes.get(key);
    if (prior) {
      prior.record = record;
      prior.deleted = deleted;
      return true;
    }
    this.changes.set(key, { record, deleted, at });
    return this.withinLimit();
  }

  /**
   * Adds an upsert only for connections with no change waiting (a periodic refresh from a
   * dump must not undo a newer event, e.g. a destroy). False as put() on overflow.
   */
  refresh(record: Buffer, at: number): boolean {
    return this.changes.has(recordKey(record)) ? true : this.put(record, false, at);
  }

  /**
   * Applies an update that carries part of a connection (entry-record.ts, applyRecordUpdate) to
   * its waiting upsert; false when none waits (taken out, deleted, or never put).
   */
  amend(update: Buffer): boolean {
    const prior = this.changes.get(recordKey(update));
    if (!prior || prior.deleted) return false;
    // A fresh copy: the waiting record may be a view into a refresh's chunk.
    const merged = Buffer.from(prior.record.subarray(0, RECORD_SIZE));
    applyRecordUpdate(update, 0, merged, 0);
    prior.record = merged;
    return true;
  }

  /** Takes up to `max` of the oldest changes out, as one copies batch. */
  take(max: number): TakenBatch | undefined {
    if (this.changes.size === 0) return undefined;
    const taken = new Map<string, Change>();
    let upserts = 0;
    let oldestAt = Infinity;
    for (const [key, change] of this.changes) {
      if (taken.size >= max) break;
      taken.set(key, change);
      this.changes.delete(key);
      if (!change.deleted) upserts++;
      if (change.at < oldestAt) oldestAt = change.at;
    }
    const deletes = taken.size - upserts;
    const up = Buffer.allocUnsafe(upserts * RECORD_SIZE);
    const gone = Buffer.allocUnsafe(deletes * RECORD_SIZE);
    let u = 0;
    let d = 0;
    for (const change of taken.values()) {
      if (change.deleted) change.record.copy(gone, RECORD_SIZE * d++, 0, RECORD_SIZE);
      else change.record.copy(up, RECORD_SIZE * u++, 0, RECORD_SIZE);
    }
    return { batch: { upserts: up, deletes: keysOfRecords(gone) }, upserts, deletes, oldestAt, changes: taken };
  }

  /**
   * A batch that could not be delivered goes back in front, except the connections that
   * changed again meanwhile (their newer change wins). False as put() on overflow.
   */
  putBack(taken: TakenBatch): boolean {
    const merged = new Map<string, Change>();
    for (const [key, change] of taken.changes) if (!this.changes.has(key)) merged.set(key, change);
    for (const [key, change] of this.changes) merged.set(key, change);
    this.changes = merged;
    return this.withinLimit();
  }

  private withinLimit(): boolean {
    if (this.changes.size <= this.limit) return true;
    this.dropped += this.changes.size;
    this.changes.clear();
    return false;
  }

  clear(): void {
    this.changes.clear();
  }
}
