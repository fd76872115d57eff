/**
 * A standby's takeover decisions without root: a fake appliance (mode table, hold, access
 * table) and fake entry sources (keepers, peers). Which VIPs are pre-armed, the order entries
 * are installed in, a dead peer bounded by peerTimeoutMs, a repeated call, and the deferred
 * deletion when another appliance becomes master.
 */
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { parseApplianceConfig } from '../../src/config/appliance.js';
import { RECORD_SIZE } from '../../src/netlink/entry-record.js';
import { Takeover, type EntrySource } from '../../src/replication/takeover.js';
import { FakeAppliance, lb2ConfigText } from '../support/fake-appliance.js';

const configText = (failover: string) => lb2ConfigText(failover);

const source = (name: string, records: number): EntrySource => ({ name, entries: async () => Buffer.alloc(records * RECORD_SIZE) });
/** A peer that never answers (a power loss): only the signal ends its wait. */
const deadPeer = (name: string): EntrySource => ({
  name,
  entries: (_vip, signal) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error('timed out')))),
});

function takeover(failover = '{}', peers: EntrySource[] = []) {
  const config = parseApplianceConfig(configText(failover), 'lb2.yaml');
  const appliance = new FakeAppliance(config, { released: 3, existing: 1 });
  const activated: string[] = [];
  const t = new Takeover({
    config,
    appliance,
    modes: () => appliance.modes,
    keepers: new Map([['198.18.0.101', source('srv1', 4)]]),
    peers,
    logger: pino({ level: 'silent' }),
    onActivated: (vip) => activated.push(vip),
  });
  return { t, appliance, activated };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('Takeover', () => {
  it('a standby pre-arms (holds) every VIP it does not serve; standby off arms none', async () => {
    const { t, appliance } = takeover();
    appliance.modes.set('vip2', 'normal');
    expect(await t.arm()).toEqual(['vip1']);
    expect(appliance.modes.get('vip1')).toBe('migrating');
    const off = takeover('{ standby: false }');
    expect(await off.t.arm()).toEqual([]);
  });

  it('installs the peers\' entries before the keepers\', then activates and says so', async () => {
    const { t, appliance, activated } = takeover('{ peerTimeoutMs: 200 }', [source('lb1', 2)]);
    await t.arm();
    const report = await t.becameMaster('vip1');
    expect(appliance.log).toEqual(['prepare vip1', 'prepare vip2', 'drop precopy vip1', 'install vip1 2 from peer lb1', 'install vip1 4 from keeper srv1', 'activate vip1']);
    expect(report).toMatchObject({ outcome: 'activated', created: 4, existing: 2, released: 3, peers: [{ name: 'lb1', records: 2 }], keepers: [{ name: 'srv1', records: 4 }] });
    expect(activated).toEqual(['vip1']);
    expect(t.reports()).toHaveLength(1);
  });

  it('goes on without a dead peer after peerTimeoutMs; peerTimeoutMs 0 asks no peer', async () => {
    const { t, appliance } = takeover('{ peerTimeoutMs: 30 }', [deadPeer('lb1')]);
    const report = await t.becameMaster('vip1');
    expect(report.peers).toEqual([expect.objectContaining({ name: 'lb1', error: 'timed out' })]);
    expect(report.peers[0]!.ms).toBeGreaterThanOrEqual(25);
    expect(appliance.log.filter((l) => l.startsWith('install'))).toEqual(['install vip1 4 from keeper srv1']);
    const none = takeover('{ peerTimeoutMs: 0 }', [deadPeer('lb1')]);
    expect((await none.t.becameMaster('vip1')).peers).toEqual([]);
  });

  it('a repeated call joins the running takeover; a VIP already normal is left alone', async () => {
    const { t, appliance } = takeover();
    const [a, b] = [t.becameMaster('vip1'), t.becameMaster('vip1')];
    expect(a).toBe(b);
    await a;
    expect(appliance.log.filter((l) => l.startsWith('activate'))).toHaveLength(1);
    expect((await t.becameMaster('vip1')).outcome).toBe('already normal');
  });

  it('another master: held again at once, our entries deleted only after the grace (4 × peerTimeoutMs, at least 2 s)', async () => {
    vi.useFakeTimers();
    const { t, appliance } = takeover('{ peerTimeoutMs: 0 }');
    appliance.modes.set('vip1', 'normal');
    await t.becameBackup('vip1');
    expect(appliance.modes.get('vip1')).toBe('migrating');
    await vi.advanceTimersByTimeAsync(1999);
    expect(appliance.log).toEqual(['prepare vip1']);
    await vi.advanceTimersByTimeAsync(1);
    expect(appliance.log).toEqual(['prepare vip1', 'delete vip1']);
    // Master here again within the grace: the entries are live, nothing is deleted.
    await t.becameBackup('vip1'); // not normal: nothing to do
    appliance.modes.set('vip1', 'normal');
    await t.becameBackup('vip1');
    appliance.modes.set('vip1', 'normal');
    await vi.advanceTimersByTimeAsync(5000);
    expect(appliance.log.filter((l) => l === 'delete vip1')).toHaveLength(1);
    t.stop();
  });
});
