/** The appliance's metrics read at scrape time from one status: per VIP, per VRRP instance, the mirror and the conntrack fill. */
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { registerApplianceMetrics } from '../../src/appliance/metrics.js';
import type { ApplianceStatus, VipStatus } from '../../src/appliance/appliance.js';

const vip = (name: string, mode: VipStatus['mode'], n: number): VipStatus =>
  ({ name, address: '203.0.113.10', mode, entries: n, backends: [], packets: 10 * n, bytes: 1000 * n, rejected: n, synproxied: 0, limitedVip: 0, limitedSource: 0, held: 0, released: n, overflowed: 0, dropped: 0, newConnections: 0, unavailable: 0 }) as VipStatus;

describe('appliance metrics', () => {
  it('exposes what the status says at each scrape, one status per scrape', async () => {
    let calls = 0;
    let status: ApplianceStatus = {
      appliance: 'lb1',
      vips: [vip('vip1', 'normal', 3), vip('vip2', 'migrating', 0)],
      vrrp: [{ name: 'vip1-ext', vrid: 10, state: 'master', transitions: { backup: 1, master: 1 } } as unknown as ApplianceStatus['vrrp'][number]],
      mirror: { synced: true, overruns: 2, readersDuringRebuild: { waited: 4, dumped: 1 }, barriers: { failed: 1 } } as unknown as NonNullable<ApplianceStatus['mirror']>,
    };
    const registry = new Registry();
    registerApplianceMetrics(registry, async () => {
      calls++;
      return status;
    });
    const text = await registry.metrics();
    expect(calls).toBe(1);
    expect(text).toMatch(/^vipshift_vip_packets_total\{appliance="lb1",vip="vip1"\} 30$/m);
    expect(text).toMatch(/^vipshift_vip_entries\{appliance="lb1",vip="vip1"\} 3$/m);
    expect(text).toMatch(/^vipshift_vip_mode\{appliance="lb1",vip="vip2",mode="migrating"\} 1$/m);
    expect(text).toMatch(/^vipshift_vip_mode\{appliance="lb1",vip="vip2",mode="normal"\} 0$/m);
    expect(text).toMatch(/^vipshift_vrrp_state\{appliance="lb1",vrid="10",instance="vip1-ext",state="master"\} 1$/m);
    expect(text).toMatch(/^vipshift_vrrp_transitions_total\{appliance="lb1",vrid="10",instance="vip1-ext",to="backup"\} 1$/m);
    expect(text).toMatch(/^vipshift_access_table_mirror_overruns_total\{appliance="lb1"\} 2$/m);
    expect(text).toMatch(/^vipshift_access_table_mirror_rebuild_waits_total\{appliance="lb1"\} 4$/m);
    expect(text).toMatch(/^vipshift_access_table_mirror_rebuild_dumps_total\{appliance="lb1"\} 1$/m);
    expect(text).not.toMatch(/^vipshift_conntrack_entries\{/m); // no table watch: no sample
    // A VIP gone from the status is gone from the metrics; a counter follows its source.
    await new Promise((r) => setTimeout(r, 300));
    status = { ...status, vips: [vip('vip1', 'normal', 5)], conntrack: { entries: 7, max: 100, headroom: 93, full: false, refused: 0, earlyDropped: 0, createsFailed: 0 } as NonNullable<ApplianceStatus['conntrack']> };
    const again = await registry.metrics();
    expect(again).toMatch(/^vipshift_vip_packets_total\{appliance="lb1",vip="vip1"\} 50$/m);
    expect(again).not.toMatch(/vip="vip2"/);
    expect(again).toMatch(/^vipshift_conntrack_headroom\{appliance="lb1"\} 93$/m);
  });
});
