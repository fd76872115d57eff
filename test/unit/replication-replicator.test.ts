/**
 * The replicator's bookkeeping without root: a fake access table (its event stream and its
 * VIP's records) and fake keepers, on vitest's fake timers. Resynchronisation makes a keeper's
 * copies equal to ours; an unreachable keeper is retried with a doubling backoff; an overrun
 * resynchronises every keeper.
 */
import { EventEmitter } from 'node:events';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { parseApplianceConfig } from '../../src/config/appliance.js';
import { KEY_SIZE, readKey, type CopyBatch } from '../../src/keeper/batch.js';
import { IPPROTO_TCP, TCP_CONNTRACK_ESTABLISHED } from '../../src/netlink/ctnetlink.js';
import { RECORD_SIZE, writeRecord } from '../../src/netlink/entry-record.js';
import { Replicator, type AccessTable, type KeeperSink } from '../../src/replication/replicator.js';

const config = parseApplianceConfig(
  `appliance: lb1
api: { listen: "192.0.2.11:8441" }
interfaces: { external: ext0, internal: int0 }
vips:
  - { name: vip1, id: 1, address: 203.0.113.10, insideAddress: 198.18.0.10, ports: [7], mode: dnat, backends: [{ address: 198.18.0.101 }], owner: lb1 }
keepers:
  - { name: srv1, server: 198.18.0.101, api: "http://192.0.2.21:8442" }
`,
  'lb1.yaml',
);

/** Entry records of vip1's connections to srv1 from these client ports. */
function records(...clientPorts: number[]): Buffer {
  const b = Buffer.alloc(clientPorts.length * RECORD_SIZE);
  clientPorts.forEach((port, i) =>
    writeRecord(b, i * RECORD_SIZE, {
      client: { address: '198.51.100.10', port },
      vip: { address: '203.0.113.10', port: 7 },
      server: { address: '198.18.0.101', port: 7 },
      proto: IPPROTO_TCP,
      tcpState: TCP_CONNTRACK_ESTABLISHED,
      tcpWindow: { wscaleOriginal: 7, wscaleReply: 7, flagsOriginal: 0x0c, flagsReply: 0x0c },
      status: 0x1ae,
      timeout: 432000,
      mark: 1,
    }),
  );
  return b;
}

class FakeEvents extends EventEmitter {
  dropped = 0;
  close(): void {}
}

/** A keeper holding `copies`, failing its next `failures` requests. */
class FakeKeeper implements KeeperSink {
  pushes: CopyBatch[] = [];
  requests = 0;
  constructor(
    public copiesHeld: Buffer,
    public failures = 0,
  ) {}
  private answer(): void {
    this.requests++;
    if (this.failures > 0) {
      this.failures--;
      throw new Error('connect ECONNREFUSED');
    }
  }
  async push(batch: CopyBatch): Promise<unknown> {
    this.answer();
    this.pushes.push(batch);
    return {};
  }
  async copies(): Promise<Buffer> {
    this.answer();
    return this.copiesHeld;
  }
}

function replicator(keeper: FakeKeeper, ours: Buffer, reads = { count: 0, gate: Promise.resolve() }) {
  const events = new FakeEvents();
  const table: AccessTable = {
    subscribe: () => events,
    readRecords: async (_mark, onChunk) => {
      reads.count++;
      await reads.gate;
      onChunk(ours);
    },
  };
  const r = new Replicator({ config, table, sinks: new Map([['srv1', keeper]]), modes: () => new Map([['vip1', 'normal']]), logger: pino({ level: 'silent' }) });
  return { r, events };
}

