/**
 * BFD in the speaker, without root: a backup whose master is played by the test — adverts
 * into an in-memory link, and a real BfdSession on the same manual clock behind an in-memory
 * BFD transport. The two-signal rule: BFD's Down makes the backup take over only when the
 * master's adverts have stopped too.
 */
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { encodeAdvertisementFrame } from '../../src/vrrp/advert.js';
import type { AddressTable } from '../../src/vrrp/addresses.js';
import type { BfdSender, BfdTransport } from '../../src/vrrp/bfd-link.js';
import { decodeBfdControl, encodeBfdControl } from '../../src/vrrp/bfd-packet.js';
import { BfdSession } from '../../src/vrrp/bfd-session.js';
import { parseVrrpConfig, type VrrpConfigInput } from '../../src/config/vrrp.js';
import type { Link } from '../../src/kernel/pcap-link.js';
import { registerBfdMetrics } from '../../src/vrrp/metrics.js';
import { Speaker, type TransitionEvent } from '../../src/vrrp/speaker.js';
import { FakeClock } from '../support/vrrp-fake-clock.js';
import { prng } from '../support/prng.js';

const MASTER = '203.0.113.2';

class MemoryLink implements Link {
  private listener: ((frame: Buffer, at: number) => void) | undefined;
  constructor(readonly ifname: string) {}
  send(): void {}
  onFrame(listener: (frame: Buffer, at: number) => void): void {
    this.listener = listener;
  }
  deliver(frame: Buffer): void {
    this.listener?.(frame, Date.now());
  }
  close(): void {}
}

class MemoryBfd implements BfdTransport {
  receive: ((payload: Buffer, from: string) => void) | undefined;
  readonly opened: string[] = [];
  toPeer: (peer: string, payload: Buffer) => void = () => undefined;
  async start(receive: (payload: Buffer, from: string) => void): Promise<void> {
    this.receive = receive;
  }
  open(local: string, peer: string): BfdSender {
    this.opened.push(`${local}>${peer}`);
    return { send: (payload) => this.toPeer(peer, payload), close: () => undefined };
  }
  async gtsmDropped(): Promise<number | undefined> {
    return undefined;
  }
  async close(): Promise<void> {}
}

const addresses: AddressTable = { add: async () => undefined, remove: async () => undefined };
const vip1 = { name: 'vip1', interface: 'ext0', vrid: 10, priority: 100, advertIntervalSeconds: 0.1, addresses: ['203.0.113.10/24'], bfd: {} };

async function lab(vrrp: VrrpConfigInput = { instances: [vip1] }) {
  const clock = new FakeClock();
  const link = new MemoryLink('ext0');
  const bfd = new MemoryBfd();
  const s = new Speaker(parseVrrpConfig(vrrp), {
    addresses,
    clock,
    openLink: () => link,
    interfaceFacts: () => ({ mac: '02:00:00:00:00:03', addresses: ['203.0.113.3'], networks: ['203.0.113.3/24'] }),
    linkIsUp: () => true,
    bfdTransport: () => bfd,
  });
  const transitions: (TransitionEvent & { t: number })[] = [];
  s.on('transition', (e: TransitionEvent) => transitions.push({ ...e, t: clock.now() }));
  s.start();
  await new Promise((r) => setImmediate(r)); // the transport's start() resolves
  // The master: adverts every 100 ms and a BFD session at 50 ms × 3, each with a switch.
  const wire = { adverts: true, bfdToBackup: true, bfdToMaster: true };
  const master = new BfdSession({ minTxMs: 50, minRxMs: 50, multiplier: 3, localDiscriminator: 0x4d, random: prng(7) }, clock, (p) => {
    if (!wire.bfdToBackup) return;
    const bytes = encodeBfdControl(p);
    clock.setTimer(1, () => bfd.receive?.(bytes, MASTER));
  });
  bfd.toPeer = (peer, payload) => {
    if (peer !== MASTER || !wire.bfdToMaster) return;
    clock.setTimer(1, () => {
      const r = decodeBfdControl(payload);
      if (r.ok) master.receive(r.packet);
    });
  };
  master.start();
  const advert = encodeAdvertisementFrame({ vrid: 10, priority: 200, maxAdverInt: 10, addresses: ['203.0.113.10'] }, { source: MASTER });
  const advertise = () => {
    if (!wire.adverts) return;
    link.deliver(advert);
    clock.setTimer(100, advertise);
  };
  advertise();
  return { s, clock, link, bfd, wire, master, transitions };
}

