/**
 * The speaker's counters as Prometheus metrics (prom-client), read at scrape time from
 * Speaker.state() and Speaker.counters(), so the receive path does no extra work.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { SpeakerControl } from './process.js';


/**
 * The speaker's own counters. Each instance's state and transitions are the appliance's
 * metrics already (src/appliance/metrics.ts, from the same status), so they are not repeated here.
 */
export function registerVrrpMetrics(speaker: Pick<SpeakerControl, 'state' | 'counters'>, registry: Registry): void {
  const perInstance = (name: string, help: string, pick: (i: ReturnType<SpeakerControl['state']>[number]) => number) =>
    new Counter({
      name,
      help,
      labelNames: ['instance'],
      registers: [registry],
      collect() {
        this.reset();
        for (const i of speaker.state()) this.inc({ instance: i.name }, pick(i));
      },
    });
  perInstance('vipshift_vrrp_adverts_sent_total', 'VRRP advertisements sent', (i) => i.advertsSent);
  perInstance('vipshift_vrrp_adverts_received_total', 'VRRP advertisements received and accepted', (i) => i.advertsReceived);
  new Counter({
    name: 'vipshift_vrrp_bad_adverts_total',
    help: 'Received VRRP advertisements dropped, by reason (RFC 5798 §7.1 checks)',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      this.reset();
      for (const [reason, n] of Object.entries(speaker.counters().badAdverts)) this.inc({ reason }, n ?? 0);
    },
  });
  new Counter({
    name: 'vipshift_vrrp_gratuitous_arps_sent_total',
    help: 'Gratuitous ARPs sent on becoming master',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(speaker.counters().garpsSent);
    },
  });
}

const BFD_STATES = ['AdminDown', 'Down', 'Init', 'Up'] as const;

/** BFD's sessions and counters (RFC 5880), read at scrape time from the speaker's last status. */
export function registerBfdMetrics(speaker: Pick<SpeakerControl, 'bfdStatus'>, registry: Registry): void {
  const sessions = () => speaker.bfdStatus()?.sessions ?? [];
  const perSession = (name: string, help: string, pick: (s: ReturnType<typeof sessions>[number]) => number) =>
    new Counter({
      name,
      help,
      labelNames: ['interface', 'peer'],
      registers: [registry],
      collect() {
        this.reset();
        for (const s of sessions()) this.inc({ interface: s.interface, peer: s.peer }, pick(s));
      },
    });
  new Gauge({
    name: 'vipshift_bfd_session_state',
    help: 'BFD session state per (interface, peer): 1 for the current state, 0 for the others',
    labelNames: ['interface', 'peer', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of sessions()) for (const state of BFD_STATES) this.set({ interface: s.interface, peer: s.peer, state }, s.state === state ? 1 : 0);
    },
  });
  new Gauge({
    name: 'vipshift_bfd_detection_time_seconds',
    help: 'BFD Detection Time in use per session (RFC 5880 §6.8.4)',
    labelNames: ['interface', 'peer'],
    registers: [registry],
    collect() {
      this.reset();
      for (const s of sessions()) this.set({ interface: s.interface, peer: s.peer }, s.detectionTimeMs / 1000);
    },
  });
  perSession('vipshift_bfd_session_ups_total', 'Times a BFD session came Up', (s) => s.ups);
  perSession('vipshift_bfd_session_downs_total', 'Times a BFD session went Down from Up', (s) => s.downs);
  perSession('vipshift_bfd_packets_sent_total', 'BFD Control packets sent', (s) => s.packetsSent);
  perSession('vipshift_bfd_packets_received_total', 'BFD Control packets received and accepted by the session', (s) => s.packetsReceived);
  new Counter({
    name: 'vipshift_bfd_packets_dropped_total',
    help: 'Received BFD Control packets dropped, by reason (RFC 5880 §6.8.6 checks; ttl: GTSM, RFC 5881 §5, dropped by the kernel)',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      this.reset();
      const c = speaker.bfdStatus()?.counters;
      for (const [reason, n] of Object.entries(c?.dropped ?? {})) this.inc({ reason }, n ?? 0);
      if (c?.gtsmDropped !== undefined) this.inc({ reason: 'ttl' }, c.gtsmDropped);
    },
  });
  new Counter({
    name: 'vipshift_bfd_takeovers_total',
    help: 'Backups that became master because BFD said the master was down and its adverts had stopped',
    registers: [registry],
    collect() {
      this.reset();
      this.inc(speaker.bfdStatus()?.counters.takeovers ?? 0);
    },
  });
  new Counter({
    name: 'vipshift_bfd_takeovers_suppressed_total',
    help: "BFD said a master was down while its adverts still arrived: no takeover (the two-signal rule)",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(speaker.bfdStatus()?.counters.suppressed ?? 0);
    },
  });
}
