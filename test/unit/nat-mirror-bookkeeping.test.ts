/**
 * The access table mirror's bookkeeping on a table in memory: what conntrack's events do to a
 * VIP's records, what it does with messages it cannot read, and how an overrun (lost events)
 * makes it rebuild and stop vouching for a pre-copy's difference.
 */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_NEW, IPPROTO_TCP, TCP_CONNTRACK_ESTABLISHED, TCP_CONNTRACK_FIN_WAIT, ctnlType } from '../../src/netlink/ctnetlink.js';
import { RECORD_SIZE, readRecord } from '../../src/netlink/entry-record.js';
import { AccessTableMirror } from '../../src/nat/access-table-mirror.js';
import { MARK, entry, fakeTable, records } from '../support/mirror-table.js';

const OTHER_MARK = 2;

async function started(table = [entry(1001, IPPROTO_TCP, TCP_CONNTRACK_ESTABLISHED, 432000)]) {
  const { fake, send } = fakeTable(table);
  const mirror = new AccessTableMirror(fake, [MARK, OTHER_MARK], pino({ level: 'silent' }), { now: () => 0 });
  await mirror.start();
  const events = fake.subscribe({ groups: ['update', 'destroy'], raw: true });
  const ports = async (mark = MARK) => {
    const snap = await mirror.snapshot(mark);
    if (!snap) throw new Error('the mirror does not vouch');
    return [...Array(snap.length / RECORD_SIZE).keys()].map((i) => readRecord(snap, i * RECORD_SIZE)).sort((a, b) => a.client.port - b.client.port);
  };
  return { mirror, send, events, ports };
}

describe('access table mirror bookkeeping', () => {
  it('follows updates and destroys by tuple, per VIP, and ignores entries of no VIP', async () => {
    const { mirror, send, ports } = await started();
    expect(mirror.status()).toMatchObject({ synced: true, entries: 1, resyncs: 1 });

    send(entry(1002, IPPROTO_TCP, TCP_CONNTRACK_ESTABLISHED, 432000)); // a new tuple
    send({ ...entry(1001, IPPROTO_TCP, TCP_CONNTRACK_FIN_WAIT, 120) }); // the same tuple, changed
    send({ ...entry(1003, IPPROTO_TCP, TCP_CONNTRACK_ESTABLISHED, 432000), mark: OTHER_MARK });
    send({ ...entry(1004, IPPROTO_TCP, TCP_CONNTRACK_ESTABLISHED, 432000), mark: 77 }); // no VIP of ours
    let got = await ports();
    expect(got.map((r) => r.client.port)).toEqual([1001, 1002]);
    expect(got[0]).toMatchObject({ tcpState: TCP_CONNTRACK_FIN_WAIT, timeout: 120 });
    expect((await ports(OTHER_MARK)).map((r) => r.client.port)).toEqual([1003]);
    expect(mirror.count(MARK)).toBe(2);

    send(entry(1001, IPPROTO_TCP, TCP_CONNTRACK_FIN_WAIT, 120), IPCTNL_MSG_CT_DELETE);
    send(entry(1999, IPPROTO_TCP, TCP_CONNTRACK_FIN_WAIT, 120), IPCTNL_MSG_CT_DELETE); // never seen: nothing to remove
    got = await ports();
    expect(got.map((r) => r.client.port)).toEqual([1002]);
    expect(mirror.status().entries).toBe(2);
    mirror.close();
  });

  it('counts a message it cannot read and goes on', async () => {
    const { mirror, events, ports } = await started();
    const garbage = { type: ctnlType(IPCTNL_MSG_CT_NEW), flags: 0, seq: 0, pid: 0, payload: Buffer.from([2, 0, 0, 0, 0xff, 0xff, 0x01]) };
    expect(() => events.emit('message', garbage)).not.toThrow();
    expect(mirror.status().malformed).toBe(1);
    expect((await ports()).map((r) => r.client.port)).toEqual([1001]);
    mirror.close();
  });

  it('entries it created itself are in the next read, those whose create failed are not', async () => {
    const { mirror, ports } = await started([]);
    mirror.added(records(entry(2001, IPPROTO_TCP, TCP_CONNTRACK_ESTABLISHED, 432000), entry(2002, IPPROTO_TCP, TCP_CONNTRACK_ESTABLISHED, 432000)), [
      { index: 1, errno: 17, code: 'EEXIST' },
    ]);
    expect((await ports()).map((r) => r.client.port)).toEqual([2001]);
    mirror.close();
  });

  it('after lost events it rebuilds from a dump, and refuses the difference of a pre-copy taken before', async () => {
    const { mirror, send, events, ports } = await started();
    const snapshot = await mirror.track(MARK, 'm1');
    expect(snapshot!.length / RECORD_SIZE).toBe(1);
    send(entry(1002, IPPROTO_TCP, TCP_CONNTRACK_ESTABLISHED, 432000));

    events.emit('overrun');
    expect(mirror.status().synced).toBe(false);
    expect(mirror.count(MARK)).toBeUndefined(); // no count while it cannot vouch
    await mirror.rebuild();
    // The rebuilt mirror is the kernel's table (the dump), not what events said before.
    expect(mirror.status()).toMatchObject({ synced: true, overruns: 1 });
    expect(mirror.status().resyncs).toBeGreaterThanOrEqual(2);
    expect((await ports()).map((r) => r.client.port)).toEqual([1001]);
    const diff = await mirror.changes(MARK, 'm1', false);
    expect(diff).toEqual({ refused: expect.stringMatching(/lost events/) });
    mirror.close();
  });
});