const clientPorts = (b: Buffer) => Array.from({ length: b.length / RECORD_SIZE }, (_, i) => b.readUInt16BE(i * RECORD_SIZE + 16));
const deletedPorts = (b: Buffer) => Array.from({ length: b.length / KEY_SIZE }, (_, i) => readKey(b, i * KEY_SIZE).clientPort);

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('Replicator', () => {
  it('resynchronises a keeper when its VIP becomes normal here: pushes ours, deletes the copies we do not have', async () => {
    const keeper = new FakeKeeper(records(1000, 1001, 2000));
    const { r } = replicator(keeper, records(1000, 1001, 1002));
    r.start();
    await vi.advanceTimersByTimeAsync(0);
    const upserts = keeper.pushes.flatMap((p) => clientPorts(p.upserts));
    const deletes = keeper.pushes.flatMap((p) => deletedPorts(p.deletes));
    expect(upserts).toEqual([1000, 1001, 1002]);
    expect(deletes).toEqual([2000]);
    expect(r.status().keepers[0]).toMatchObject({ state: 'up', resyncs: 1, resyncPending: false, failures: 0 });
    r.stop();
  });

  it('retries an unreachable keeper with a doubling backoff, then resynchronises it', async () => {
    const keeper = new FakeKeeper(records(), 3);
    const { r } = replicator(keeper, records(1000));
    r.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(keeper.requests).toBe(1);
    expect(r.status().keepers[0]).toMatchObject({ state: 'down', failures: 1, resyncPending: true, lastError: 'connect ECONNREFUSED' });
    // 250 ms, then 500 ms, then 1000 ms between attempts.
    await vi.advanceTimersByTimeAsync(249);
    expect(keeper.requests).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(keeper.requests).toBe(2);
    await vi.advanceTimersByTimeAsync(499);
    expect(keeper.requests).toBe(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(keeper.requests).toBe(3);
    await vi.advanceTimersByTimeAsync(1000);
    expect(r.status().keepers[0]).toMatchObject({ state: 'up', failures: 3, resyncs: 1, resyncPending: false });
    expect(r.status().keepers[0]?.lastError).toBeUndefined();
    expect(keeper.pushes.flatMap((p) => clientPorts(p.upserts))).toEqual([1000]);
    r.stop();
  });

  it('the backoff stops doubling at 5 s', async () => {
    const keeper = new FakeKeeper(records(), 100);
    const { r } = replicator(keeper, records(1000));
    r.start();
    await vi.advanceTimersByTimeAsync(0);
    await vi.advanceTimersByTimeAsync(250 + 500 + 1000 + 2000 + 4000);
    const before = keeper.requests;
    expect(before).toBe(6);
    await vi.advanceTimersByTimeAsync(4999);
    expect(keeper.requests).toBe(before);
    await vi.advanceTimersByTimeAsync(1);
    expect(keeper.requests).toBe(before + 1);
    r.stop();
  });

  it('resynchronises every keeper after lost events (an overrun)', async () => {
    const keeper = new FakeKeeper(records(1000));
    const { r, events } = replicator(keeper, records(1000));
    r.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(r.status().keepers[0]?.resyncs).toBe(1);
    events.emit('overrun');
    await vi.advanceTimersByTimeAsync(0);
    expect(r.status()).toMatchObject({ overruns: 1, keepers: [{ resyncs: 2 }] });
    r.stop();
  });

  it('a refresh asked for while one still reads (a mirror rebuilding) is that one: no second read of the table', async () => {
    const keeper = new FakeKeeper(records(1000));
    const reads = { count: 0, gate: Promise.resolve() };
    const { r } = replicator(keeper, records(1000), reads);
    r.start();
    await vi.advanceTimersByTimeAsync(0);
    const before = reads.count; // the keeper's first resynchronisation
    let release!: () => void;
    reads.gate = new Promise<void>((resolve) => (release = resolve));
    const first = r.refresh();
    const second = r.refresh();
    await vi.advanceTimersByTimeAsync(0);
    expect(reads.count - before).toBe(1);
    release();
    await Promise.all([first, second]);
    expect(r.status().refreshes).toBe(1);
    await r.refresh(); // once ended, the next refresh reads again
    expect(reads.count - before).toBe(2);
    r.stop();
  });
});
