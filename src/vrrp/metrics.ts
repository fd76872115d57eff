/**
 * The speaker's counters and states as Prometheus metrics (prom-client), read at scrape time
 * from Speaker.state() and Speaker.counters(), so the receive path does no extra work.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { SpeakerControl } from './process.js';

const STATES = ['initialize', 'backup', 'master', 'fault'] as const;

export function registerVrrpMetrics(speaker: Pick<SpeakerControl, 'state' | 'counters'>, registry: Registry): void {
  new Gauge({
    name: 'vipshift_vrrp_state',
    help: 'VRRP state of each instance: 1 for the current state, 0 for the others',
    labelNames: ['instance', 'vrid', 'state'],
    registers: [registry],
    collect() {
      for (const i of speaker.state()) {
        for (const s of STATES) this.set({ instance: i.name, vrid: String(i.vrid), state: s }, i.state === s ? 1 : 0);
      }
    },
  });
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
    name: 'vipshift_vrrp_transitions_total',
    help: 'VRRP state transitions, by instance and the state entered',
    labelNames: ['instance', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const i of speaker.state()) for (const s of STATES) this.inc({ instance: i.name, state: s }, i.transitions[s]);
    },
  });
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