describe('BFD in the VRRP speaker', () => {
  it('learns the master from its adverts, and takes over within BFD detection when the master dies', async () => {
    const t = await lab();
    t.clock.advance(5000);
    expect(t.s.state()[0]).toMatchObject({ state: 'backup', masterAddress: MASTER });
    expect(t.bfd.opened).toEqual([`203.0.113.3>${MASTER}`]);
    expect(t.s.bfdStatus()?.sessions[0]).toMatchObject({ interface: 'ext0', peer: MASTER, state: 'Up', passive: false, detectionTimeMs: 150 });
    // Power loss: adverts and BFD stop at once, 30 ms after an advert.
    t.clock.advance(30);
    const cut = t.clock.now();
    t.wire.adverts = t.wire.bfdToBackup = false;
    t.master.stop = () => undefined;
    t.clock.advance(400);
    const master = t.transitions.find((e) => e.to === 'master');
    expect(master?.reason).toBe('master down (bfd)');
    // BFD expires ≤ 150 ms after the master's last packet; Master_Down_Interval would be 361 ms.
    expect((master as { t: number }).t - cut).toBeLessThanOrEqual(151);
    expect(t.s.bfdStatus()?.counters).toMatchObject({ takeovers: 1, suppressed: 0 });
    const registry = new Registry();
    registerBfdMetrics({ bfdStatus: () => t.s.bfdStatus() }, registry);
    const text = await registry.metrics();
    expect(text).toContain(`vipshift_bfd_session_state{interface="ext0",peer="${MASTER}",state="Down"} 1`);
    expect(text).toContain(`vipshift_bfd_session_downs_total{interface="ext0",peer="${MASTER}"} 1`);
    expect(text).toContain('vipshift_bfd_takeovers_total 1');
    expect(text).toContain(`vipshift_bfd_detection_time_seconds{interface="ext0",peer="${MASTER}"} 0.15`);
  });

  it('does not take over when only BFD is lost while the adverts go on (two signals)', async () => {
    const t = await lab();
    t.clock.advance(5000);
    t.wire.bfdToBackup = false;
    t.clock.advance(3000);
    expect(t.s.state()[0]?.state).toBe('backup');
    expect(t.transitions.filter((e) => e.to === 'master')).toHaveLength(0);
    const status = t.s.bfdStatus();
    expect(status?.sessions[0]?.state).toBe('Down');
    expect(status?.sessions[0]?.diag).toBe(1);
    expect(status?.counters).toMatchObject({ takeovers: 0, suppressed: 1 });
    // …and when the master then dies for real, VRRP's own timer still takes over.
    t.wire.adverts = false;
    t.clock.advance(500);
    expect(t.transitions.find((e) => e.to === 'master')?.reason).toBe('master down');
  });

  it('a master that stops (AdminDown, priority 0) is left to VRRP: BFD does not take over', async () => {
    const t = await lab();
    t.clock.advance(5000);
    t.master.stop();
    t.clock.advance(30);
    expect(t.s.bfdStatus()?.sessions[0]).toMatchObject({ state: 'Down', diag: 3 });
    // Its adverts go on here: the session's Down is no reason to take over.
    t.clock.advance(2000);
    expect(t.s.state()[0]?.state).toBe('backup');
    expect(t.s.bfdStatus()?.counters.takeovers).toBe(0);
  });

  it('answers a backup it never heard adverts from by a passive session; strangers off the subnet are dropped', async () => {
    const t = await lab({ instances: [{ ...vip1, priority: 250 }] });
    t.clock.advance(1000); // priority 250 > 200: it preempts and is master
    expect(t.s.state()[0]?.state).toBe('master');
    const hello = encodeBfdControl({
      diag: 0, state: 'Down', poll: false, final: false, controlPlaneIndependent: false, demand: false, detectMult: 3,
      myDiscriminator: 77, yourDiscriminator: 0, desiredMinTxInterval: 1_000_000, requiredMinRxInterval: 50_000, requiredMinEchoRxInterval: 0,
    });
    t.bfd.receive?.(hello, '203.0.113.4');
    t.bfd.receive?.(hello, '192.0.2.99');
    const sessions = t.s.bfdStatus()?.sessions ?? [];
    expect(sessions.find((s) => s.peer === '203.0.113.4')).toMatchObject({ passive: true, state: 'Init', remoteDiscriminator: 77 });
    expect(sessions.find((s) => s.peer === '192.0.2.99')).toBeUndefined();
    expect(t.s.bfdStatus()?.counters.dropped).toEqual({ 'unknown-peer': 1 });
  });

  it('counts malformed BFD packets by reason and never throws (seeded fuzz through the receive path)', async () => {
    const t = await lab();
    t.clock.advance(3000);
    const random = prng(0xbfd);
    let n = 0;
    for (let i = 0; i < 5000; i++) {
      const b = Buffer.from(Array.from({ length: Math.floor(random() * 32) }, () => Math.floor(random() * 256)));
      t.bfd.receive?.(b, random() < 0.5 ? MASTER : '203.0.113.77');
      n++;
    }
    t.clock.advance(2000);
    const dropped = t.s.bfdStatus()?.counters.dropped ?? {};
    expect(Object.values(dropped).reduce((a, b) => a + (b ?? 0), 0)).toBeGreaterThan(n * 0.9);
    expect(t.s.state()[0]?.state).toBe('backup');
    expect(t.s.bfdStatus()?.sessions.find((s) => s.peer === MASTER)?.state).toBe('Up');
  });
});
