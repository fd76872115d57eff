/**
 * The appliance's metrics, read at scrape time from the same place as its status (nft
 * counters, the hold queue, a ct-mark count of the access table), so they agree with `nft
 * list counters` and `conntrack -L -m ID` by construction. One status per scrape.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { MirrorStatus } from '../nat/access-table-mirror.js';
import type { ApplianceStatus, RefusedEntries, VipStatus } from './appliance.js';
import type { TableStatus } from './table-watch.js';

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
  const each = async (set: (v: VipStatus, appliance: string) => void) => {
    const s = await current();
    for (const v of s.vips) set(v, s.appliance);
  };
  /** A counter whose value lives elsewhere (nft, the hold queue): set at scrape time. */
  const mirrored = (name: string, help: string, value: (v: VipStatus) => number) =>
    new Counter({
      name,
      help,
      labelNames: ['appliance', 'vip'],
      registers: [registry],
      async collect() {
        this.reset();
        await each((v, appliance) => this.inc({ appliance, vip: v.name }, value(v)));
      },
    });
  const gauge = (name: string, help: string, value: (v: VipStatus) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['appliance', 'vip'],
      registers: [registry],
      async collect() {
        this.reset();
        await each((v, appliance) => this.set({ appliance, vip: v.name }, value(v)));
      },
    });

  mirrored('vipshift_vip_packets_total', "Packets of the VIP's connections forwarded by this appliance, both directions (nft counter traffic_VIP).", (v) => v.packets);
  mirrored('vipshift_vip_bytes_total', "Bytes of the VIP's connections forwarded by this appliance, both directions (nft counter traffic_VIP).", (v) => v.bytes);
  mirrored('vipshift_vip_rejected_total', 'Unknown accesses to the VIP answered with a TCP reset (nft counter rejected_VIP).', (v) => v.rejected);
  mirrored('vipshift_vip_synproxied_total', 'SYNs to the VIP answered by SYNPROXY with a SYN cookie (a SYN flood, or a rate above flood.synproxy.aboveRate): no entry made (nft counter synproxied_VIP).', (v) => v.synproxied);
  mirrored('vipshift_vip_new_limited_total', "New connections to the VIP dropped over its rate limit, flood.newConnectionsPerVip (nft counter limited_vip_VIP).", (v) => v.limitedVip);
  mirrored('vipshift_vip_source_limited_total', 'New connections to the VIP dropped because their client address had flood.connectionsPerSource already (nft counter limited_source_VIP).', (v) => v.limitedSource);
  gauge('vipshift_vip_entries', "Live access-table (conntrack) entries of the VIP on this appliance (its ct mark).", (v) => v.entries);
  gauge('vipshift_hold_queue_depth', 'Packets of the VIP held now, waiting for the end of its migration.', (v) => v.held);
  mirrored('vipshift_hold_released_total', 'Held packets of the VIP released in arrival order.', (v) => v.released);
  mirrored('vipshift_hold_overflowed_total', 'Packets of the VIP dropped because its hold queue was full.', (v) => v.overflowed);
  mirrored('vipshift_hold_dropped_total', 'Held packets of the VIP dropped by an abort or by the drop policy.', (v) => v.dropped);
  new Gauge({
    name: 'vipshift_vip_mode',
    help: "The VIP's entry in this appliance's mode table: 1 for its mode (normal, migrating; absent: not ours).",
    labelNames: ['appliance', 'vip', 'mode'],
    registers: [registry],
    async collect() {
      this.reset();
      await each((v, appliance) => {
        for (const mode of MODES) this.set({ appliance, vip: v.name, mode }, v.mode === mode ? 1 : 0);
      });
    },
  });
  const instances = async (set: (i: ApplianceStatus['vrrp'][number], labels: { appliance: string; vrid: string; instance: string }) => void) => {
    const s = await current();
    for (const i of s.vrrp ?? []) set(i, { appliance: s.appliance, vrid: String(i.vrid), instance: i.name });
  };
  new Gauge({
    name: 'vipshift_vrrp_state',
    help: 'VRRP state of each instance (RFC 5798): 1 for its state.',
    labelNames: ['appliance', 'vrid', 'instance', 'state'],
    registers: [registry],
    async collect() {
      this.reset();
      await instances((i, l) => {
        for (const state of VRRP_STATES) this.set({ ...l, state }, i.state === state ? 1 : 0);
      });
    },
  });
  new Counter({
    name: 'vipshift_vrrp_transitions_total',
    help: 'VRRP state transitions of each instance, by the state entered.',
    labelNames: ['appliance', 'vrid', 'instance', 'to'],
    registers: [registry],
    async collect() {
      this.reset();
      await instances((i, l) => {
        for (const to of VRRP_STATES) this.inc({ ...l, to }, i.transitions[to] ?? 0);
      });
    },
  });
  const ofMirror = async (use: (m: MirrorStatus, labels: { appliance: string }) => void) => {
    const s = await current();
    if (s.mirror) use(s.mirror, { appliance: s.appliance });
  };
  new Gauge({
    name: 'vipshift_access_table_mirror_synced',
    help: 'Whether the in-memory access table mirror holds every entry (1) or is rebuilding after lost events (0).',
    labelNames: ['appliance'],
    registers: [registry],
    async collect() {
      this.reset();
      await ofMirror((m, l) => this.set(l, m.synced ? 1 : 0));
    },
  });
  const mirrorCounter = (name: string, help: string, value: (m: MirrorStatus) => number) =>
    new Counter({
      name,
      help,
      labelNames: ['appliance'],
      registers: [registry],
      async collect() {
        this.reset();
        await ofMirror((m, l) => this.inc(l, value(m)));
      },
    });
  mirrorCounter('vipshift_access_table_mirror_overruns_total', 'Conntrack event overruns (ENOBUFS) that made the mirror rebuild itself from a dump.', (m) => m.overruns);
  mirrorCounter('vipshift_access_table_mirror_barrier_failures_total', 'Migration exports that fell back to a kernel dump because the mirror could not vouch for being complete.', (m) => m.barriers.failed);

  // The conntrack table's fill (table-watch.ts).
  const table = (kind: 'gauge' | 'counter', name: string, help: string, value: (t: TableStatus) => number): void => {
    const Metric = kind === 'gauge' ? Gauge : Counter;
    new Metric({
      name,
      help,
      labelNames: ['appliance'],
      registers: [registry],
      async collect() {
        this.reset();
        const s = await current();
        if (!s.conntrack) return;
        if (this instanceof Gauge) this.set({ appliance: s.appliance }, value(s.conntrack));
        else (this as Counter).inc({ appliance: s.appliance }, value(s.conntrack));
      },
    });
  };
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
  new Counter({
    name: 'vipshift_entries_refused_total',
    help: 'Entry records another member sent that do not belong to the VIP (its ct mark, address, port, a server of its pool, its inside address): not installed. kind: import (a migration), keeper or peer (a takeover); source: the member.',
    labelNames: ['appliance', 'kind', 'source', 'vip', 'reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (const r of refused()) this.inc({ appliance, kind: r.kind, source: r.source, vip: r.vip, reason: r.reason }, r.records);
    },
  });
}
