/**
 * Entry records checked at the boundary (src/config/vip-records.ts): a record is installed or
 * stored only if it belongs to its VIP. Forged records of each kind are refused and counted.
 */
import { describe, expect, it } from 'vitest';
import { parseApplianceConfig } from '../../src/config/appliance.js';
import { checkRecords } from '../../src/config/vip-records.js';
import { RECORD_SIZE, readRecord, writeRecord, type EntryRecord } from '../../src/netlink/entry-record.js';
import { IPS_ASSURED, IPS_DST_NAT, IPS_SEEN_REPLY, IPS_SRC_NAT, TCP_CONNTRACK_ESTABLISHED } from '../../src/netlink/ctnetlink.js';

const config = parseApplianceConfig(
  `appliance: lb1
api: { listen: "192.0.2.11:8441" }
interfaces: { external: ext0, internal: int0 }
vips:
  - { name: vip1, id: 1, address: 203.0.113.10, insideAddress: 198.18.0.10, ports: [7, 80], mode: dnat, backends: [{ address: 198.18.0.101 }], owner: lb1 }
  - { name: vip4, id: 4, address: 203.0.113.13, insideAddress: 198.18.0.13, ports: [7, 80], mode: fullnat, backends: [{ address: 198.18.0.101 }, { address: 198.18.0.102 }], scheduler: roundrobin, snatPorts: "20000-29999", owner: lb1 }
`,
  'lb1.yaml',
);
const [vip1, vip4] = config.vips as [(typeof config.vips)[0], (typeof config.vips)[0]];

function dnat(i: number, change: Partial<EntryRecord> = {}): EntryRecord {
  return {
    client: { address: '198.51.100.7', port: 40000 + i },
    vip: { address: '203.0.113.10', port: 80 },
    server: { address: '198.18.0.101', port: 80 },
    proto: 6,
    tcpState: TCP_CONNTRACK_ESTABLISHED,
    tcpWindow: { wscaleOriginal: 7, wscaleReply: 7, flagsOriginal: 3, flagsReply: 3 },
    status: IPS_SEEN_REPLY | IPS_ASSURED | IPS_DST_NAT,
    timeout: 300,
    mark: 1,
    ...change,
  };
}
const fullnat = (i: number, change: Partial<EntryRecord> = {}): EntryRecord =>
  dnat(i, {
    vip: { address: '203.0.113.13', port: 7 },
    server: { address: '198.18.0.102', port: 7 },
    inside: { address: '198.18.0.13', port: 20000 + i },
    status: IPS_SEEN_REPLY | IPS_ASSURED | IPS_DST_NAT | IPS_SRC_NAT,
    mark: 4,
    ...change,
  });

const encode = (entries: EntryRecord[]) => {
  const b = Buffer.alloc(entries.length * RECORD_SIZE);
  entries.forEach((e, i) => writeRecord(b, i * RECORD_SIZE, e));
  return b;
};
const ports = (b: Buffer) => Array.from({ length: b.length / RECORD_SIZE }, (_, i) => readRecord(b, i * RECORD_SIZE).client.port);

