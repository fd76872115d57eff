import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { KEY_SIZE, decodeBatch, encodeBatch, readKey } from '../../src/keeper/batch.js';
import { failoverWarnings, parseApplianceConfig } from '../../src/config/appliance.js';
import { IPPROTO_TCP, IPS_DST_NAT, TCP_CONNTRACK_ESTABLISHED, type ConntrackEntry } from '../../src/netlink/ctnetlink.js';
import { RECORD_SIZE, readRecord, writeRecord, type EntryRecord } from '../../src/netlink/entry-record.js';
import { Backlog, recordKey } from '../../src/replication/backlog.js';
import { entryRecordOf } from '../../src/netlink/entry-record-ctnetlink.js';

const window = { wscaleOriginal: 7, wscaleReply: 7, flagsOriginal: 0x0c, flagsReply: 0x0c };

function record(clientPort: number, over: Partial<EntryRecord> = {}): Buffer {
  const b = Buffer.alloc(RECORD_SIZE);
  writeRecord(b, 0, {
    client: { address: '198.51.100.10', port: clientPort },
    vip: { address: '203.0.113.10', port: 7 },
    server: { address: '198.18.0.101', port: 7 },
    proto: IPPROTO_TCP,
    tcpState: TCP_CONNTRACK_ESTABLISHED,
    tcpWindow: window,
    status: 0x1ae,
    timeout: 432000,
    mark: 1,
    ...over,
  });
  return b;
}

describe('Backlog', () => {
  it("joins SYNPROXY's sequence offset (an event of its own, no TCP state) to the connection's waiting copy", () => {
    const b = new Backlog(100);
    const synproxy = { isn: 0x11111111, its: 5, tsoff: 9 };
    const seqAdj = { original: { correctionPos: 0, offsetBefore: 0, offsetAfter: 0 }, reply: { correctionPos: 0, offsetBefore: 0x7fff0000, offsetAfter: 0x7fff0000 } };
    b.put(record(1000, { synproxy }), false, 1);
    const update = record(1000, { tcpState: 0, tcpWindow: { wscaleOriginal: 0, wscaleReply: 0, flagsOriginal: 0, flagsReply: 0 }, seqAdj });
    expect(b.amend(update)).toBe(true);
    // None waits for another connection, nor once the copy went out.
    expect(b.amend(record(1001, { seqAdj }))).toBe(false);
    const taken = b.take(10)!;
    expect(readRecord(taken.batch.upserts)).toEqual(readRecord(record(1000, { synproxy, seqAdj })));
    expect(b.amend(update)).toBe(false);
    // The joined copy is one a keeper takes.
    expect(() => decodeBatch(encodeBatch(taken.batch))).not.toThrow();
  });

  it('keeps one change per connection, the last one, in order of first change', () => {
    const b = new Backlog(100);
    b.put(record(1000), false, 1);
    b.put(record(1001), false, 2);
    b.put(record(1000, { timeout: 7 }), false, 3);
    b.put(record(1001), true, 4);
    expect(b.size).toBe(2);
    expect(b.oldestAt).toBe(1);
    const taken = b.take(10)!;
    expect(taken).toMatchObject({ upserts: 1, deletes: 1, oldestAt: 1 });
    expect(b.size).toBe(0);
    // What goes to the keeper decodes as a valid batch: the newest upsert and the delete's key.
    const batch = decodeBatch(encodeBatch(taken.batch));
    expect(readRecord(batch.upserts).timeout).toBe(7);
    expect(readKey(batch.deletes, 0)).toEqual({ vip: '203.0.113.10', vipPort: 7, client: '198.51.100.10', clientPort: 1001, proto: IPPROTO_TCP });
  });

  it('takes at most the batch size, oldest first', () => {
    const b = new Backlog(100);
    for (let p = 1; p <= 5; p++) b.put(record(p), false, p);
    const taken = b.take(2)!;
    expect(taken.batch.upserts.length).toBe(2 * RECORD_SIZE);
    expect(readRecord(taken.batch.upserts, 0).client.port).toBe(1);
    expect(b.size).toBe(3);
    expect(b.oldestAt).toBe(3);
  });

  it('puts an undelivered batch back in front, under newer changes of the same connections', () => {
    const b = new Backlog(100);
    b.put(record(1), false, 1);
    b.put(record(2), false, 2);
    const taken = b.take(10)!;
    b.put(record(2), true, 5); // destroyed while the push was failing
    b.put(record(3), false, 6);
    expect(b.putBack(taken)).toBe(true);
    expect(b.size).toBe(3);
    expect(b.oldestAt).toBe(1);
    const again = b.take(10)!;
    expect(again).toMatchObject({ upserts: 2, deletes: 1 });
    expect(readKey(again.batch.deletes, 0).clientPort).toBe(2);
  });

  it('drops everything beyond its bound and says so', () => {
    const b = new Backlog(3);
    for (let p = 1; p <= 3; p++) expect(b.put(record(p), false, p)).toBe(true);
    expect(b.put(record(3), true, 9)).toBe(true); // same connection: no growth
    expect(b.put(record(4), false, 10)).toBe(false);
    expect(b.size).toBe(0);
    expect(b.dropped).toBe(4);
  });

  it('a refresh never overrides a waiting change', () => {
    const b = new Backlog(10);
    b.put(record(1), true, 1);
    b.refresh(record(1), 2);
    b.refresh(record(2), 2);
    const taken = b.take(10)!;
    expect(taken).toMatchObject({ upserts: 1, deletes: 1 });
    expect(taken.batch.deletes.length).toBe(KEY_SIZE);
  });

  it('keys a connection by its original tuple only', () => {
    expect(recordKey(record(1, { timeout: 1, tcpState: 4 }))).toBe(recordKey(record(1)));
    expect(recordKey(record(1))).not.toBe(recordKey(record(2)));
    expect(recordKey(record(1, { vip: { address: '203.0.113.13', port: 7 } }))).not.toBe(recordKey(record(1)));
  });
});

