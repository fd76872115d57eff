/** Records for the keeper tests: documentation addresses, one per client port. */
import { RECORD_SIZE, writeRecord, type EntryRecord } from '../../src/netlink/entry-record.js';
import { IPS_ASSURED, IPS_CONFIRMED, IPS_DST_NAT, IPS_SEEN_REPLY, TCP_CONNTRACK_ESTABLISHED } from '../../src/netlink/ctnetlink.js';

/**
 * The VIPs the keeper tests configure (a keeper stores copies of its VIPs only): vip1 dnat,
 * vip2 and vip4 fullnat (a dnat server serves one VIP), all served by 198.18.0.101 on ports 7 and 80.
 */
export const TEST_VIPS = `
vips:
  - { name: vip1, id: 1, address: 203.0.113.10, insideAddress: 198.18.0.10, ports: [7, 80], mode: dnat, backends: [{ address: 198.18.0.101 }], owner: lb1 }
  - { name: vip2, id: 2, address: 203.0.113.11, insideAddress: 198.18.0.11, ports: [7, 80], mode: fullnat, backends: [{ address: 198.18.0.101 }], snatPorts: "30000-39999", owner: lb1 }
  - { name: vip4, id: 4, address: 203.0.113.13, insideAddress: 198.18.0.13, ports: [7, 80], mode: fullnat, backends: [{ address: 198.18.0.101 }], scheduler: roundrobin, snatPorts: "20000-29999", owner: lb1 }
`;
const MARKS: Record<string, number> = { '203.0.113.10': 1, '203.0.113.11': 2, '203.0.113.13': 4 };
/** The fullnat VIPs' inside address and first SNAT port (TEST_VIPS). */
const FULLNAT: Record<string, { address: string; firstPort: number }> = {
  '203.0.113.11': { address: '198.18.0.11', firstPort: 30000 },
  '203.0.113.13': { address: '198.18.0.13', firstPort: 20000 },
};

/** A copy of connection `i` of the VIP at address `vip` (its mark; its inside address in fullnat). */
export function entry(i: number, vip = '203.0.113.10', overrides: Partial<EntryRecord> = {}): EntryRecord {
  return {
    ...(FULLNAT[vip] ? { inside: { address: FULLNAT[vip]!.address, port: FULLNAT[vip]!.firstPort + (i % 10000) } } : {}),
    client: { address: `198.51.100.${10 + Math.floor(i / 64000)}`, port: 1024 + (i % 64000) },
    vip: { address: vip, port: 80 },
    server: { address: '198.18.0.101', port: 80 },
    proto: 6,
    tcpState: TCP_CONNTRACK_ESTABLISHED,
    tcpWindow: { wscaleOriginal: 7, wscaleReply: 9, flagsOriginal: 3, flagsReply: 1 },
    status: IPS_SEEN_REPLY | IPS_ASSURED | IPS_CONFIRMED | IPS_DST_NAT,
    timeout: 432000,
    mark: MARKS[vip] ?? 1,
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
