/**
 * The BFD session state machine (RFC 5880 §6.2, §6.8) on a manual clock: two sessions joined
 * by an in-memory wire with a 1 ms delay that a test can cut, every packet going through the
 * codec as it would on the network.
 */
import { describe, expect, it } from 'vitest';
import { BfdDiag, decodeBfdControl, encodeBfdControl, type BfdControlPacket } from '../../src/vrrp/bfd-packet.js';
import { BfdSession, type BfdStateChange } from '../../src/vrrp/bfd-session.js';
import { FakeClock } from '../support/vrrp-fake-clock.js';
import { prng } from '../support/prng.js';

interface Sent {
  at: number;
  packet: BfdControlPacket;
}

function pair(options: { passiveB?: boolean; timers?: { minTxMs: number; minRxMs: number; multiplier: number } } = {}) {
  const clock = new FakeClock();
  const timers = options.timers ?? { minTxMs: 50, minRxMs: 50, multiplier: 3 };
  const wire = { aToB: true, bToA: true };
  const sent: { a: Sent[]; b: Sent[] } = { a: [], b: [] };
  const changes: { a: (BfdStateChange & { at: number })[]; b: (BfdStateChange & { at: number })[] } = { a: [], b: [] };
  const sessions: { a?: BfdSession; b?: BfdSession } = {};
  const carry = (from: 'a' | 'b', to: 'a' | 'b', open: () => boolean) => (packet: BfdControlPacket) => {
    sent[from].push({ at: clock.now(), packet });
    if (!open()) return;
    const bytes = encodeBfdControl(packet);
    clock.setTimer(1, () => {
      const r = decodeBfdControl(bytes);
      if (!r.ok) throw new Error(`the session sent a packet its peer discards: ${r.reason}`);
      sessions[to]?.receive(r.packet);
    });
  };
  sessions.a = new BfdSession({ ...timers, localDiscriminator: 0x1111, random: prng(1) }, clock, carry('a', 'b', () => wire.aToB), (c) => changes.a.push({ ...c, at: clock.now() }));
  sessions.b = new BfdSession({ ...timers, localDiscriminator: 0x2222, random: prng(2), passive: options.passiveB ?? false }, clock, carry('b', 'a', () => wire.bToA), (c) =>
    changes.b.push({ ...c, at: clock.now() }),
  );
  return { clock, wire, sent, changes, a: sessions.a, b: sessions.b };
}

