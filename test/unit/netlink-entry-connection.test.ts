import { describe, expect, it } from 'vitest';
import {
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPS_ASSURED,
  IPS_SEEN_REPLY,
  TCP_CONNTRACK_CLOSE,
  TCP_CONNTRACK_ESTABLISHED,
  TCP_CONNTRACK_SYN_RECV,
  TCP_CONNTRACK_SYN_SENT,
  TCP_CONNTRACK_TIME_WAIT,
} from '../../src/netlink/ctnetlink.js';
import {
  HANDSHAKE_WINDOW_S,
  RECORD_SIZE,
  handshakeCompleted,
  handshakeInFlight,
  readRecord,
  selectRecords,
  worthMoving,
  writeRecord,
  type EntryRecord,
} from '../../src/netlink/entry-record.js';
import { TCP_TIMEOUT_SYN_RECV_S, TCP_TIMEOUT_SYN_SENT_S } from '../../src/kernel/sysctl.js';

const base: EntryRecord = {
  client: { address: '198.51.100.10', port: 40000 },
  vip: { address: '203.0.113.10', port: 80 },
  server: { address: '198.18.0.101', port: 80 },
  proto: IPPROTO_TCP,
  tcpState: TCP_CONNTRACK_ESTABLISHED,
  tcpWindow: { wscaleOriginal: 7, wscaleReply: 7, flagsOriginal: 0x23, flagsReply: 0x23 },
  status: IPS_SEEN_REPLY | IPS_ASSURED,
  timeout: 431999,
  mark: 1,
};

function record(over: Partial<EntryRecord>): Buffer {
  const b = Buffer.alloc(RECORD_SIZE);
  writeRecord(b, 0, { ...base, ...over });
  return b;
}

describe('which entries carry a connection', () => {
  it('a TCP connection whose handshake completed (ASSURED) is replicated and moved, in every later state', () => {
    for (const tcpState of [TCP_CONNTRACK_ESTABLISHED, TCP_CONNTRACK_TIME_WAIT, TCP_CONNTRACK_CLOSE]) {
      const r = record({ tcpState, timeout: 5 });
      expect(handshakeCompleted(r)).toBe(true);
      expect(worthMoving(r)).toBe(true);
    }
  });

  it("a SYN flood's half-open entry (SYN_RECV, the server answered, the client never did) is neither, once older than the window", () => {
    const junk = record({ tcpState: TCP_CONNTRACK_SYN_RECV, status: IPS_SEEN_REPLY, timeout: TCP_TIMEOUT_SYN_RECV_S - HANDSHAKE_WINDOW_S - 1 });
    expect(handshakeCompleted(junk)).toBe(false);
    expect(handshakeInFlight(junk)).toBe(false);
    expect(worthMoving(junk)).toBe(false);
  });

  it('a handshake in flight (young SYN_SENT or SYN_RECV) is moved, not replicated', () => {
    for (const r of [
      record({ tcpState: TCP_CONNTRACK_SYN_RECV, status: IPS_SEEN_REPLY, timeout: TCP_TIMEOUT_SYN_RECV_S }),
      record({ tcpState: TCP_CONNTRACK_SYN_RECV, status: IPS_SEEN_REPLY, timeout: TCP_TIMEOUT_SYN_RECV_S - HANDSHAKE_WINDOW_S }),
      record({ tcpState: TCP_CONNTRACK_SYN_SENT, status: 0, timeout: TCP_TIMEOUT_SYN_SENT_S - 1 }),
    ]) {
      expect(handshakeInFlight(r)).toBe(true);
      expect(worthMoving(r)).toBe(true);
      expect(handshakeCompleted(r)).toBe(false);
    }
  });

  it('a half-open entry that ended without completing (RST or FIN in SYN_RECV) is junk', () => {
    const r = record({ tcpState: TCP_CONNTRACK_CLOSE, status: IPS_SEEN_REPLY, timeout: 10 });
    expect(worthMoving(r)).toBe(false);
  });

  it('UDP: a flow the server answered is a connection; an unanswered one is not', () => {
    expect(handshakeCompleted(record({ proto: IPPROTO_UDP, tcpState: 0, status: IPS_SEEN_REPLY, timeout: 30 }))).toBe(true);
    expect(worthMoving(record({ proto: IPPROTO_UDP, tcpState: 0, status: 0, timeout: 30 }))).toBe(false);
  });

  it('selectRecords keeps the passing records in order, without a copy when all pass', () => {
    const good = [record({ client: { address: '198.51.100.1', port: 1 } }), record({ client: { address: '198.51.100.2', port: 2 } })];
    const junk = record({ tcpState: TCP_CONNTRACK_SYN_RECV, status: IPS_SEEN_REPLY, timeout: 1 });
    const all = Buffer.concat(good);
    expect(selectRecords(all, worthMoving)).toBe(all);
    const mixed = Buffer.concat([junk, good[0]!, junk, junk, good[1]!]);
    const kept = selectRecords(mixed, worthMoving);
    expect(kept.length).toBe(2 * RECORD_SIZE);
    expect(readRecord(kept, 0).client.port).toBe(1);
    expect(readRecord(kept, RECORD_SIZE).client.port).toBe(2);
    expect(selectRecords(Buffer.concat([junk, junk]), worthMoving).length).toBe(0);
  });
});
