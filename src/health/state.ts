/**
 * A backend's health as HAProxy counts it: `fall` failed checks in a row take an up backend
 * down, `rise` passed checks in a row bring a down one up; anything in between changes
 * nothing, so one lost answer under load does not touch the pool. A backend starts up (as in
 * HAProxy and keepalived): an appliance that starts or takes over keeps the pool it was given
 * until the checks say otherwise, rather than starting empty. Plain code: the caller passes
 * each result with its time.
 */

export type BackendState = 'up' | 'down';

/** How a check ended: passed; failed (an answer that is wrong, a refusal); no answer in time. */
export type CheckOutcome = 'pass' | 'fail' | 'timeout';

export interface CheckResult {
  outcome: CheckOutcome;
  /** Why, in an operator's words: "connect refused", "status 503 not in 2xx,3xx", "exit status 2". */
  reason: string;
  /** From the check's start to its end, ms. */
  latencyMs: number;
}

export interface Transition {
  from: BackendState;
  to: BackendState;
  /** The reason of the check that made it, with the run that led to it: "3 failed checks: connect refused". */
  reason: string;
}

export interface HealthSnapshot {
  state: BackendState;
  /** The last check's reason, and the reason of the last transition. */
  reason: string;
  lastCheck?: { at: number; outcome: CheckOutcome; reason: string; latencyMs: number };
  /** Passed (up: toward nothing; down: toward rise) or failed (up: toward fall) checks in a row. */
  passesInRow: number;
  failuresInRow: number;
  checks: Record<CheckOutcome, number>;
  transitions: number;
  /** When the state last changed (the clock of the results), or when counting started. */
  since: number;
}

export class BackendHealth {
  private current: BackendState = 'up';
  private passes = 0;
  private failures = 0;
  private reasonText = 'not checked yet';
  private last: HealthSnapshot['lastCheck'];
  private readonly counts: Record<CheckOutcome, number> = { pass: 0, fail: 0, timeout: 0 };
  private changes = 0;
  private sinceAt: number;

  constructor(
    readonly rise: number,
    readonly fall: number,
    startedAt: number,
  ) {
    if (!(rise >= 1 && fall >= 1)) throw new RangeError(`rise and fall must be at least 1 (got ${rise}, ${fall})`);
    this.sinceAt = startedAt;
  }

  get state(): BackendState {
    return this.current;
  }

  /** Counts one check's result; returns the transition it makes, if any. */
  record(result: CheckResult, at: number): Transition | undefined {
    this.counts[result.outcome]++;
    this.last = { at, outcome: result.outcome, reason: result.reason, latencyMs: result.latencyMs };
    if (result.outcome === 'pass') {
      this.passes++;
      this.failures = 0;
    } else {
      this.failures++;
      this.passes = 0;
    }
    if (this.current === 'up' && this.failures >= this.fall) return this.change('down', `${this.failures} failed check${this.failures > 1 ? 's' : ''}: ${result.reason}`, at);
    if (this.current === 'down' && this.passes >= this.rise) return this.change('up', `${this.passes} passed check${this.passes > 1 ? 's' : ''}: ${result.reason}`, at);
    if (this.current === 'up' && result.outcome === 'pass') this.reasonText = result.reason;
    return undefined;
  }

  snapshot(): HealthSnapshot {
    return {
      state: this.current,
      reason: this.reasonText,
      ...(this.last ? { lastCheck: { ...this.last } } : {}),
      passesInRow: this.passes,
      failuresInRow: this.failures,
      checks: { ...this.counts },
      transitions: this.changes,
      since: this.sinceAt,
    };
  }

  private change(to: BackendState, reason: string, at: number): Transition {
    const from = this.current;
    this.current = to;
    this.reasonText = reason;
    this.changes++;
    this.sinceAt = at;
    return { from, to, reason };
  }
}
