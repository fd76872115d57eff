/** Records for the keeper tests: documentation addresses, one per client port. */
import { RECORD_SIZE, writeRecord, type EntryRecord } from '../../src/netlink/entry-record.js';
import { IPS_ASSURED, IPS_CONFIRMED, IPS_DST_NAT, IPS_SEEN_REPLY, TCP_CONNTRACK_ESTABLISHED } from '../../src/netlink/ctnetlink.js';

export function entry(i: number, vip = '203.0.113.10', overrides: Partial<EntryRecord> = {}): EntryRecord {
  return {
    client: { address: `198.51.100.${10 + Math.floor(i / 64000)}`, port: 1024 + (i % 64000) },
    vip: { address: vip, port: 80 },
    server: { address: '198.18.0.101', port: 80 },
    proto: 6,
    tcpState: TCP_CONNTRACK_ESTABLISHED,
    tcpWindow: { wscaleOriginal: 7, wscaleReply: 9, flagsOriginal: 3, flagsReply: 1 },
    status: IPS_SEEN_REPLY | IPS_ASSURED | IPS_CONFIRMED | IPS_DST_NAT,
    timeout: 432000,
    mark: 1,
    ...overrides,
  };
}

export function records(entries: EntryRecord[]): Buffer {
  const b = Buffer.alloc(entries.length * RECORD_SIZE);
  entries.forEach((e, i) => writeRecord(b, i * RECORD_SIZE, e));
  return b;
}

export function many(n: number, vip = '203.0.113.10', first = 0): Buffer {
  return records(Array.from({ length: n }, (_, i) => entry(first + i, vip)));
}