describe('entryRecordOf', () => {
  const orig = { src: '198.51.100.10', dst: '203.0.113.13', sport: 40000, dport: 80, proto: IPPROTO_TCP };
  const fullnat: ConntrackEntry = {
    orig,
    reply: { src: '198.18.0.102', dst: '198.18.0.13', sport: 80, dport: 20001, proto: IPPROTO_TCP },
    status: IPS_DST_NAT | 0x10000,
    timeout: 431999,
    mark: 4,
    tcpState: TCP_CONNTRACK_ESTABLISHED,
    tcpWindow: window,
  };

  it('writes the record a dump would: server, inside address, state, window, timeout, mark', () => {
    const r = readRecord(entryRecordOf(fullnat, false));
    expect(r).toEqual({
      client: { address: '198.51.100.10', port: 40000 },
      vip: { address: '203.0.113.13', port: 80 },
      server: { address: '198.18.0.102', port: 80 },
      inside: { address: '198.18.0.13', port: 20001 },
      proto: IPPROTO_TCP,
      tcpState: TCP_CONNTRACK_ESTABLISHED,
      tcpWindow: window,
      status: IPS_DST_NAT,
      timeout: 431999,
      mark: 4,
    });
  });

  it('a dnat entry has no inside address; a destroy carries the key and the server', () => {
    const dnat: ConntrackEntry = { ...fullnat, reply: { src: '198.18.0.101', dst: orig.src, sport: 80, dport: orig.sport, proto: IPPROTO_TCP } };
    expect(readRecord(entryRecordOf(dnat, false)).inside).toBeUndefined();
    const gone = readRecord(entryRecordOf({ ...dnat, timeout: undefined as unknown as number, tcpState: undefined }, true));
    expect(gone).toMatchObject({ client: { port: 40000 }, server: { address: '198.18.0.101' }, timeout: 0, tcpState: 0 });
  });
});

