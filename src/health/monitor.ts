/**
 * Runs every backend's check on its schedule and hands each state change to the pool.
 *
 * Scheduling: each backend's checks are `inter` apart, at a fixed rate from a phase of its
 * own. The first phases are spread evenly over the interval (the k-th of n backends at
 * k/n × inter, plus a little randomness), so n backends cost n/inter checks a second in an
 * even stream instead of n at once every interval. A backend's next check starts only once
 * its previous one has ended (and its pool change, if any, has been applied): two checks of
 * one backend never overlap, whatever the timeout or the machine's load.
 *
 * The pool is told through a `BackendHealthSink`. A change the sink fails to apply is
 * tried again after the backend's next check, so the pool always ends where the checks say.
 */
import { checkProblem, type ResolvedCheck } from '../config/check.js';
import { runCheck, type Checker, type CheckTarget } from './checkers.js';
import { BackendHealth, type BackendState, type CheckResult, type HealthSnapshot, type Transition } from './state.js';

/** Where a backend's state goes: the VIP's pool (the appliance applies it as one nft transaction). */
export interface BackendHealthSink {
  setBackendHealth(vip: string, backend: CheckTarget, up: boolean, reason: string): Promise<void>;
}

/** One backend of one VIP, and the check it runs. `port` is the backend's (the pool's key). */
export interface HealthTarget {
  vip: string;
  address: string;
  port: number;
  check: ResolvedCheck;
}

export interface TimerHandle {
  cancel(): void;
}

/** Time and one-shot timers: real ones on the appliance, a fake one in tests. */
export interface HealthClock {
  now(): number;
  setTimer(ms: number, fire: () => void): TimerHandle;
}

export const realClock: HealthClock = {
  now: () => Date.now(),
  setTimer(ms, fire) {
    const t = setTimeout(fire, ms);
    t.unref();
    return { cancel: () => clearTimeout(t) };
  },
};

export interface TransitionEvent extends Transition {
  vip: string;
  address: string;
  port: number;
  /** When the check that made it ended. */
  at: number;
  /** Whether the pool took the change, and how long that took after `at`, ms. */
  applied: boolean;
  applyMs?: number;
}

export interface CheckEvent {
  vip: string;
  address: string;
  port: number;
  result: CheckResult;
}

export interface BackendCheckStatus extends HealthSnapshot {
  vip: string;
  address: string;
  port: number;
  /** The check's type and the port it looks at. */
  type: ResolvedCheck['type'];
  checkPort: number;
  inter: number;
  /** Whether the pool has been told the current state (false only while a change is retried). */
  applied: boolean;
}

export interface HealthMonitorOptions {
  sink: BackendHealthSink;
  checker?: Checker;
  clock?: HealthClock;
  random?: () => number;
  onTransition?: (e: TransitionEvent) => void;
  onCheck?: (e: CheckEvent) => void;
  /** A pool change that failed (it is tried again after the next check). */
  onSinkError?: (e: TransitionEvent, err: Error) => void;
}

interface Entry {
  target: HealthTarget;
  key: string;
  health: BackendHealth;
  /** The state the pool was last told (starts up: the pool starts with every backend). */
  applied: BackendState;
  lastTransition?: TransitionEvent;
  timer?: TimerHandle;
  /** When the current or last check was due (the fixed-rate schedule's clock). */
  dueAt: number;
  running: boolean;
  removed: boolean;
}

const keyOf = (t: { vip: string; address: string; port: number }) => `${t.vip}|${t.address}|${t.port}`;

/** The same target and check: a reload keeps its state and schedule. */
const sameCheck = (a: HealthTarget, b: HealthTarget) => JSON.stringify(a.check) === JSON.stringify(b.check);

export class HealthMonitor {
  private readonly entries = new Map<string, Entry>();
  private readonly checker: Checker;
  private readonly clock: HealthClock;
  private readonly random: () => number;
  private running = false;

  constructor(private readonly options: HealthMonitorOptions) {
    this.checker = options.checker ?? runCheck;
    this.clock = options.clock ?? realClock;
    this.random = options.random ?? Math.random;
  }

