import { describe, expect, it } from 'vitest';
import { VirtualRouter, type Action, type VirtualRouterParams } from '../../src/vrrp/state-machine.js';
import { SyncGroup } from '../../src/vrrp/sync-group.js';
import { FakeClock } from '../support/vrrp-fake-clock.js';

function router(over: Partial<VirtualRouterParams> = {}, clock = new FakeClock()) {
  const actions: { at: number; action: Action }[] = [];
  const r = new VirtualRouter(
    { vrid: 51, priority: 100, advertInterval: 100, preempt: true, preemptDelay: 0, primaryAddress: '203.0.113.3', ...over },
    clock,
    (action) => actions.push({ at: clock.now(), action }),
  );
  const sent = () => actions.filter((a) => a.action.type === 'send-advert');
  const types = () => actions.map((a) => a.action.type);
  return { r, clock, actions, sent, types };
}

/** A master elsewhere advertising every `interval` cs for `count` intervals. */
function advertise(t: ReturnType<typeof router>, count: number, priority = 200, interval = 100, source = '203.0.113.2') {
  for (let i = 0; i < count; i++) {
    t.r.receive({ priority, maxAdverInt: interval, source });
    t.clock.advance(interval * 10);
  }
}

describe('VRRP state machine (RFC 5798 §6.4)', () => {
  it('computes Skew_Time and Master_Down_Interval as §6.1 says', () => {
    const { r } = router({ priority: 100, advertInterval: 100 });
    expect(r.skewTime).toBeCloseTo(((256 - 100) * 100 * 10) / 256, 9); // 609.375 ms
    expect(r.masterDownInterval).toBeCloseTo(3000 + 609.375, 9);
  });

  it('VRRPv2: Skew_Time is (256 − Priority)/256 seconds whatever the interval (RFC 3768 §6.1)', () => {
    const { r } = router({ priority: 100, advertInterval: 300, version: 2 });
    expect(r.skewTime).toBeCloseTo(609.375, 9);
    expect(r.masterDownInterval).toBeCloseTo(9000 + 609.375, 9);
    const t = router({ priority: 200, advertInterval: 100, version: 2 });
    t.r.startup();
    t.clock.advance(3218);
    expect(t.r.state).toBe('backup');
    t.clock.advance(1);
    expect(t.r.state).toBe('master');
  });

  it('starts as Backup and becomes Master after Master_Down_Interval with no master around', () => {
    const t = router();
    t.r.startup();
    expect(t.r.state).toBe('backup');
    t.clock.advance(3609);
    expect(t.r.state).toBe('backup');
    t.clock.advance(1);
    expect(t.r.state).toBe('master');
    expect(t.types()).toEqual(['transition', 'transition', 'send-advert', 'add-addresses', 'send-garp']);
    t.clock.advance(1000);
    expect(t.sent().map((a) => a.at)).toEqual([3609.375, 4609.375]);
  });

  it('the address owner (priority 255) starts as Master at once', () => {
    const t = router({ priority: 255 });
    t.r.startup();
    expect(t.r.state).toBe('master');
    expect(t.sent()[0]?.action).toEqual({ type: 'send-advert', priority: 255 });
  });

  it('stays Backup while a higher-priority master advertises (no split brain over 20 adverts)', () => {
    const t = router();
    t.r.startup();
    advertise(t, 20);
    expect(t.r.state).toBe('backup');
    expect(t.sent()).toHaveLength(0);
    expect(t.r.masterAddress).toBe('203.0.113.2');
  });

  it('learns Master_Adver_Interval from the master and goes Master after 3 of its intervals + skew', () => {
    const t = router({ advertInterval: 100 });
    t.r.startup();
    advertise(t, 5, 200, 10); // master advertises every 100 ms
    expect(t.r.learnedMasterAdverInterval).toBe(10);
    const lastAdvertAt = t.clock.now() - 100;
    t.clock.advance(1000);
    const became = t.actions.find((a) => a.action.type === 'transition' && a.action.to === 'master');
    expect(became?.at).toBeCloseTo(lastAdvertAt + 300 + (156 * 10 * 10) / 256, 9);
  });

  it('runs Master_Down_Timer from when the advert arrived, not from when it was processed', () => {
    const t = router();
    t.r.startup();
    t.clock.advance(1000);
    t.r.receive({ priority: 200, maxAdverInt: 100, source: '203.0.113.2', receivedAt: 1000 - 30 }); // handled 30 ms late
    t.clock.advance(3609.375 - 30 - 1);
    expect(t.r.state).toBe('backup');
    t.clock.advance(1);
    expect(t.r.state).toBe('master');
  });

  it('on priority 0 from the master takes over after Skew_Time (§6.4.2)', () => {
    const t = router();
    t.r.startup();
    advertise(t, 3);
    const releasedAt = t.clock.now();
    t.r.receive({ priority: 0, maxAdverInt: 100, source: '203.0.113.2' });
    t.clock.advance(609);
    expect(t.r.state).toBe('backup');
    t.clock.advance(1);
    expect(t.r.state).toBe('master');
    expect(t.sent()[0]?.at).toBeCloseTo(releasedAt + 609.375, 9);
  });

  it('preempts a lower-priority master when preempt is on, not when it is off', () => {
    const on = router({ priority: 200 });
    on.r.startup();
    advertise(on, 10, 100);
    expect(on.r.state).toBe('master');
    const off = router({ priority: 200, preempt: false });
    off.r.startup();
    advertise(off, 10, 100);
    expect(off.r.state).toBe('backup');
  });

  it('waits preemptDelay before preempting a lower-priority master', () => {
    const t = router({ priority: 200, preemptDelay: 5000 });
    t.r.startup();
    advertise(t, 5, 100); // 5 s of a lower master: still within the delay
    expect(t.r.state).toBe('backup');
    advertise(t, 4, 100);
    const became = t.actions.find((a) => a.action.type === 'transition' && a.action.to === 'master');
    // The last advert accepted is the one at 4 s (within 5 s), Master_Down_Interval later it preempts.
    expect(became?.at).toBeCloseTo(4000 + 3000 + (56 * 1000) / 256, 6);
  });

  it('as Master yields to a higher priority and removes the addresses', () => {
    const t = router({ priority: 255 });
    t.r.startup();
    const higher = router({ priority: 100 });
    higher.r.startup();
    higher.clock.advance(4000);
    expect(higher.r.state).toBe('master');
    higher.r.receive({ priority: 150, maxAdverInt: 100, source: '203.0.113.9' });
    expect(higher.r.state).toBe('backup');
    expect(higher.types().slice(-2)).toEqual(['remove-addresses', 'transition']);
    // And stays backup under it.
    advertise(higher, 10, 150, 100, '203.0.113.9');
    expect(higher.r.state).toBe('backup');
    expect(t.r.state).toBe('master');
  });

  it('breaks a priority tie by the higher primary address (§6.4.3)', () => {
    const t = router({ primaryAddress: '203.0.113.3' });
    t.r.startup();
    t.clock.advance(4000);
    t.r.receive({ priority: 100, maxAdverInt: 100, source: '203.0.113.2' }); // lower address: ignored
    expect(t.r.state).toBe('master');
    t.r.receive({ priority: 100, maxAdverInt: 100, source: '203.0.113.20' }); // higher: yield
    expect(t.r.state).toBe('backup');
  });

  it('as Master answers a priority-0 advert with an advert at once', () => {
    const t = router();
    t.r.startup();
    t.clock.advance(3700);
    const before = t.sent().length;
    t.r.receive({ priority: 0, maxAdverInt: 100, source: '203.0.113.9' });
    expect(t.sent().length).toBe(before + 1);
    expect(t.sent().at(-1)?.at).toBe(3700);
  });

  it('shutdown as Master sends priority 0 and removes the addresses', () => {
    const t = router();
    t.r.startup();
    t.clock.advance(4000);
    t.r.shutdown();
    expect(t.r.state).toBe('initialize');
    expect(t.actions.slice(-3).map((a) => a.action)).toEqual([
      { type: 'send-advert', priority: 0 },
      { type: 'remove-addresses' },
      { type: 'transition', from: 'master', to: 'initialize', reason: 'shutdown' },
    ]);
    t.clock.advance(10_000);
    expect(t.r.state).toBe('initialize');
  });

  it('release: priority 0, addresses removed, stays Backup under a lower master until claim', () => {
    const t = router({ priority: 200 });
    t.r.startup();
    t.clock.advance(4000);
    expect(t.r.state).toBe('master');
    t.r.release();
    expect(t.r.state).toBe('backup');
    expect(t.actions.slice(-3).map((a) => a.action.type)).toEqual(['send-advert', 'remove-addresses', 'transition']);
    expect(t.sent().at(-1)?.action).toEqual({ type: 'send-advert', priority: 0 });
    advertise(t, 10, 100); // the peer (lower priority) took over: no preemption back
    expect(t.r.state).toBe('backup');
    t.r.claim();
    expect(t.r.state).toBe('master');
  });

  it('a released router still takes over when the new master goes silent', () => {
    const t = router({ priority: 200 });
    t.r.startup();
    t.clock.advance(4000);
    t.r.release();
    advertise(t, 3, 100);
    t.clock.advance(4000);
    expect(t.r.state).toBe('master');
  });

  it('a released router that becomes Master again runs at priority 1 and yields to the router it handed over to', () => {
    const t = router({ priority: 200 });
    t.r.startup();
    t.clock.advance(4000);
    t.r.release();
    expect(t.r.hasYielded).toBe(true);
    // The new master (priority 100) is slow: no advert within Master_Down_Interval.
    t.clock.advance(t.r.masterDownInterval + 1);
    expect(t.r.state).toBe('master');
    expect(t.sent().at(-1)?.action).toEqual({ type: 'send-advert', priority: 1 });
    // Its adverts resume: the split brain ends on its side, not on the configured priorities.
    t.r.receive({ priority: 100, maxAdverInt: 100, source: '203.0.113.2' });
    expect(t.r.state).toBe('backup');
    expect(t.types().at(-1)).toBe('transition');
    t.r.claim(); // handed back by a migration: the configured priority again
    expect(t.r.hasYielded).toBe(false);
    expect(t.r.priority).toBe(200);
    expect(t.sent().at(-1)?.action).toEqual({ type: 'send-advert', priority: 200 });
  });

  it('a master hearing a lower-priority master announces its addresses again, repeated, once per Master_Down_Interval', () => {
    const t = router({ priority: 200 });
    t.r.startup();
    t.clock.advance(4000);
    const garps = () => t.actions.filter((a) => a.action.type === 'send-garp').length;
    const before = garps();
    // One advert of the loser (it falls silent on hearing ours): at once, after one
    // Master_Adver_Interval (1 s here) and after one Master_Down_Interval, whatever its own ARPs raced.
    t.r.receive({ priority: 1, maxAdverInt: 100, source: '203.0.113.2' });
    expect(garps() - before).toBe(1);
    t.clock.advance(1000);
    expect(garps() - before).toBe(2);
    t.clock.advance(t.r.masterDownInterval - 1000);
    expect(garps() - before).toBe(3);
    t.clock.advance(10_000);
    expect(garps() - before).toBe(3);
    // A loser that keeps advertising: one answer (and its repetitions) per Master_Down_Interval.
    const again = garps();
    for (let i = 0; i < 10; i++) {
      t.r.receive({ priority: 1, maxAdverInt: 100, source: '203.0.113.2' });
      t.clock.advance(100);
    }
    expect(t.r.state).toBe('master');
    expect(garps() - again).toBe(2); // 1 s of adverts: the answer and its repetition after 1 s
    // Leaving Master ends the repetitions.
    t.r.receive({ priority: 255, maxAdverInt: 100, source: '203.0.113.9' });
    expect(t.r.state).toBe('backup');
    const leaving = garps();
    t.clock.advance(t.r.masterDownInterval - 500); // past the pending repetition, before Backup's own Master_Down_Timer
    expect(t.actions.filter((a) => a.action.type === 'send-garp').length - leaving).toBe(0);
  });

  it('fault on a tracked link removes the addresses; recovery restarts as Backup', () => {
    const t = router();
    t.r.startup();
    t.clock.advance(4000);
    t.r.fault('ext0 down');
    expect(t.r.state).toBe('fault');
    expect(t.types()).toContain('remove-addresses');
    t.clock.advance(10_000);
    expect(t.r.state).toBe('fault');
    t.r.recover('ext0 up');
    expect(t.r.state).toBe('backup');
    expect(t.r.transitions).toEqual({ initialize: 1, backup: 2, master: 1, fault: 1 });
  });
});

