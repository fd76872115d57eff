/**
 * Deleting a large VIP a chunk at a time: each chunk's destroy events are read (the barrier)
 * before the next chunk goes, so that the kernel's one event per entry never outruns the
 * event sockets; a small table, or one the mirror cannot vouch for, is left to the delete by
 * mark that follows.
 */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { IPPROTO_TCP, TCP_CONNTRACK_ESTABLISHED } from '../../src/netlink/ctnetlink.js';
import { RECORD_SIZE, readRecord } from '../../src/netlink/entry-record.js';
import { AccessTableMirror, DELETE_CHUNK } from '../../src/nat/access-table-mirror.js';
import { MARK, entry, fakeTable } from '../support/mirror-table.js';

const live = (port: number) => entry(port, IPPROTO_TCP, TCP_CONNTRACK_ESTABLISHED, 432000);

async function mirrorOf(size: number) {
  const t = fakeTable(Array.from({ length: size }, (_, i) => live(1024 + i)));
  const mirror = new AccessTableMirror(t.fake, [MARK], pino({ level: 'silent' }), { now: () => 0 });
  await mirror.start();
  // What the caller's remove is handed: each chunk's client ports, and the barriers passed before it.
  const calls: { ports: number[]; barriersBefore: number }[] = [];
  const remove = async (records: Buffer) => {
    calls.push({ ports: [...Array(records.length / RECORD_SIZE).keys()].map((i) => readRecord(records, i * RECORD_SIZE).client.port), barriersBefore: t.state.barriers });
  };
  return { ...t, mirror, calls, remove };
}

describe('access table mirror: deleting a large VIP', () => {
  it('hands over the entries it lists a chunk at a time, a barrier after each, every entry once', async () => {
    const size = 2 * DELETE_CHUNK + 500;
    const { mirror, calls, remove, state } = await mirrorOf(size);
    const barriersAtStart = state.barriers;
    await mirror.deletePaced(MARK, remove);
    expect(calls.map((c) => c.ports.length)).toEqual([DELETE_CHUNK, DELETE_CHUNK, 500]);
    // Chunk k goes only after k barriers passed: the events of the chunks before were read.
    expect(calls.map((c) => c.barriersBefore - barriersAtStart)).toEqual([0, 1, 2]);
    expect(state.barriers - barriersAtStart).toBe(3);
    expect(calls.flatMap((c) => c.ports).sort((a, b) => a - b)).toEqual(Array.from({ length: size }, (_, i) => 1024 + i));
  });

  it('leaves a table of one chunk or less, and a VIP it does not mirror, to the delete by mark', async () => {
    const small = await mirrorOf(DELETE_CHUNK);
    await small.mirror.deletePaced(MARK, small.remove);
    expect(small.calls).toEqual([]);
    const large = await mirrorOf(DELETE_CHUNK + 1);
    await large.mirror.deletePaced(MARK + 1, large.remove);
    expect(large.calls).toEqual([]);
  });

  it('goes on past a barrier that did not pass, and stops after three in a row (the caller deletes the rest by mark)', async () => {
    const { mirror, calls, remove, fake } = await mirrorOf(6 * DELETE_CHUNK);
    // The sentinel's destroy event comes back for the first barrier only; the others time out.
    const answering = fake.delete;
    let answered = 0;
    fake.delete = async (orig) => (answered++ === 0 ? answering(orig) : true);
    await mirror.deletePaced(MARK, remove);
    expect(calls).toHaveLength(4);
  });
});
