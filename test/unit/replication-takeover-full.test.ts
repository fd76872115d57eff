/**
 * A takeover onto a standby whose conntrack table has no room for every copy: it installs what
 * fits, activates the VIP all the same (there is no owner left to give it back to) and says so —
 * in its report, in the log and in the takeover event's reason. The appliance is a fake behind
 * the TakeoverAppliance seam; the kernel's answer to a create without room is ENOMEM.
 */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import type { ApplianceConfig, VipConfig } from '../../src/config/appliance.js';
import type { CreateResult } from '../../src/netlink/conntrack.js';
import { RECORD_SIZE } from '../../src/netlink/entry-record.js';
import type { VipMode } from '../../src/nat/ruleset.js';
import { Takeover, type TakeoverAppliance, type TakeoverReport } from '../../src/replication/takeover.js';

const vip = { name: 'vip2', address: '203.0.113.11', backends: [{ address: '198.18.0.101' }] } as unknown as VipConfig;
const config = { vips: [vip], failover: { standby: true, peerTimeoutMs: 0, fetchTimeoutMs: 1000 } } as unknown as ApplianceConfig;

/** A standby holding vip2 whose table has room for `room` more entries. */
function standby(room: number) {
  const modes = new Map<string, VipMode>([['vip2', 'migrating']]);
  let installed = 0;
  const calls: string[] = [];
  const appliance: TakeoverAppliance = {
    config,
    vip: () => vip,
    prepare: async (name) => void modes.set(name, 'migrating'),
    activate: async (name) => {
      calls.push('activate');
      modes.set(name, 'normal');
      return { released: 3 };
    },
    deleteEntries: async () => void calls.push('deleteEntries'),
    dropPrecopy: async () => undefined,
    installEntries: async (_name, records): Promise<CreateResult & { refused: number }> => {
      const n = records.length / RECORD_SIZE;
      const fits = Math.max(0, Math.min(n, room - installed));
      installed += fits;
      const failures = Array.from({ length: n - fits }, (_, i) => ({ index: fits + i, errno: 12, code: 'ENOMEM' }));
      return { created: fits, existing: 0, failures, refused: 0 };
    },
  };
  return { appliance, modes, calls };
}

function takeover(room: number, copies: number) {
  const s = standby(room);
  const lines: { level: number; msg: string; notInstalled?: number }[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as (typeof lines)[number]) });
  const activated: TakeoverReport[] = [];
  const t = new Takeover({
    config,
    appliance: s.appliance,
    modes: () => s.modes,
    keepers: new Map([['198.18.0.101', { name: 'srv1', entries: async () => Buffer.alloc(copies * RECORD_SIZE) }]]),
    peers: [],
    logger,
    onActivated: (_vip, report) => activated.push(report),
  });
  return { t, ...s, lines, activated };
}

describe('takeover onto a full standby', () => {
  it('installs what fits, activates, and says how many connections were left out and why', async () => {
    const x = takeover(600, 1000);
    const report = await x.t.becameMaster('vip2');
    expect(report).toMatchObject({ outcome: 'activated', created: 600, failed: 400, released: 3 });
    expect(report.notInstalled).toEqual({ entries: 400, tableFull: true, reason: '400 of 1000 entries not installed (400 for a full conntrack table)' });
    expect(x.modes.get('vip2')).toBe('normal');
    // Nothing deleted: the connections that fit go on.
    expect(x.calls).toEqual(['activate']);
    const error = x.lines.find((l) => l.level === 50)!;
    expect(error.msg).toMatch(/^takeover of vip2: 400 of 1000 entries not installed \(400 for a full conntrack table\); activating with the rest/);
    expect(error.notInstalled).toBe(400);
    expect(x.activated[0]!.notInstalled?.tableFull).toBe(true);
  });

  it('with room for every copy, reports nothing left out and logs no error', async () => {
    const x = takeover(5000, 1000);
    const report = await x.t.becameMaster('vip2');
    expect(report).toMatchObject({ outcome: 'activated', created: 1000, failed: 0 });
    expect(report.notInstalled).toBeUndefined();
    expect(x.lines.filter((l) => l.level >= 50)).toEqual([]);
  });
});