describe('entry records checked against their VIP', () => {
  it('takes a VIP\'s own records as they are (no copy)', () => {
    const records = encode([dnat(0), dnat(1, { vip: { address: '203.0.113.10', port: 7 }, server: { address: '198.18.0.101', port: 7 } })]);
    const check = checkRecords(records, [vip1]);
    expect(check).toMatchObject({ refused: 0, reasons: {} });
    expect(check.accepted.buffer).toBe(records.buffer);
    expect(checkRecords(encode([fullnat(0), fullnat(1, { server: { address: '198.18.0.101', port: 7 } })]), [vip4]).refused).toBe(0);
  });

  const forged: [string, EntryRecord, string][] = [
    ['another VIP\'s mark', dnat(1, { mark: 4 }), 'mark'],
    ['an unknown mark', dnat(1, { mark: 99 }), 'mark'],
    ['another destination address', dnat(1, { vip: { address: '203.0.113.99', port: 80 } }), 'address'],
    ['the other VIP\'s address under this mark', dnat(1, { vip: { address: '203.0.113.13', port: 80 } }), 'address'],
    ['UDP on a TCP VIP', dnat(1, { proto: 17, tcpState: 0 }), 'protocol'],
    ['a port the VIP does not serve', dnat(1, { vip: { address: '203.0.113.10', port: 22 }, server: { address: '198.18.0.101', port: 22 } }), 'port'],
    ['a server outside the pool', dnat(1, { server: { address: '198.18.0.66', port: 80 } }), 'server'],
    ['a server on another port', dnat(1, { server: { address: '198.18.0.101', port: 8080 } }), 'server'],
    ['an inside address on a dnat VIP', dnat(1, { inside: { address: '198.18.0.10', port: 20001 } }), 'inside'],
  ];
  for (const [what, record, reason] of forged) {
    it(`refuses ${what} (${reason}), keeps the rest in order`, () => {
      const check = checkRecords(encode([dnat(0), record, dnat(2)]), [vip1]);
      expect(check.refused).toBe(1);
      expect(check.reasons).toEqual({ [reason]: 1 });
      expect(ports(check.accepted)).toEqual([40000, 40002]);
    });
  }

  it('fullnat: refuses a record without the inside address, with another one, or outside snatPorts', () => {
    const { inside: _none, ...noInside } = fullnat(1);
    const records = encode([
      fullnat(0),
      noInside,
      fullnat(2, { inside: { address: '198.18.0.10', port: 20002 } }),
      fullnat(3, { inside: { address: '198.18.0.13', port: 31000 } }),
      fullnat(4, { server: { address: '198.18.0.103', port: 7 } }),
      fullnat(5),
    ]);
    const check = checkRecords(records, [vip1, vip4]);
    expect(check.reasons).toEqual({ inside: 3, server: 1 });
    expect(ports(check.accepted)).toEqual([40000, 40005]);
  });

  it('a backend with a port of its own, and the sorry server, on the ports they serve', () => {
    const mapped = parseApplianceConfig(
      `appliance: lb1
api: { listen: "192.0.2.11:8441" }
interfaces: { external: ext0, internal: int0 }
vips:
  - { name: web, id: 9, address: 203.0.113.20, insideAddress: 198.18.0.20, ports: [80], mode: fullnat, snatPorts: "20000-29999", owner: lb1,
      backends: [{ address: 198.18.0.101, port: 8080 }, { address: 198.18.0.102 }], sorryServer: { address: 198.18.0.200, port: 8000 } }
`,
      'lb1.yaml',
    ).vips;
    const web = (i: number, server: { address: string; port: number }) =>
      fullnat(i, { vip: { address: '203.0.113.20', port: 80 }, server, inside: { address: '198.18.0.20', port: 20000 + i }, mark: 9 });
    const check = checkRecords(
      encode([
        web(0, { address: '198.18.0.101', port: 8080 }),
        web(1, { address: '198.18.0.101', port: 80 }),
        web(2, { address: '198.18.0.102', port: 80 }),
        web(3, { address: '198.18.0.102', port: 8080 }),
        web(4, { address: '198.18.0.200', port: 8000 }),
        web(5, { address: '198.18.0.200', port: 80 }),
      ]),
      mapped,
    );
    expect(check.reasons).toEqual({ server: 3 });
    expect(ports(check.accepted)).toEqual([40000, 40002, 40004]);
  });

  it('with the keeper\'s whole list: each record is checked against the VIP of its mark', () => {
    const check = checkRecords(encode([dnat(0), fullnat(1), dnat(2, { mark: 7 }), fullnat(3, { mark: 1 })]), [vip1, vip4]);
    expect(check.reasons).toEqual({ mark: 1, address: 1 });
    expect(ports(check.accepted)).toEqual([40000, 40001]);
    expect(checkRecords(encode([dnat(0)]), []).reasons).toEqual({ mark: 1 });
  });

  it('a fuzzed buffer never throws and accepts only records that pass', () => {
    for (let round = 0; round < 200; round++) {
      const records = encode([dnat(round), fullnat(round)]);
      for (let k = 0; k < 3; k++) records[Math.floor(Math.random() * records.length)] = Math.floor(Math.random() * 256);
      const check = checkRecords(records, [vip1, vip4]);
      expect(check.accepted.length / RECORD_SIZE + check.refused).toBe(2);
      expect(checkRecords(check.accepted, [vip1, vip4]).refused).toBe(0);
    }
  });
});
