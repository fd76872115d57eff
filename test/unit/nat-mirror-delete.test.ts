/**
 * Deleting a large VIP a chunk at a time: each chunk's destroy events are read (the barrier)
 * before the next chunk goes, so that the kernel's one event per entry never outruns the
 * event sockets; a small table, or one the mirror cannot vouch for, is left to the delete by
 * mark that follows. The remove here does what the kernel would: a destroy event per entry.
 */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { IPCTNL_MSG_CT_DELETE, IPPROTO_TCP, TCP_CONNTRACK_ESTABLISHED } from '../../src/netlink/ctnetlink.js';
import { RECORD_SIZE, readRecord } from '../../src/netlink/entry-record.js';
import { AccessTableMirror, DELETE_CHUNK } from '../../src/nat/access-table-mirror.js';
import { MARK, entry, fakeTable } from '../support/mirror-table.js';

const live = (port: number) => entry(port, IPPROTO_TCP, TCP_CONNTRACK_ESTABLISHED, 432000);

async function mirrorOf(size: number, deletes = true) {
  const t = fakeTable(Array.from({ length: size }, (_, i) => live(1024 + i)));
  const mirror = new AccessTableMirror(t.fake, [MARK], pino({ level: 'silent' }), { now: () => 0 });
  await mirror.start();
  // What the caller's remove is handed: each chunk's client ports, and the barriers passed before it.
  const calls: { ports: number[]; barriersBefore: number }[] = [];
  const remove = async (records: Buffer) => {
    const chunk = [...Array(records.length / RECORD_SIZE).keys()].map((i) => readRecord(records, i * RECORD_SIZE));
    calls.push({ ports: chunk.map((r) => r.client.port), barriersBefore: t.state.barriers });
    if (deletes) for (const r of chunk) t.send(r, IPCTNL_MSG_CT_DELETE);
  };
  return { ...t, mirror, calls, remove };
}

describe('access table mirror: deleting a large VIP', () => {
  it('hands over the entries it lists a chunk at a time, a barrier after each, each entry once, down to one chunk or less', async () => {
    const size = 3 * DELETE_CHUNK + 500;
    const { mirror, calls, remove, state } = await mirrorOf(size);
    const barriersAtStart = state.barriers;
    await mirror.deletePaced(MARK, remove);
    expect(calls.map((c) => c.ports.length)).toEqual([DELETE_CHUNK, DELETE_CHUNK, DELETE_CHUNK]);
    // Chunk k goes only after k barriers passed: the events of the chunks before were read.
    expect(calls.map((c) => c.barriersBefore - barriersAtStart)).toEqual([0, 1, 2]);
    expect(state.barriers - barriersAtStart).toBe(3);
    const handed = calls.flatMap((c) => c.ports);
    expect(new Set(handed).size).toBe(handed.length);
    // The last 500 are the delete by mark's: what is listed now is exactly what was not handed over.
    expect(mirror.count(MARK)).toBe(500);
    const left = (await mirror.snapshot(MARK))!;
    const leftPorts = [...Array(left.length / RECORD_SIZE).keys()].map((i) => readRecord(left, i * RECORD_SIZE).client.port);
    expect([...handed, ...leftPorts].sort((a, b) => a - b)).toEqual(Array.from({ length: size }, (_, i) => 1024 + i));
  });

  it('stops when a chunk took nothing out of the list (the caller deletes by mark)', async () => {
    const { mirror, calls, remove } = await mirrorOf(3 * DELETE_CHUNK, false);
    await mirror.deletePaced(MARK, remove);
    expect(calls).toHaveLength(1);
    expect(mirror.count(MARK)).toBe(3 * DELETE_CHUNK);
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
