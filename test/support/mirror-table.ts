/**
 * A conntrack table in memory for the access table mirror's unit tests: entries as records,
 * the kernel's event messages for them, and a MirroredTable whose dump hands out a table,
 * whose barrier sentinel comes back as a destroy event, and into which a test sends events.
 */
import { EventEmitter } from 'node:events';
import type { ConntrackEvents } from '../../src/netlink/conntrack.js';
import { IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_NEW, IPPROTO_TCP, IPPROTO_UDP, IPS_ASSURED, IPS_SEEN_REPLY, ctnlType } from '../../src/netlink/ctnetlink.js';
import { CreateEncoder } from '../../src/netlink/entry-record-ctnetlink.js';
import { RECORD_SIZE, writeRecord, type EntryRecord } from '../../src/netlink/entry-record.js';
import { parseMessages } from '../../src/netlink/message.js';
import { BARRIER_MARK, type MirroredTable } from '../../src/nat/access-table-mirror.js';

export const MARK = 1;
const window = { wscaleOriginal: 7, wscaleReply: 7, flagsOriginal: 0x23, flagsReply: 0x23 };

export function entry(port: number, proto: number, tcpState: number, timeout: number): EntryRecord {
  return {
    client: { address: '198.51.100.10', port },
    vip: { address: '203.0.113.10', port: 80 },
    server: { address: '198.18.0.101', port: 80 },
    proto,
    tcpState: proto === IPPROTO_TCP ? tcpState : 0,
    tcpWindow: proto === IPPROTO_TCP ? window : { wscaleOriginal: 0, wscaleReply: 0, flagsOriginal: 0, flagsReply: 0 },
    status: IPS_SEEN_REPLY | IPS_ASSURED,
    timeout,
    mark: MARK,
  };
}

export function records(...entries: EntryRecord[]): Buffer {
  const b = Buffer.alloc(entries.length * RECORD_SIZE);
  entries.forEach((e, i) => writeRecord(b, i * RECORD_SIZE, e));
  return b;
}

/** The kernel's event message for an entry (a create message carries the same attributes). */
export function event(e: EntryRecord, type: number) {
  const [msg] = parseMessages(new CreateEncoder(1, false).encode(records(e), 0, 1, 1));
  return { ...msg!, type: ctnlType(type) };
}

/**
 * A conntrack table in memory: the dump hands out `table`, the barrier's sentinel comes back
 * as a destroy event, and the test sends the events the kernel would. `slowDumps()` makes
 * every dump from then on wait (a dump of a large table) until the function it returns is
 * called; `dumps` counts the dumps begun.
 */
export function fakeTable(table: EntryRecord[]) {
  const events = new EventEmitter();
  let gate: Promise<void> | undefined;
  const state = { dumps: 0, barriers: 0 };
  const fake: MirroredTable = {
    subscribe: () => Object.assign(events, { close: () => undefined }) as unknown as ConntrackEvents,
    dumpAllRecords: async (onChunk) => {
      state.dumps++;
      // What the kernel's table holds when the dump walks it (after the wait).
      await gate;
      onChunk(records(...table));
      return { records: table.length, skipped: 0 };
    },
    dumpRecords: async (mark, onChunk) => {
      const mine = table.filter((e) => e.mark === mark);
      onChunk(records(...mine));
      return { records: mine.length, skipped: 0 };
    },
    create: async () => ({ created: 1, existing: 0, failures: [] }),
    delete: async (orig) => {
      state.barriers++;
      const sentinel = { ...entry(orig.sport, IPPROTO_UDP, 0, 1), client: { address: '0.0.0.0', port: orig.sport }, vip: { address: '0.0.0.0', port: 9 }, server: { address: '0.0.0.0', port: 9 }, mark: BARRIER_MARK };
      queueMicrotask(() => events.emit('message', event(sentinel, IPCTNL_MSG_CT_DELETE)));
      return true;
    },
  };
  const slowDumps = (): (() => void) => {
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    gate = mine;
    return () => {
      if (gate === mine) gate = undefined;
      release();
    };
  };
  return { fake, state, slowDumps, send: (e: EntryRecord, type = IPCTNL_MSG_CT_NEW) => events.emit('message', event(e, type)) };
}