describe('appliance configuration: keepers, replication, failover', () => {
  const base = `appliance: lb1
api: { listen: "192.0.2.11:8441" }
interfaces: { external: ext0, internal: int0 }
vips: []
`;
  it('defaults: replication on with 50 ms / 1000-entry batches, failover from the copies on (standby)', () => {
    const c = parseApplianceConfig(base, 'lb1.yaml');
    expect(c.keepers).toEqual([]);
    expect(c.replication).toMatchObject({ enabled: true, batchIntervalMs: 50, batchEntries: 1000, refreshIntervalSeconds: 60 });
    expect(c.failover).toMatchObject({ standby: true, peers: [], peerTimeoutMs: 50 });
    // Also when the section is there without the key.
    expect(parseApplianceConfig(`${base}failover: { peerTimeoutMs: 20 }\n`, 'lb1.yaml').failover.standby).toBe(true);
    expect(parseApplianceConfig(`${base}failover: { standby: false }\n`, 'lb1.yaml').failover.standby).toBe(false);
  });

  it('warns when failover is turned off or has no copies to restore from, not on the defaults', () => {
    const keepers = 'keepers: [{ name: srv1, server: 198.18.0.101, api: "http://192.0.2.21:8442" }]\n';
    expect(failoverWarnings(parseApplianceConfig(`${base}${keepers}`, 'lb1.yaml'))).toEqual([]);
    expect(failoverWarnings(parseApplianceConfig(`${base}${keepers}failover: { standby: false }\n`, 'lb1.yaml'))[0]).toMatch(/standby is off.*resets every one/);
    expect(failoverWarnings(parseApplianceConfig(base, 'lb1.yaml'))[0]).toMatch(/without keepers/);
    expect(failoverWarnings(parseApplianceConfig(`${base}${keepers}replication: { enabled: false }\n`, 'lb1.yaml'))[0]).toMatch(/replication off/);
  });

  it('the image\'s example configuration parses, with failover from the copies on', () => {
    const file = 'firmware/config/appliance.example.yaml';
    const c = parseApplianceConfig(readFileSync(file, 'utf8'), file);
    expect(c.failover.standby).toBe(true);
    expect(c.keepers.length).toBeGreaterThan(0);
    expect(c.vrrp?.syncGroups.length).toBeGreaterThan(0);
  });

  it('names file, line and field of a wrong keeper or setting', () => {
    const text = `${base}keepers:
  - { name: srv1, server: 198.18.0.101, api: "http://192.0.2.21:8442" }
  - { name: srv2, server: 198.18.0.101, api: "ftp://x" }
replication: { batchIntervalMs: 0 }
`;
    expect(() => parseApplianceConfig(text, 'lb1.yaml')).toThrow(
      /lb1\.yaml:7: keepers\[1\]\.api: expected the keeper's API URL as http:\/\/ADDRESS:PORT[\s\S]*lb1\.yaml:7: keepers\[1\]\.server: server 198\.18\.0\.101 already used by keepers\[0\][\s\S]*lb1\.yaml:8: replication\.batchIntervalMs: expected a batch interval in 1\.\.10000 ms/,
    );
  });

  it('reads the durations under their old names, warning with file:line and the new name', () => {
    const warnings: string[] = [];
    const warn = (w: { file: string; line?: number; path: string; message: string }) => warnings.push(`${w.file}:${w.line}: ${w.path}: ${w.message}`);
    const c = parseApplianceConfig(`${base}replication:\n  batchInterval: 20\n  refreshInterval: 0\nfailover: { peerTimeout: 0 }\n`, 'lb1.yaml', { warn });
    expect(c.replication).toMatchObject({ batchIntervalMs: 20, refreshIntervalSeconds: 0 });
    expect(c.failover.peerTimeoutMs).toBe(0);
    expect(warnings).toEqual([
      "lb1.yaml:6: replication.batchInterval: 'batchInterval' is now 'batchIntervalMs' (read as 'batchIntervalMs' for this release)",
      "lb1.yaml:7: replication.refreshInterval: 'refreshInterval' is now 'refreshIntervalSeconds' (read as 'refreshIntervalSeconds' for this release)",
      "lb1.yaml:8: failover.peerTimeout: 'peerTimeout' is now 'peerTimeoutMs' (read as 'peerTimeoutMs' for this release)",
    ]);
    // A value under an old name that is wrong is reported at the old name's line, under the new name.
    expect(() => parseApplianceConfig(`${base}replication:\n  batchInterval: 0\n`, 'lb1.yaml', { warn })).toThrow(/^lb1\.yaml:6: replication\.batchIntervalMs: expected a batch interval in 1\.\.10000 ms$/);
  });

  it('names follow the key-id rule: a name that could not load its credentials is refused with the rule', () => {
    expect(() => parseApplianceConfig(base.replace('lb1', 'LB_1'), 'lb1.yaml')).toThrow(
      /^lb1\.yaml:1: appliance: expected the appliance's name as a key id: lower-case letters, digits and '-', starting with a letter, at most 32, got 'LB_1'$/,
    );
    const keepers = 'keepers: [{ name: Srv_1, server: 198.18.0.101, api: "http://192.0.2.21:8442" }]\n';
    expect(() => parseApplianceConfig(`${base}${keepers}`, 'lb1.yaml')).toThrow(/lb1\.yaml:5: keepers\[0\]\.name: expected a keeper's name as a key id/);
  });
});

describe('replication metrics', () => {
  it('mirror the replicator status with Prometheus names', async () => {
    const { Registry } = await import('prom-client');
    const { registerReplicationMetrics } = await import('../../src/replication/metrics.js');
    const registry = new Registry();
    const keeper = { name: 'srv1', server: '198.18.0.101', state: 'down' as const, backlog: 12, lagMs: { current: 1500, lastBatch: 60, max: 90 }, pushed: { batches: 3, upserts: 700, deletes: 5 }, failures: 2, dropped: 0, resyncs: 1, resyncPending: false };
    registerReplicationMetrics(registry, () => ({ enabled: true, vips: ['vip1'], events: { received: 10, copied: 7, ignored: 3, unrouted: 0, malformed: 0 }, overruns: 1, refreshes: 0, keepers: [keeper] }));
    const text = await registry.metrics();
    expect(text).toContain('vipshift_replication_keeper_up{keeper="srv1"} 0');
    expect(text).toContain('vipshift_replication_backlog{keeper="srv1"} 12');
    expect(text).toContain('vipshift_replication_lag_seconds{keeper="srv1"} 1.5');
    expect(text).toContain('vipshift_replication_copies_pushed_total{keeper="srv1"} 700');
    expect(text).toContain('vipshift_replication_events_total{outcome="copied"} 7');
    expect(text).toContain('vipshift_replication_event_overruns_total 1');
  });
});
