import { describe, expect, it } from 'vitest';
import { resolveCheck, checkSchema, checkOverrideSchema } from '../../src/config/check.js';
import { HealthMonitor, type HealthClock, type HealthTarget, type TransitionEvent } from '../../src/health/monitor.js';
import type { CheckTarget } from '../../src/health/checkers.js';
import type { CheckResult } from '../../src/health/state.js';

/** A clock whose time moves only when the test says; timers fire in time order. */
class FakeClock implements HealthClock {
  t = 0;
  private timers: { at: number; fire: () => void; seq: number }[] = [];
  private seq = 0;
  now(): number {
    return this.t;
  }
  setTimer(ms: number, fire: () => void) {
    const timer = { at: this.t + ms, fire, seq: this.seq++ };
    this.timers.push(timer);
    return { cancel: () => (this.timers = this.timers.filter((x) => x !== timer)) };
  }
  /** Advances to `until`, firing due timers and letting their promises settle. */
  async advance(until: number): Promise<void> {
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = this.timers[0];
      if (!next || next.at > until) break;
      this.timers.shift();
      this.t = next.at;
      next.fire();
      for (let i = 0; i < 10; i++) await Promise.resolve();
    }
    this.t = until;
  }
}

const tcp = resolveCheck(checkSchema.parse({ inter: 1000, timeout: 500, rise: 2, fall: 3 }));
const target = (address: string, vip = 'vip1'): HealthTarget => ({ vip, address, port: 80, check: tcp });

function setup(answer: (t: CheckTarget, at: number) => CheckResult | Promise<CheckResult>) {
  const clock = new FakeClock();
  const calls: { vip: string; address: string; up: boolean; reason: string; at: number }[] = [];
  const started: { address: string; at: number }[] = [];
  const transitions: TransitionEvent[] = [];
  let failSink = false;
  const monitor = new HealthMonitor({
    clock,
    random: () => 0.5,
    checker: async (t) => {
      started.push({ address: t.address, at: clock.now() });
      return answer(t, clock.now());
    },
    sink: {
      setBackendHealth: async (vip, b, up, reason) => {
        if (failSink) throw new Error('nft said no');
        calls.push({ vip, address: b.address, up, reason, at: clock.now() });
      },
    },
    onTransition: (e) => transitions.push(e),
  });
  return { clock, monitor, calls, started, transitions, setFailSink: (v: boolean) => (failSink = v) };
}

const ok = (): CheckResult => ({ outcome: 'pass', reason: 'connect ok', latencyMs: 1 });
const refused = (): CheckResult => ({ outcome: 'fail', reason: 'connect refused', latencyMs: 1 });

