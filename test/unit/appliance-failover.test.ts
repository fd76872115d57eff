/**
 * The appliance's failover decisions without root: a fake appliance (mode table, hold, access
 * table), fake keepers and peers, a fake VRRP speaker and an injected clock. When a VRRP
 * transition takes a VIP over, when it is step 2 of a planned migration instead, when a VIP
 * is given up because another appliance became master, and where its entries come from.
 */
import { EventEmitter } from 'node:events';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Failover, type FailoverSources } from '../../src/appliance/failover.js';
import { parseApplianceConfig } from '../../src/config/appliance.js';
import type { EventInput } from '../../src/log/events.js';
import { RECORD_SIZE } from '../../src/netlink/entry-record.js';
import type { EntrySource } from '../../src/replication/takeover.js';
import type { TransitionEvent } from '../../src/vrrp/speaker.js';
import { FakeAppliance, lb2ConfigText } from '../support/fake-appliance.js';

const configText = (failover: string) =>
  lb2ConfigText(
    failover,
    `vrrp:
  instances:
    - { name: vip1-ext, vrid: 1, interface: ext0, addresses: [203.0.113.10/24] }
    - { name: vip1-int, vrid: 1, interface: int0, addresses: [198.18.0.10/24] }
`,
  );

const source = (name: string, records: number): EntrySource => ({ name, entries: async () => Buffer.alloc(records * RECORD_SIZE) });

function failover(settings = '{ peerTimeoutMs: 200 }') {
  const config = parseApplianceConfig(configText(settings), 'lb2.yaml');
  const appliance = new FakeAppliance(config);
  const speaker = new EventEmitter();
  const events: EventInput[] = [];
  const clock = { ms: 0 };
  const closed: string[] = [];
  // Each keeper's copies of the VIPs of its server.
  const copies: Record<string, number> = { srv1: 4, srv2: 8, srv3: 3 };
  const sources: FailoverSources = {
    sinks: new Map(),
    keepers: new Map(),
    peers: [source('lb1', 2)],
    setKeepers: (next) => {
      sources.sinks.clear();
      sources.keepers.clear();
      for (const k of next.keepers) {
        sources.sinks.set(k.name, { push: async () => undefined, copies: async () => Buffer.alloc(0) });
        sources.keepers.set(k.server, source(k.name, copies[k.name] ?? 0));
      }
    },
    close: () => closed.push('sources'),
  };
  sources.setKeepers(config);
  const f = new Failover({
    config,
    appliance,
    table: { subscribe: () => { throw new Error('not listening in these tests'); }, readRecords: async () => undefined },
    sources,
    modes: () => appliance.modes,
    speaker,
    logger: pino({ level: 'silent' }),
    events: { emit: (e) => events.push(e) },
    now: () => clock.ms,
  });
  const transition = (instance: string, to: TransitionEvent['to']) =>
    speaker.emit('transition', { instance, vrid: 1, from: to === 'master' ? 'backup' : 'master', to, reason: 'test', at: clock.ms } satisfies TransitionEvent);
  /** Lets the takeover (or the giving up) a transition started run to its end. */
  const settle = () => new Promise((resolve) => setTimeout(resolve, 20));
  return { f, appliance, events, clock, closed, transition, settle };
}

afterEach(() => {
  vi.useRealTimers();
});