describe('sync group', () => {
  function group() {
    const clock = new FakeClock();
    const ext = router({ vrid: 10 }, clock);
    const int = router({ vrid: 11, priority: 50 }, clock);
    const members = new Map([
      ['vip1-ext', ext.r],
      ['vip1-int', int.r],
    ]);
    const g = new SyncGroup('vip1', members);
    // What the speaker does: every transition of a member goes to its group.
    for (const [name, t] of [
      ['vip1-ext', ext],
      ['vip1-int', int],
    ] as const) {
      const original = t.actions.push.bind(t.actions);
      t.actions.push = (...items) => {
        for (const item of items) if (item.action.type === 'transition') g.memberChanged(name, item.action.from, item.action.to);
        return original(...items);
      };
    }
    return { clock, ext, int, g };
  }

  it('moves all members to Master when the first one goes Master', () => {
    const { clock, ext, int, g } = group();
    ext.r.startup();
    int.r.startup();
    clock.advance(3700); // ext (priority 100) times out first; int (50) would need 3805 ms
    expect(ext.r.state).toBe('master');
    expect(int.r.state).toBe('master');
    expect(g.state).toBe('master');
    expect(int.types()).toContain('add-addresses');
  });

  it('moves all members to Backup when one yields to a higher priority', () => {
    const { clock, ext, int, g } = group();
    ext.r.startup();
    int.r.startup();
    clock.advance(4000);
    ext.r.receive({ priority: 200, maxAdverInt: 100, source: '203.0.113.2' });
    expect(int.r.state).toBe('backup');
    expect(g.state).toBe('backup');
  });

  it('release and claim act on every member', () => {
    const { clock, g, ext, int } = group();
    ext.r.startup();
    int.r.startup();
    clock.advance(4000);
    g.release();
    expect([ext.r.state, int.r.state]).toEqual(['backup', 'backup']);
    expect(int.sent().at(-1)?.action).toEqual({ type: 'send-advert', priority: 0 });
    g.claim();
    expect(g.state).toBe('master');
  });
});