describe('health monitor', () => {
  it('spreads the first checks evenly over the interval, then keeps each at a fixed rate', async () => {
    const s = setup(ok);
    s.monitor.setTargets(['198.18.0.101', '198.18.0.102', '198.18.0.103', '198.18.0.104'].map((a) => target(a)));
    s.monitor.start();
    await s.clock.advance(2999);
    const firsts = s.started.slice(0, 4).map((c) => c.at);
    expect(firsts).toEqual([125, 375, 625, 875]);
    // Each backend every 1000 ms after its phase: 12 checks in 3 s, never two at one instant.
    expect(s.started).toHaveLength(12);
    expect(new Set(s.started.map((c) => c.at)).size).toBe(12);
    expect(s.calls).toEqual([]);
  });

  it('takes a failing backend out after fall checks and back after rise, with the reason', async () => {
    let dead = false;
    const s = setup((t) => (t.address === '198.18.0.102' && dead ? refused() : ok()));
    s.monitor.setTargets([target('198.18.0.101'), target('198.18.0.102')]);
    s.monitor.start();
    await s.clock.advance(5000);
    dead = true;
    const failedAt = s.clock.now();
    await s.clock.advance(10_000);
    expect(s.calls).toEqual([{ vip: 'vip1', address: '198.18.0.102', up: false, reason: '3 failed checks: connect refused', at: expect.any(Number) }]);
    expect(s.calls[0]!.at - failedAt).toBeLessThanOrEqual(3 * 1000);
    dead = false;
    const backAt = s.clock.now();
    await s.clock.advance(20_000);
    expect(s.calls[1]).toMatchObject({ address: '198.18.0.102', up: true, reason: '2 passed checks: connect ok' });
    expect(s.calls[1]!.at - backAt).toBeLessThanOrEqual(2 * 1000);
    expect(s.transitions.map((t) => `${t.address} ${t.from}->${t.to} ${t.applied}`)).toEqual(['198.18.0.102 up->down true', '198.18.0.102 down->up true']);
    expect(s.monitor.status().find((b) => b.address === '198.18.0.102')).toMatchObject({ state: 'up', transitions: 2, applied: true });
  });

  it('never runs two checks of one backend at once, and follows a late one at once', async () => {
    const s = setup(ok);
    let inFlight = 0;
    let most = 0;
    const slow = new HealthMonitor({
      clock: s.clock,
      random: () => 0,
      sink: { setBackendHealth: async () => undefined },
      checker: (t) => {
        inFlight++;
        most = Math.max(most, inFlight);
        s.started.push({ address: t.address, at: s.clock.now() });
        // Each check takes 2.5 intervals (a stalled machine).
        return new Promise((resolve) => s.clock.setTimer(2500, () => (inFlight--, resolve(ok()))));
      },
    });
    slow.setTargets([target('198.18.0.101')]);
    slow.start();
    await s.clock.advance(10_000);
    expect(most).toBe(1);
    expect(s.started.map((c) => c.at)).toEqual([0, 2500, 5000, 7500, 10_000]);
  });

  it('tries a pool change that failed again after the next check', async () => {
    const s = setup(refused);
    s.setFailSink(true);
    s.monitor.setTargets([target('198.18.0.101')]);
    s.monitor.start();
    await s.clock.advance(3000);
    expect(s.monitor.status()[0]).toMatchObject({ state: 'down', applied: false });
    expect(s.transitions).toMatchObject([{ to: 'down', applied: false }]);
    s.setFailSink(false);
    await s.clock.advance(4000);
    expect(s.calls).toHaveLength(1);
    expect(s.calls[0]).toMatchObject({ up: false });
    expect(s.monitor.status()[0]).toMatchObject({ state: 'down', applied: true });
  });

  it('keeps the state of unchanged backends across setTargets, and refuses an incomplete check', async () => {
    const s = setup(refused);
    s.monitor.setTargets([target('198.18.0.101')]);
    s.monitor.start();
    await s.clock.advance(4000);
    expect(s.monitor.stateOf('vip1', '198.18.0.101', 80)).toBe('down');
    const broken = resolveCheck(checkSchema.parse({}), checkOverrideSchema.parse({ type: 'script' }));
    expect(() => s.monitor.setTargets([target('198.18.0.101'), { ...target('198.18.0.109'), check: broken }])).toThrow(/198\.18\.0\.109:80: check command: is required/);
    s.monitor.setTargets([target('198.18.0.101'), target('198.18.0.102')]);
    expect(s.monitor.stateOf('vip1', '198.18.0.101', 80)).toBe('down');
    expect(s.monitor.stateOf('vip1', '198.18.0.102', 80)).toBe('up');
    s.monitor.setTargets([target('198.18.0.102')]);
    expect(s.monitor.stateOf('vip1', '198.18.0.101', 80)).toBeUndefined();
    const before = s.started.length;
    s.monitor.stop();
    await s.clock.advance(20_000);
    expect(s.started.length).toBe(before);
  });
});

describe('health metrics', () => {
  it('exports up, checks by result and transitions per backend', async () => {
    const { Registry } = await import('prom-client');
    const { registerHealthMetrics } = await import('../../src/health/metrics.js');
    const s = setup(refused);
    s.monitor.setTargets([target('198.18.0.101')]);
    s.monitor.start();
    await s.clock.advance(3500);
    const registry = new Registry();
    registerHealthMetrics(registry, 'lb1', () => s.monitor.status());
    const text = await registry.metrics();
    expect(text).toContain('vipshift_backend_up{appliance="lb1",vip="vip1",backend="198.18.0.101:80"} 0');
    expect(text).toContain('vipshift_backend_checks_total{appliance="lb1",vip="vip1",backend="198.18.0.101:80",result="fail"} 4');
    expect(text).toContain('vipshift_backend_checks_total{appliance="lb1",vip="vip1",backend="198.18.0.101:80",result="pass"} 0');
    expect(text).toContain('vipshift_backend_transitions_total{appliance="lb1",vip="vip1",backend="198.18.0.101:80"} 1');
  });
});