  /**
   * Sets the backends to check. Unchanged ones keep their state and schedule; new ones start
   * up (like the pool) at a random phase of their interval; gone ones stop (their pool entry
   * is the pool's business). Throws, changing nothing, if a target's check is incomplete.
   */
  setTargets(targets: readonly HealthTarget[]): void {
    for (const t of targets) {
      const problem = checkProblem(t.check);
      if (problem) throw new Error(`${t.vip} backend ${t.address}:${t.port}: check ${problem}`);
    }
    const next = new Map(targets.map((t) => [keyOf(t), t]));
    for (const [key, e] of this.entries) {
      const t = next.get(key);
      if (!t || !sameCheck(t, e.target)) {
        e.removed = true;
        e.timer?.cancel();
        this.entries.delete(key);
      }
    }
    const added: Entry[] = [];
    for (const [key, t] of next) {
      if (this.entries.has(key) || !t.check.enabled) continue;
      const e: Entry = { target: t, key, health: new BackendHealth(t.check.rise, t.check.fall, this.clock.now()), applied: 'up', dueAt: 0, running: false, removed: false };
      this.entries.set(key, e);
      added.push(e);
    }
    if (this.running) this.spread(added);
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.spread([...this.entries.values()]);
  }

  stop(): void {
    this.running = false;
    for (const e of this.entries.values()) {
      e.timer?.cancel();
      e.timer = undefined;
    }
  }

  status(): BackendCheckStatus[] {
    return [...this.entries.values()].map((e) => this.describe(e));
  }

  private describe(e: Entry): BackendCheckStatus {
    return {
      vip: e.target.vip,
      address: e.target.address,
      port: e.target.port,
      type: e.target.check.type,
      checkPort: e.target.check.port ?? e.target.port,
      inter: e.target.check.inter,
      ...e.health.snapshot(),
      applied: e.applied === e.health.state,
    };
  }

  /** The state the checks say, for one backend (undefined: not checked). */
  stateOf(vip: string, address: string, port: number): BackendState | undefined {
    return this.entries.get(keyOf({ vip, address, port }))?.health.state;
  }

  /** One backend's check (undefined: not checked). */
  statusOf(vip: string, address: string, port: number): BackendCheckStatus | undefined {
    const e = this.entries.get(keyOf({ vip, address, port }));
    return e && this.describe(e);
  }

  /** First checks spread over each one's interval: the k-th of n at (k + u)/n of it, u in [0, 1). */
  private spread(entries: Entry[]): void {
    const now = this.clock.now();
    entries.forEach((e, k) => {
      const phase = Math.floor(((k + this.random()) / entries.length) * e.target.check.inter);
      e.dueAt = now + phase;
      this.arm(e, phase);
    });
  }

  private arm(e: Entry, delay: number): void {
    e.timer = this.clock.setTimer(delay, () => {
      e.timer = undefined;
      void this.runOne(e);
    });
  }

  private async runOne(e: Entry): Promise<void> {
    if (e.running || e.removed || !this.running) return;
    e.running = true;
    const t = e.target;
    const result = await this.checker({ address: t.address, port: t.check.port ?? t.port }, t.check);
    if (e.removed || !this.running) {
      e.running = false;
      return;
    }
    const at = this.clock.now();
    const transition = e.health.record(result, at);
    this.options.onCheck?.({ vip: t.vip, address: t.address, port: t.port, result });
    if (transition) e.lastTransition = { ...transition, vip: t.vip, address: t.address, port: t.port, at, applied: false };
    const want = e.health.state;
    let applyMs: number | undefined;
    if (want !== e.applied) {
      try {
        await this.options.sink.setBackendHealth(t.vip, { address: t.address, port: t.port }, want === 'up', e.health.snapshot().reason);
        e.applied = want;
        applyMs = this.clock.now() - at;
      } catch (err) {
        const event = e.lastTransition ?? { from: e.applied, to: want, reason: e.health.snapshot().reason, vip: t.vip, address: t.address, port: t.port, at, applied: false };
        this.options.onSinkError?.(event, err as Error);
      }
    }
    // Told once the pool has it (or could not take it): a `backend down` line means it is out.
    if (transition) {
      e.lastTransition = { ...e.lastTransition!, applied: e.applied === want, ...(applyMs === undefined ? {} : { applyMs }) };
      this.options.onTransition?.(e.lastTransition);
    }
    e.running = false;
    if (e.removed || !this.running) return;
    // Fixed rate; a check that ended after its next slot (a timeout as long as inter, a
    // stalled machine) is followed at once, and the schedule starts again from there.
    const inter = t.check.inter;
    const now = this.clock.now();
    e.dueAt = Math.max(e.dueAt + inter, now);
    // Bounded by one interval, whatever the clock did (a wall-clock step back).
    this.arm(e, Math.min(inter, Math.max(0, e.dueAt - now)));
  }
}
