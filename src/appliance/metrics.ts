/**
 * The appliance's metrics, read at scrape time from the same place as its status (nft
 * counters, the hold queue, a ct-mark count of the access table), so they agree with `nft
 * list counters` and `conntrack -L -m ID` by construction. One status per scrape.
 */
import type { Registry } from 'prom-client';
import { scrapedMetric } from '../metrics/metrics.js';
import type { ApplianceStatus, RefusedEntries, VipStatus } from './appliance.js';

const MODES = ['normal', 'migrating', 'absent'] as const;
const VRRP_STATES = ['initialize', 'backup', 'master', 'fault'] as const;

export function registerApplianceMetrics(registry: Registry, status: () => Promise<ApplianceStatus>): void {
  // The metrics of one scrape are collected one after another: share one status among them.
  let pending: Promise<ApplianceStatus> | undefined;
  let at = 0;
  const current = (): Promise<ApplianceStatus> => {
    if (!pending || performance.now() - at > 250) {
      at = performance.now();
      pending = status();
    }
    return pending;
  };
  /** One sample per VIP, labelled appliance and vip (nft counters, the hold queue, the ct-mark count). */
  const perVip = (kind: 'counter' | 'gauge', name: string, help: string, value: (v: VipStatus) => number) =>
    scrapedMetric(registry, kind, {
      name,
      help,
      labelNames: ['appliance', 'vip'],
      samples: async () => {
        const s = await current();
        return s.vips.map((v) => [{ appliance: s.appliance, vip: v.name }, value(v)] as const);
      },
    });

  perVip('counter', 'vipshift_vip_packets_total', "Packets of the VIP's connections forwarded by this appliance, both directions (nft counter traffic_VIP).", (v) => v.packets);
  perVip('counter', 'vipshift_vip_bytes_total', "Bytes of the VIP's connections forwarded by this appliance, both directions (nft counter traffic_VIP).", (v) => v.bytes);
  perVip('counter', 'vipshift_vip_rejected_total', 'Unknown accesses to the VIP answered with a TCP reset (nft counter rejected_VIP).', (v) => v.rejected);
  perVip('counter', 'vipshift_vip_synproxied_total', 'SYNs to the VIP answered by SYNPROXY with a SYN cookie (a SYN flood, or a rate above flood.synproxy.aboveRate): no entry made (nft counter synproxied_VIP).', (v) => v.synproxied);
  perVip('counter', 'vipshift_vip_new_limited_total', "New connections to the VIP dropped over its rate limit, flood.newConnectionsPerVip (nft counter limited_vip_VIP).", (v) => v.limitedVip);
  perVip('counter', 'vipshift_vip_source_limited_total', 'New connections to the VIP dropped because their client address had flood.connectionsPerSource already (nft counter limited_source_VIP).', (v) => v.limitedSource);
  perVip('gauge', 'vipshift_vip_entries', "Live access-table (conntrack) entries of the VIP on this appliance (its ct mark).", (v) => v.entries);
  perVip('gauge', 'vipshift_hold_queue_depth', 'Packets of the VIP held now, waiting for the end of its migration.', (v) => v.held);
  perVip('counter', 'vipshift_hold_released_total', 'Held packets of the VIP released in arrival order.', (v) => v.released);
  perVip('counter', 'vipshift_hold_overflowed_total', 'Packets of the VIP dropped because its hold queue was full.', (v) => v.overflowed);
  perVip('counter', 'vipshift_hold_dropped_total', 'Held packets of the VIP dropped by an abort or by the drop policy.', (v) => v.dropped);
  scrapedMetric(registry, 'gauge', {
    name: 'vipshift_vip_mode',
    help: "The VIP's entry in this appliance's mode table: 1 for its mode (normal, migrating; absent: not ours).",
    labelNames: ['appliance', 'vip', 'mode'],
    samples: async () => {
      const s = await current();
      return s.vips.flatMap((v) => MODES.map((mode) => [{ appliance: s.appliance, vip: v.name, mode }, v.mode === mode ? 1 : 0] as const));
    },
  });
  /** Per VRRP instance and state: 1 (or the transitions into it) for each of the four states. */
  const perState = (kind: 'counter' | 'gauge', name: string, help: string, label: 'state' | 'to', value: (i: ApplianceStatus['vrrp'][number], state: (typeof VRRP_STATES)[number]) => number) =>
    scrapedMetric(registry, kind, {
      name,
      help,
      labelNames: ['appliance', 'vrid', 'instance', label],
      samples: async () => {
        const s = await current();
        return (s.vrrp ?? []).flatMap((i) => VRRP_STATES.map((state) => [{ appliance: s.appliance, vrid: String(i.vrid), instance: i.name, [label]: state }, value(i, state)] as const));
      },
    });
  perState('gauge', 'vipshift_vrrp_state', 'VRRP state of each instance (RFC 5798): 1 for its state.', 'state', (i, state) => (i.state === state ? 1 : 0));
  perState('counter', 'vipshift_vrrp_transitions_total', 'VRRP state transitions of each instance, by the state entered.', 'to', (i, state) => i.transitions[state] ?? 0);
  /** One sample labelled appliance from a part of the status that may be absent (the mirror, the conntrack fill). */
  const ofStatus = <T>(part: (s: ApplianceStatus) => T | undefined) => (kind: 'counter' | 'gauge', name: string, help: string, value: (t: T) => number) =>
    scrapedMetric(registry, kind, {
      name,
      help,
      labelNames: ['appliance'],
      samples: async () => {
        const s = await current();
        const t = part(s);
        return t === undefined ? [] : [[{ appliance: s.appliance }, value(t)] as const];
      },
    });
  const mirror = ofStatus((s) => s.mirror);
  mirror('gauge', 'vipshift_access_table_mirror_synced', 'Whether the in-memory access table mirror holds every entry (1) or is rebuilding after lost events (0).', (m) => (m.synced ? 1 : 0));
  mirror('counter', 'vipshift_access_table_mirror_overruns_total', 'Conntrack event overruns (ENOBUFS) that made the mirror rebuild itself from a dump.', (m) => m.overruns);
  mirror('counter', 'vipshift_access_table_mirror_rebuild_waits_total', "Reads of a VIP's entries that came during a rebuild of the mirror and waited for it.", (m) => m.readersDuringRebuild.waited);
  mirror('counter', 'vipshift_access_table_mirror_rebuild_dumps_total', "Reads of a VIP's entries that came during a rebuild of the mirror and dumped the kernel's table instead (not allowed to wait that long: step 3 in the hold, a reset).", (m) => m.readersDuringRebuild.dumped);
  mirror('counter', 'vipshift_access_table_mirror_barrier_failures_total', 'Migration exports that fell back to a kernel dump because the mirror could not vouch for being complete.', (m) => m.barriers.failed);

  // The conntrack table's fill (table-watch.ts).
  const table = ofStatus((s) => s.conntrack);
  table('gauge', 'vipshift_conntrack_entries', "Entries in this appliance's conntrack table (all VIPs and anything else).", (t) => t.entries);
  table('gauge', 'vipshift_conntrack_max', 'The conntrack table size, nf_conntrack_max (set at boot from the memory).', (t) => t.max);
  table('gauge', 'vipshift_conntrack_headroom', 'Entries the conntrack table still has room for: nf_conntrack_max - entries.', (t) => t.headroom);
  table('gauge', 'vipshift_conntrack_full', 'Whether the conntrack table is full (1): new connections are refused, established ones go on.', (t) => (t.full ? 1 : 0));
  table('counter', 'vipshift_conntrack_refused_total', "New connections refused because the conntrack table was full (the kernel's drop counter).", (t) => t.refused);
  table('counter', 'vipshift_conntrack_early_dropped_total', 'Entries that never completed their handshake evicted to make room for a new one (early drop).', (t) => t.earlyDropped);
  table('counter', 'vipshift_conntrack_creates_failed_total', 'Entries a migration or takeover could not create on this appliance.', (t) => t.createsFailed);
}

/** Entry records refused at the boundary (appliance.ts installEntries), by origin, VIP and reason. */
export function registerRefusedEntriesMetrics(registry: Registry, appliance: string, refused: () => RefusedEntries[]): void {
  scrapedMetric(registry, 'counter', {
    name: 'vipshift_entries_refused_total',
    help: 'Entry records another member sent that do not belong to the VIP (its ct mark, address, port, a server of its pool, its inside address): not installed. kind: import (a migration), keeper or peer (a takeover); source: the member.',
    labelNames: ['appliance', 'kind', 'source', 'vip', 'reason'],
    samples: () => refused().map((r) => [{ appliance, kind: r.kind, source: r.source, vip: r.vip, reason: r.reason }, r.records] as const),
  });
}