describe('Failover', () => {
  it('a standby that becomes master of a held VIP takes it over: the peers\' entries, then its servers\' keepers\' only', async () => {
    const { f, appliance, events, transition, settle } = failover();
    await f.takeover.arm();
    appliance.log.length = 0;
    expect(f.serving('vip1')).toBe(false);
    transition('vip1-ext', 'master');
    await settle();
    expect(f.serving('vip1')).toBe(true);
    // vip1's backend is 198.18.0.101: srv1's copies, not srv2's (vip2's server).
    expect(appliance.log).toEqual(['drop precopy vip1', 'install vip1 2 from peer lb1', 'install vip1 4 from keeper srv1', 'activate vip1']);
    expect(events).toEqual([
      { event: 'master', instance: 'vip1-ext', vip: 'vip1', reason: 'test' },
      { event: 'takeover', vip: 'vip1' },
    ]);
    expect(f.status().takeovers).toEqual([expect.objectContaining({ vip: 'vip1', created: 6, outcome: 'activated' })]);
    // Its second instance (the inside address) following is no second takeover.
    transition('vip1-int', 'master');
    await settle();
    expect(appliance.log.filter((l) => l.startsWith('activate'))).toHaveLength(1);
  });

  it('a planned migration\'s claim is not a failover until the migration is 60 s stale; its end is reported', async () => {
    const { f, appliance, events, clock, transition, settle } = failover();
    await f.takeover.arm();
    appliance.log.length = 0;
    f.stepStarted('vip1', 'prepare');
    clock.ms = 59_000;
    transition('vip1-ext', 'master');
    await settle();
    expect(appliance.log).toEqual([]);
    f.stepEnded('vip1', 'activate', true);
    expect(events.at(-1)).toEqual({ event: 'migrationDone', vip: 'vip1' });

    // A migration started here and never finished stops shielding the VIP after 60 s.
    transition('vip1-ext', 'backup');
    f.stepStarted('vip1', 'address');
    clock.ms += 60_000;
    transition('vip1-ext', 'master');
    await settle();
    expect(appliance.log).toContain('activate vip1');
    f.stepEnded('vip1', 'abort', true);
    expect(events.at(-1)).toEqual({ event: 'migrationAborted', vip: 'vip1' });
  });

  it('another appliance becomes master: held again at once, entries deleted after the grace; one instance of two lost is not giving up', async () => {
    const { f, appliance, transition, settle } = failover('{ peerTimeoutMs: 0 }');
    appliance.modes.set('vip1', 'normal');
    transition('vip1-ext', 'master');
    transition('vip1-int', 'master');
    transition('vip1-int', 'backup');
    await settle();
    expect(f.serving('vip1')).toBe(true);
    expect(appliance.log).toEqual([]);

    vi.useFakeTimers();
    transition('vip1-ext', 'backup');
    await vi.advanceTimersByTimeAsync(0);
    expect(f.serving('vip1')).toBe(false);
    expect(appliance.modes.get('vip1')).toBe('migrating');
    expect(appliance.log).toEqual(['prepare vip1']);
    // The new master reads our entries first: they stay for max(2 s, 4 × peerTimeoutMs).
    await vi.advanceTimersByTimeAsync(1999);
    expect(appliance.log).toEqual(['prepare vip1']);
    await vi.advanceTimersByTimeAsync(1);
    expect(appliance.log).toEqual(['prepare vip1', 'delete vip1']);
    await f.stop();
  });

  it("a flap during a migration's pre-copy neither takes the VIP over nor deletes what it copied; a step cannot begin while a takeover runs", async () => {
    const { f, appliance, transition } = failover('{ peerTimeoutMs: 0 }');
    // A flap before the migration: taken over, then given up (entries deleted after the grace).
    appliance.modes.set('vip1', 'migrating');
    vi.useFakeTimers();
    transition('vip1-ext', 'master');
    // While that takeover runs, the controller's pre-copy to this appliance is refused.
    expect(() => f.stepStarted('vip1', 'precopy')).toThrow(/takeover of vip1 is under way/);
    await vi.advanceTimersByTimeAsync(0);
    transition('vip1-ext', 'backup');
    await vi.advanceTimersByTimeAsync(0);
    expect(appliance.log).toEqual(['drop precopy vip1', 'install vip1 4 from keeper srv1', 'activate vip1', 'prepare vip1']);
    appliance.log.length = 0;
    // The controller tries again: the pre-copy begins; the given-up VIP's deletion no longer comes.
    f.stepStarted('vip1', 'precopy');
    await vi.advanceTimersByTimeAsync(5000);
    expect(appliance.log).toEqual([]);
    // A flap of VRRP (master for a moment, then backup) in the pre-copy: the hold and its entries stay.
    transition('vip1-ext', 'master');
    transition('vip1-ext', 'backup');
    await vi.advanceTimersByTimeAsync(5000);
    expect(appliance.log).toEqual([]);
    expect(appliance.modes.get('vip1')).toBe('migrating');
    f.stepEnded('vip1', 'precopy', true);
    await f.stop();
  });

  it('an abort while VRRP made this target master (its source died mid-migration) takes the VIP over, held throughout; after the address went back, it drops the VIP', async () => {
    const { f, appliance, transition, settle } = failover('{ peerTimeoutMs: 0 }');
    await f.takeover.arm();
    appliance.log.length = 0;
    const aborts: string[] = [];
    const abort = async () => {
      aborts.push('vip1');
      appliance.modes.delete('vip1');
    };
    // The target claims (step 2), gives the address back as the migration fails, and the dead
    // source's silence makes it master again: the migration's shield holds that transition back.
    f.stepStarted('vip1', 'address');
    transition('vip1-ext', 'master');
    transition('vip1-ext', 'backup');
    transition('vip1-ext', 'master');
    await settle();
    expect(appliance.log).toEqual([]);
    await f.abortMigration('vip1', abort);
    f.stepEnded('vip1', 'abort', true);
    expect(aborts).toEqual([]);
    expect(appliance.log).toEqual(['drop precopy vip1', 'install vip1 4 from keeper srv1', 'activate vip1']);
    expect(appliance.modes.get('vip1')).toBe('normal');
    // An abort again (the controller's recovery of the previous version): the VIP served stays.
    await f.abortMigration('vip1', abort);
    expect(aborts).toEqual([]);
    expect(appliance.modes.get('vip1')).toBe('normal');

    // A migration that aborts with the source alive: the target is backup again by its abort.
    transition('vip1-ext', 'backup');
    await settle();
    appliance.log.length = 0;
    f.stepStarted('vip1', 'address');
    await f.abortMigration('vip1', abort);
    f.stepEnded('vip1', 'abort', true);
    await settle();
    expect(aborts).toEqual(['vip1']);
    expect(appliance.log).toEqual([]);
    await f.stop();
  });

  it('not a standby: VRRP moves addresses only, nothing is taken over or given up', async () => {
    const { appliance, events, transition, settle } = failover('{ standby: false }');
    transition('vip1-ext', 'master');
    await settle();
    appliance.modes.set('vip1', 'normal');
    transition('vip1-ext', 'backup');
    await settle();
    expect(appliance.log).toEqual([]);
    expect(events.map((e) => e.event)).toEqual(['master', 'backup']);
  });

  it('a VIP already normal when its instance becomes master is left alone', async () => {
    const { appliance, events, transition, settle } = failover();
    appliance.modes.set('vip1', 'normal');
    transition('vip1-ext', 'master');
    await settle();
    expect(appliance.log).toEqual([]);
    expect(events.map((e) => e.event)).toEqual(['master']);
  });

  it('a reload that adds a VIP, its keeper and its VRRP instance: a standby holds the VIP at once and takes it over from the new keeper', async () => {
    const { f, appliance, transition, settle } = failover('{ peerTimeoutMs: 0 }');
    await f.takeover.arm();
    appliance.log.length = 0;
    const next = parseApplianceConfig(
      configText('{ peerTimeoutMs: 0 }')
        .replace('\nkeepers:\n', '\n  - { name: vip3, id: 3, address: 203.0.113.12, insideAddress: 198.18.0.12, ports: [7], mode: dnat, backends: [{ address: 198.18.0.103 }], owner: lb1 }\nkeepers:\n')
        .replace('\nfailover:', '\n  - { name: srv3, server: 198.18.0.103, api: "http://192.0.2.23:8442" }\nfailover:')
        .concat('    - { name: vip3-ext, vrid: 3, interface: ext0, addresses: [203.0.113.12/24] }\n'),
      'lb2.yaml',
    );
    appliance.config = next;
    await f.reconfigure(next);
    expect(appliance.log).toEqual(['prepare vip3']);
    expect(f.replicator.status().keepers.map((k) => k.name)).toEqual(['srv1', 'srv2', 'srv3']);
    transition('vip3-ext', 'master');
    await settle();
    expect(appliance.log).toEqual(['prepare vip3', 'drop precopy vip3', 'install vip3 3 from keeper srv3', 'activate vip3']);
  });

  it('an operator\'s takeover of a VIP not held here: held, address claimed, then taken over; stop closes the sources', async () => {
    const { f, appliance, closed } = failover('{ standby: false, peerTimeoutMs: 0 }');
    const report = await f.takeOver('vip2');
    expect(appliance.log).toEqual(['prepare vip2', 'claim vip2', 'drop precopy vip2', 'install vip2 8 from keeper srv2', 'activate vip2']);
    expect(report).toMatchObject({ vip: 'vip2', outcome: 'activated', created: 8, peers: [] });
    await f.stop();
    expect(closed).toEqual(['sources']);
  });
});