describe('BFD session', () => {
  it('comes Up by the three-way handshake at the slow rate, then polls down to the configured rate', () => {
    const t = pair();
    t.a.start();
    t.b.start();
    // Before Up: one packet a second at most (§6.8.3), jittered to 75–100 % (§6.8.7).
    t.clock.advance(4000);
    expect(t.a.state).toBe('Up');
    expect(t.b.state).toBe('Up');
    expect(t.sent.a[0]?.at).toBeGreaterThanOrEqual(750);
    // Whoever hears Down goes to Init; whoever hears Init goes straight to Up.
    expect([['Init', 'Up'], ['Up']]).toContainEqual(t.changes.a.map((c) => c.to));
    expect([['Init', 'Up'], ['Up']]).toContainEqual(t.changes.b.map((c) => c.to));
    const slow = t.sent.a.filter((s) => s.packet.state !== 'Up' && !s.packet.final);
    for (const s of slow) expect(s.packet.desiredMinTxInterval).toBe(1_000_000);
    for (let i = 1; i < slow.length; i++) {
      const gap = (slow[i] as Sent).at - (slow[i - 1] as Sent).at;
      expect(gap).toBeGreaterThanOrEqual(750);
      expect(gap).toBeLessThanOrEqual(1000);
    }
    // The Poll Sequence: the first Up packet of each side polls with the new 50 ms, the other
    // answers with a Final, and the polling stops.
    const upA = t.sent.a.filter((s) => s.packet.state === 'Up');
    expect(upA[0]?.packet).toMatchObject({ poll: true, final: false, desiredMinTxInterval: 50_000, yourDiscriminator: 0x2222 });
    expect(t.sent.b.some((s) => s.packet.final && s.packet.state === 'Up')).toBe(true);
    expect(upA.at(-1)?.packet.poll).toBe(false);
    expect(t.a.status()).toMatchObject({ state: 'Up', remoteState: 'Up', txIntervalMs: 50, detectionTimeMs: 150, pollActive: false, remoteDiscriminator: 0x2222 });
    // Fast and jittered now: over one second, 20–27 packets.
    const before = t.sent.a.length;
    t.clock.advance(1000);
    const fast = t.sent.a.slice(before);
    expect(fast.length).toBeGreaterThanOrEqual(20);
    expect(fast.length).toBeLessThanOrEqual(27);
    for (let i = 1; i < fast.length; i++) {
      const gap = (fast[i] as Sent).at - (fast[i - 1] as Sent).at;
      expect(gap).toBeGreaterThanOrEqual(37.5);
      expect(gap).toBeLessThanOrEqual(50);
    }
  });

  it('declares the remote system down with Diag 1 one Detection Time after its last packet, and the remote hears Down', () => {
    const t = pair();
    t.a.start();
    t.b.start();
    t.clock.advance(5000);
    expect(t.b.state).toBe('Up');
    t.wire.aToB = false;
    const lastHeard = (t.sent.a.at(-1) as Sent).at + 1;
    t.clock.advance(500);
    const down = t.changes.b.find((c) => c.to === 'Down');
    expect(down).toMatchObject({ from: 'Up', diag: BfdDiag.ControlDetectionTimeExpired });
    // Detection Time = remote Detect Mult (3) × max(our Required Min RX, its Desired Min TX) = 150 ms.
    expect((down as { at: number }).at - lastHeard).toBeCloseTo(150, 6);
    expect(t.b.status()).toMatchObject({ state: 'Down', diag: 1, downs: 1, remoteDiscriminator: 0 });
    // b goes back to one packet a second and tells a it is Down: a follows with Diag 3.
    expect(t.a.state).toBe('Down');
    expect(t.changes.a.at(-1)).toMatchObject({ from: 'Up', to: 'Down', diag: BfdDiag.NeighborSignaledSessionDown });
    expect(t.b.status().txIntervalMs).toBe(1000);
    // The wire comes back: Up again by the handshake.
    t.wire.aToB = true;
    t.clock.advance(4000);
    expect(t.a.state).toBe('Up');
    expect(t.b.state).toBe('Up');
    expect(t.b.status().ups).toBe(2);
  });

  it('a remote system that stops says AdminDown: the session goes Down with Diag 3, not a detection expiry', () => {
    const t = pair();
    t.a.start();
    t.b.start();
    t.clock.advance(5000);
    t.a.stop();
    expect(t.a.state).toBe('AdminDown');
    expect(t.sent.a.at(-1)?.packet).toMatchObject({ state: 'AdminDown', diag: BfdDiag.AdministrativelyDown });
    t.clock.advance(10);
    expect(t.changes.b.at(-1)).toMatchObject({ from: 'Up', to: 'Down', diag: BfdDiag.NeighborSignaledSessionDown });
    const sentBy = t.sent.a.length;
    t.clock.advance(5000);
    expect(t.sent.a.length).toBe(sentBy); // a stopped sending
    expect(t.b.status().downs).toBe(1);
  });

  it('a passive session whose peer vanished goes quiet: no timer re-armed at 0 ms', () => {
    const t = pair({ passiveB: true });
    let armed = 0;
    const setTimer = t.clock.setTimer.bind(t.clock);
    t.clock.setTimer = (ms, fire) => {
      if (++armed > 100_000) throw new Error('timers re-armed without end');
      return setTimer(ms, fire);
    };
    t.a.start();
    t.b.start();
    t.clock.advance(4000);
    expect(t.b.state).toBe('Up');
    t.wire.aToB = t.wire.bToA = false;
    t.a.stop();
    t.clock.advance(1000);
    expect(t.b.state).toBe('Down');
    const [sentBefore, armedBefore] = [t.sent.b.length, armed];
    t.clock.advance(60_000);
    // Nothing is sent to nobody, and a minute costs no timer at all (it was ~770 arms a second).
    expect(t.sent.b.length).toBe(sentBefore);
    expect(armed - armedBefore).toBeLessThan(10);
    // The peer back: the passive session answers and comes Up again.
    t.wire.aToB = t.wire.bToA = true;
    t.a.start();
    t.clock.advance(4000);
    expect(t.b.state).toBe('Up');
    expect(t.a.state).toBe('Up');
  });

  it('a passive session sends nothing until it is heard from, then answers', () => {
    const t = pair({ passiveB: true });
    t.b.start();
    t.clock.advance(5000);
    expect(t.sent.b).toHaveLength(0);
    t.a.start();
    t.clock.advance(4000);
    expect(t.a.state).toBe('Up');
    expect(t.b.state).toBe('Up');
  });

  it('answers a Poll at once with a Final, outside the transmit timer', () => {
    const t = pair({ timers: { minTxMs: 1000, minRxMs: 1000, multiplier: 3 } });
    t.a.start();
    t.b.start();
    t.clock.advance(5000);
    expect(t.a.state).toBe('Up');
    // At 1 s timers nothing changes on Up: no Poll was needed.
    expect(t.sent.a.some((s) => s.packet.poll)).toBe(false);
    const at = t.clock.now();
    t.b.receive({ ...(t.sent.a.at(-1) as Sent).packet, poll: true, myDiscriminator: 0x1111, yourDiscriminator: 0x2222 });
    expect(t.sent.b.at(-1)).toMatchObject({ at, packet: { final: true, poll: false, state: 'Up' } });
  });

  it('drops a packet whose Your Discriminator is not ours', () => {
    const t = pair();
    t.a.start();
    t.b.start();
    t.clock.advance(5000);
    const received = t.b.status().packetsReceived;
    t.b.receive({ ...(t.sent.a.at(-1) as Sent).packet, state: 'AdminDown', yourDiscriminator: 0x9999 });
    expect(t.b.state).toBe('Up');
    expect(t.b.status().packetsReceived).toBe(received);
  });
});
