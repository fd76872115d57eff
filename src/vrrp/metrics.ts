/**
 * The speaker's counters as Prometheus metrics (prom-client), read at scrape time from
 * Speaker.state() and Speaker.counters(), so the receive path does no extra work.
 */
import type { Registry } from 'prom-client';
import { scrapedMetric } from '../metrics/metrics.js';
import type { SpeakerControl } from './process.js';

/**
 * The speaker's own counters. Each instance's state and transitions are the appliance's
 * metrics already (src/appliance/metrics.ts, from the same status), so they are not repeated here.
 */
export function registerVrrpMetrics(speaker: Pick<SpeakerControl, 'state' | 'counters'>, registry: Registry): void {
  const perInstance = (name: string, help: string, pick: (i: ReturnType<SpeakerControl['state']>[number]) => number) =>
    scrapedMetric(registry, 'counter', { name, help, labelNames: ['instance'], samples: () => speaker.state().map((i) => [{ instance: i.name }, pick(i)] as const) });
  perInstance('vipshift_vrrp_adverts_sent_total', 'VRRP advertisements sent', (i) => i.advertsSent);
  perInstance('vipshift_vrrp_adverts_received_total', 'VRRP advertisements received and accepted', (i) => i.advertsReceived);
  scrapedMetric(registry, 'counter', {
    name: 'vipshift_vrrp_bad_adverts_total',
    help: 'Received VRRP advertisements dropped, by reason (RFC 5798 §7.1 checks)',
    labelNames: ['reason'],
    samples: () => Object.entries(speaker.counters().badAdverts).map(([reason, n]) => [{ reason }, n ?? 0] as const),
  });
  scrapedMetric(registry, 'counter', { name: 'vipshift_vrrp_gratuitous_arps_sent_total', help: 'Gratuitous ARPs sent on becoming master', samples: () => [[{}, speaker.counters().garpsSent]] });
}

const BFD_STATES = ['AdminDown', 'Down', 'Init', 'Up'] as const;

/** BFD's sessions and counters (RFC 5880), read at scrape time from the speaker's last status. */
export function registerBfdMetrics(speaker: Pick<SpeakerControl, 'bfdStatus'>, registry: Registry): void {
  const sessions = () => speaker.bfdStatus()?.sessions ?? [];
  type Session = ReturnType<typeof sessions>[number];
  const perSession = (kind: 'counter' | 'gauge', name: string, help: string, pick: (s: Session) => number) =>
    scrapedMetric(registry, kind, { name, help, labelNames: ['interface', 'peer'], samples: () => sessions().map((s) => [{ interface: s.interface, peer: s.peer }, pick(s)] as const) });
  const counters = () => speaker.bfdStatus()?.counters;
  scrapedMetric(registry, 'gauge', {
    name: 'vipshift_bfd_session_state',
    help: 'BFD session state per (interface, peer): 1 for the current state, 0 for the others',
    labelNames: ['interface', 'peer', 'state'],
    samples: () => sessions().flatMap((s) => BFD_STATES.map((state) => [{ interface: s.interface, peer: s.peer, state }, s.state === state ? 1 : 0] as const)),
  });
  perSession('gauge', 'vipshift_bfd_detection_time_seconds', 'BFD Detection Time in use per session (RFC 5880 §6.8.4)', (s) => s.detectionTimeMs / 1000);
  perSession('counter', 'vipshift_bfd_session_ups_total', 'Times a BFD session came Up', (s) => s.ups);
  perSession('counter', 'vipshift_bfd_session_downs_total', 'Times a BFD session went Down from Up', (s) => s.downs);
  perSession('counter', 'vipshift_bfd_packets_sent_total', 'BFD Control packets sent', (s) => s.packetsSent);
  perSession('counter', 'vipshift_bfd_packets_received_total', 'BFD Control packets received and accepted by the session', (s) => s.packetsReceived);
  scrapedMetric(registry, 'counter', {
    name: 'vipshift_bfd_packets_dropped_total',
    help: 'Received BFD Control packets dropped, by reason (RFC 5880 §6.8.6 checks; ttl: GTSM, RFC 5881 §5, dropped by the kernel)',
    labelNames: ['reason'],
    samples: () => {
      const c = counters();
      const dropped = Object.entries(c?.dropped ?? {}).map(([reason, n]) => [{ reason }, n ?? 0] as const);
      return c?.gtsmDropped === undefined ? dropped : [...dropped, [{ reason: 'ttl' }, c.gtsmDropped] as const];
    },
  });
  scrapedMetric(registry, 'counter', {
    name: 'vipshift_bfd_takeovers_total',
    help: 'Backups that became master because BFD said the master was down and its adverts had stopped',
    samples: () => [[{}, counters()?.takeovers ?? 0]],
  });
  scrapedMetric(registry, 'counter', {
    name: 'vipshift_bfd_takeovers_suppressed_total',
    help: "BFD said a master was down while its adverts still arrived: no takeover (the two-signal rule)",
    samples: () => [[{}, counters()?.suppressed ?? 0]],
  });
}
