/**
 * Readers of the access table mirror during its rebuild (after lost events): those allowed to
 * wait get the rebuilt mirror, behind the barrier, without a dump of their own; one that may
 * not wait that long (step 3 inside the hold) is told at once, or when its bound runs out, that
 * the mirror cannot vouch, and dumps the kernel's table itself.
 */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { IPPROTO_TCP, TCP_CONNTRACK_ESTABLISHED } from '../../src/netlink/ctnetlink.js';
import { RECORD_SIZE, readRecord } from '../../src/netlink/entry-record.js';
import { AccessTableMirror } from '../../src/nat/access-table-mirror.js';
import { MARK, entry, fakeTable } from '../support/mirror-table.js';

const live = (port: number) => entry(port, IPPROTO_TCP, TCP_CONNTRACK_ESTABLISHED, 432000);
const portsOf = (records: Buffer | undefined) =>
  records === undefined ? undefined : [...Array(records.length / RECORD_SIZE).keys()].map((i) => readRecord(records, i * RECORD_SIZE).client.port).sort((a, b) => a - b);
/** Whether a promise is still pending once everything queued so far has run. */
async function pending(p: Promise<unknown>): Promise<boolean> {
  let settled = false;
  void p.then(() => (settled = true), () => (settled = true));
  await new Promise((r) => setTimeout(r, 5));
  return !settled;
}

/** A mirror started on `table`, then an overrun: its rebuild's dump waits until `release()`. */
async function rebuilding(table = [live(1001)]) {
  const t = fakeTable(table);
  const mirror = new AccessTableMirror(t.fake, [MARK], pino({ level: 'silent' }), { now: () => 0 });
  await mirror.start();
  const events = t.fake.subscribe({ groups: ['update', 'destroy'], raw: true });
  const release = t.slowDumps();
  events.emit('overrun');
  expect(mirror.rebuilding).toBe(true);
  return { ...t, mirror, events, release };
}

describe('access table mirror: readers during a rebuild', () => {
  it('a reader that may wait gets the rebuilt mirror, events of the rebuild included, with no dump of its own', async () => {
    const { mirror, state, send, release } = await rebuilding();
    expect(state.dumps).toBe(2); // the start's and the rebuild's
    const barriersBefore = state.barriers;
    const read = mirror.snapshot(MARK, 10_000);
    send(live(1002)); // the kernel changes the table while the rebuild's dump runs
    expect(await pending(read)).toBe(true);
    expect(state.barriers).toBe(barriersBefore); // no barrier before the rebuild ended

    release();
    expect(portsOf(await read)).toEqual([1001, 1002]);
    expect(state.dumps).toBe(2);
    expect(state.barriers).toBe(barriersBefore + 1); // the barrier passed after the rebuild
    expect(mirror.status()).toMatchObject({ synced: true, readersDuringRebuild: { waited: 1, dumped: 0 } });
    mirror.close();
  });

  it('a reader that may not wait (the hold) is told at once that the mirror cannot vouch', async () => {
    const { mirror, release } = await rebuilding();
    const t0 = performance.now();
    expect(await mirror.snapshot(MARK, 0)).toBeUndefined();
    expect(await mirror.snapshot(MARK)).toBeUndefined();
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(mirror.status().readersDuringRebuild).toEqual({ waited: 0, dumped: 2 });
    release();
    await mirror.rebuild();
    expect(portsOf(await mirror.snapshot(MARK, 0))).toEqual([1001]);
    mirror.close();
  });

  it('a wait is bounded: past it the reader gives up and dumps, the rebuild goes on', async () => {
    const { mirror, release } = await rebuilding();
    const t0 = performance.now();
    expect(await mirror.snapshot(MARK, 40)).toBeUndefined();
    expect(performance.now() - t0).toBeGreaterThanOrEqual(35);
    expect(mirror.status().readersDuringRebuild.dumped).toBe(1);
    expect(mirror.rebuilding).toBe(true);
    release();
    await mirror.rebuild();
    expect(mirror.status().synced).toBe(true);
    mirror.close();
  });

  it('a rebuild started over (events lost during its dump) is waited for to its end', async () => {
    const { mirror, state, events, slowDumps, release } = await rebuilding();
    const read = mirror.snapshot(MARK, 10_000);
    events.emit('overrun'); // lost again during the dump: it must be redone
    const releaseSecond = slowDumps();
    release();
    expect(await pending(read)).toBe(true);
    expect(state.dumps).toBe(3);
    releaseSecond();
    expect(portsOf(await read)).toEqual([1001]);
    expect(state.dumps).toBe(3);
    mirror.close();
  });

  it("a status's count reads the mirror as it is, without a barrier, and nothing during a rebuild", async () => {
    const { mirror, state, send, release } = await rebuilding();
    expect(mirror.current(MARK)).toBeUndefined();
    release();
    await mirror.rebuild();
    send(live(1004));
    const barriers = state.barriers;
    expect(portsOf(mirror.current(MARK))).toEqual([1001, 1004]);
    expect(state.barriers).toBe(barriers);
    mirror.close();
  });

  it("a pre-copy's snapshot waits too, and its change journal starts after the rebuild: its difference is vouched for", async () => {
    const { mirror, send, release } = await rebuilding();
    const snapshot = mirror.track(MARK, 'm1', 10_000);
    expect(await pending(snapshot)).toBe(true);
    release();
    expect(portsOf(await snapshot)).toEqual([1001]);
    send(live(1003));
    const diff = await mirror.changes(MARK, 'm1', false);
    if ('refused' in diff) throw new Error(`refused: ${diff.refused}`);
    expect(diff.upserts).toBe(1);
    expect(portsOf(diff.records)).toEqual([1003]);
    mirror.close();
  });
});
