/**
 * Entries another member sends are checked before the kernel sees them: an appliance's
 * access table (real conntrack in a throwaway network namespace) gets only the records that
 * belong to the VIP — a migration's import and a takeover's keeper and peer answers alike —
 * and the others are refused and counted by source. Namespaces vtbnd<hex>, always removed.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Appliance } from '../../src/appliance/appliance.js';
import { parseApplianceConfig } from '../../src/config/appliance.js';
import { Conntrack } from '../../src/netlink/conntrack.js';
import { IPS_ASSURED, IPS_DST_NAT, IPS_SEEN_REPLY, IPS_SRC_NAT, TCP_CONNTRACK_ESTABLISHED } from '../../src/netlink/ctnetlink.js';
import { RECORD_SIZE, encodeStreamHeader, readRecord, writeRecord, type EntryRecord } from '../../src/netlink/entry-record.js';
import { Takeover, type EntrySource } from '../../src/replication/takeover.js';

const PREFIX = 'vtbnd';
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const removeLeftovers = () => {
  for (const line of sh('ip', ['netns', 'list']).split('\n')) {
    const name = line.split(' ')[0];
    if (name?.startsWith(PREFIX)) sh('ip', ['netns', 'del', name]);
  }
};

const config = parseApplianceConfig(
  `appliance: lb2
api: { listen: "192.0.2.12:8441" }
interfaces: { external: ext0, internal: int0 }
vips:
  - { name: vip1, id: 1, address: 203.0.113.10, insideAddress: 198.18.0.10, ports: [7, 80], mode: dnat, backends: [{ address: 198.18.0.101 }], owner: lb1 }
  - { name: vip4, id: 4, address: 203.0.113.13, insideAddress: 198.18.0.13, ports: [7, 80], mode: fullnat, backends: [{ address: 198.18.0.101 }, { address: 198.18.0.102 }], scheduler: roundrobin, snatPorts: "20000-29999", owner: lb1 }
`,
  'lb2.yaml',
);

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
const fullnat = (i: number, change: Partial<EntryRecord> = {}) =>
  dnat(i, { vip: { address: '203.0.113.13', port: 7 }, server: { address: '198.18.0.102', port: 7 }, inside: { address: '198.18.0.13', port: 20000 + i }, status: IPS_SEEN_REPLY | IPS_ASSURED | IPS_DST_NAT | IPS_SRC_NAT, mark: 4, ...change });
const encode = (entries: EntryRecord[]) => {
  const b = Buffer.alloc(entries.length * RECORD_SIZE);
  entries.forEach((e, i) => writeRecord(b, i * RECORD_SIZE, e));
  return b;
};

/** Forged records of each kind for vip1, and for vip4 (to be sent as vip1's). */
const forgedForVip1 = () => [
  dnat(100, { mark: 4 }),
  dnat(101, { vip: { address: '198.51.100.200', port: 80 } }),
  dnat(102, { vip: { address: '203.0.113.10', port: 22 }, server: { address: '198.18.0.101', port: 22 } }),
  dnat(103, { server: { address: '192.0.2.66', port: 80 } }),
  dnat(104, { inside: { address: '198.18.0.10', port: 20104 } }),
  fullnat(105),
];

describe('entries checked at the boundary (real conntrack)', () => {
  const ns = `${PREFIX}${randomBytes(3).toString('hex')}`;
  let conntrack: Conntrack;
  let box: Appliance;
  beforeAll(() => {
    removeLeftovers();
    sh('ip', ['netns', 'add', ns]);
    conntrack = new Conntrack({ netns: ns });
    // Only the access table is used here: no NAT engine, no addresses.
    box = new Appliance(config, undefined as never, conntrack, undefined as never);
  });
  afterAll(() => {
    conntrack?.close();
    removeLeftovers();
  });

  const installed = async (mark: number) => {
    const chunks: Buffer[] = [];
    await conntrack.dumpRecords(mark, (b) => chunks.push(Buffer.from(b)));
    const all = Buffer.concat(chunks);
    return Array.from({ length: all.length / RECORD_SIZE }, (_, i) => readRecord(all, i * RECORD_SIZE).client.port).sort();
  };

  it('a migration\'s import installs the VIP\'s records and refuses forged ones, counted for the source', async () => {
    const stream = Readable.from([encodeStreamHeader(), encode([dnat(0), ...forgedForVip1(), dnat(1)])]);
    const r = await box.importEntries('vip1', stream, () => undefined, { source: 'lb1' });
    expect(r).toEqual({ created: 2, failed: 0, refused: 6 });
    expect(await installed(1)).toEqual([40000, 40001]);
    expect(await installed(4)).toEqual([]);
    const counted = box.refusedEntries().filter((x) => x.kind === 'import' && x.source === 'lb1');
    expect(Object.fromEntries(counted.map((x) => [x.reason, x.records]))).toEqual({ mark: 2, address: 1, port: 1, server: 1, inside: 1 });
  });

  it('a takeover installs what keepers and peers answer only where it belongs, per source', async () => {
    const source = (name: string, records: Buffer): EntrySource => ({ name, entries: async () => records });
    const takeover = new Takeover({
      config,
      // The mode table is not this test's: the hold and activation are recorded only.
      appliance: { config, vip: (n) => box.vip(n), prepare: async () => undefined, activate: async () => ({ released: 0 }), deleteEntries: (n) => box.deleteEntries(n), dropPrecopy: (n) => box.dropPrecopy(n), installEntries: (v, b, from) => box.installEntries(v, b, from) },
      modes: () => new Map([['vip4', 'migrating']]),
      keepers: new Map([
        ['198.18.0.101', source('srv1', encode([fullnat(10, { server: { address: '198.18.0.101', port: 7 } }), dnat(11)]))],
        ['198.18.0.102', source('srv2', encode([fullnat(12), fullnat(13, { inside: { address: '198.18.0.13', port: 40000 } })]))],
      ]),
      peers: [source('lb1', encode([fullnat(14), fullnat(15, { server: { address: '198.18.0.250', port: 7 } })]))],
      logger: pino({ level: 'silent' }),
    });
    const report = await takeover.becameMaster('vip4');
    expect(report).toMatchObject({ created: 3, refused: 3 });
    expect(report.keepers.map((k) => [k.name, k.records, k.refused ?? 0]).sort()).toEqual([
      ['srv1', 2, 1],
      ['srv2', 2, 1],
    ]);
    expect(report.peers.map((k) => [k.name, k.records, k.refused])).toEqual([['lb1', 2, 1]]);
    expect(await installed(4)).toEqual([40010, 40012, 40014]);
    const counted = box.refusedEntries().filter((x) => x.vip === 'vip4');
    expect(counted.map((x) => [x.kind, x.source, x.reason, x.records]).sort()).toEqual([
      ['keeper', 'srv1', 'mark', 1],
      ['keeper', 'srv2', 'inside', 1],
      ['peer', 'lb1', 'server', 1],
    ]);
  });
});
