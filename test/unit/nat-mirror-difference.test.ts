import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import {
  IPCTNL_MSG_CT_DELETE,
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPS_ASSURED,
  IPS_DYING,
  IPS_SEEN_REPLY,
  TCP_CONNTRACK_CLOSE_WAIT,
  TCP_CONNTRACK_ESTABLISHED,
  TCP_CONNTRACK_TIME_WAIT,
} from '../../src/netlink/ctnetlink.js';
import { RECORD_SIZE, readRecord, type EntryRecord } from '../../src/netlink/entry-record.js';
import { AccessTableMirror, REFRESH_BELOW_S } from '../../src/nat/access-table-mirror.js';
import { MARK, entry, fakeTable } from '../support/mirror-table.js';

/** The difference's records by client port. */
function byPort(buf: Buffer): Map<number, EntryRecord> {
  const out = new Map<number, EntryRecord>();
  for (let o = 0; o < buf.length; o += RECORD_SIZE) {
    const r = readRecord(buf, o);
    out.set(r.client.port, r);
  }
  return out;
}

describe('the pre-copy difference: which untouched entries are refreshed', () => {
  const established = entry(1001, IPPROTO_TCP, TCP_CONNTRACK_ESTABLISHED, 432000);
  // Its last event came while data was unacknowledged: the kernel's 300 s.
  const unacknowledged = entry(1002, IPPROTO_TCP, TCP_CONNTRACK_ESTABLISHED, 300);
  const closeWait = entry(1003, IPPROTO_TCP, TCP_CONNTRACK_CLOSE_WAIT, 60);
  const timeWait = entry(1004, IPPROTO_TCP, TCP_CONNTRACK_TIME_WAIT, 120);
  const udp = entry(1005, IPPROTO_UDP, 0, 120);
  const udpLong = entry(1006, IPPROTO_UDP, 0, 3600);

  async function mirrorAt(start: number) {
    let now = start;
    const { fake, send } = fakeTable([established, unacknowledged, closeWait, timeWait, udp, udpLong]);
    const mirror = new AccessTableMirror(fake, [MARK], pino({ level: 'silent' }), { now: () => now });
    await mirror.start();
    return { mirror, send, advance: (s: number) => (now += s * 1000) };
  }

  it('leaves a live connection out until its copy would have less than TCP_RTO_MAX left; short-timeout states and UDP always in', async () => {
    expect(REFRESH_BELOW_S).toBe(120);
    const { mirror, advance } = await mirrorAt(5_000);
    const snapshot = await mirror.track(MARK, 'm1');
    expect(snapshot!.length / RECORD_SIZE).toBe(6);

    advance(2); // a cut-over two seconds after the pre-copy: the copy of the 300 s entry has 298 s left
    let diff = await mirror.changes(MARK, 'm1', true);
    if ('refused' in diff) throw new Error(diff.refused);
    expect([...byPort(diff.records).keys()].sort()).toEqual([1003, 1004, 1005, 1006]);
    expect(diff.ended).toBe(0);

    advance(179); // 181 s after the pre-copy: 119 s left, under TCP_RTO_MAX
    diff = await mirror.changes(MARK, 'm1', false);
    if ('refused' in diff) throw new Error(diff.refused);
    const refreshed = byPort(diff.records);
    expect([...refreshed.keys()].sort()).toEqual([1002, 1003, 1004, 1005, 1006]);
    // Refreshed with the timeout last reported, whole: the target counts it from now.
    expect(refreshed.get(1002)!.timeout).toBe(300);
    mirror.close();
  });

  it('a touched entry is in the difference as it is now, an ended one marked dying, whatever its timeout', async () => {
    const { mirror, send, advance } = await mirrorAt(0);
    await mirror.track(MARK, 'm2');
    advance(1);
    send({ ...established, timeout: 431999, status: IPS_SEEN_REPLY | IPS_ASSURED });
    send(unacknowledged, IPCTNL_MSG_CT_DELETE);
    const diff = await mirror.changes(MARK, 'm2', false);
    if ('refused' in diff) throw new Error(diff.refused);
    const got = byPort(diff.records);
    expect(got.get(1001)!.timeout).toBe(431999);
    expect(got.get(1002)!.status & IPS_DYING).toBe(IPS_DYING);
    expect(diff.ended).toBe(1);
    // Ended records come first: the target deletes before it creates.
    expect(readRecord(diff.records, 0).client.port).toBe(1002);
    mirror.close();
  });
});
