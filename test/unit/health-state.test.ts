import { describe, expect, it } from 'vitest';
import { BackendHealth, type CheckResult } from '../../src/health/state.js';

const pass: CheckResult = { outcome: 'pass', reason: 'connect ok', latencyMs: 1 };
const refused: CheckResult = { outcome: 'fail', reason: 'connect refused', latencyMs: 1 };
const silent: CheckResult = { outcome: 'timeout', reason: 'no answer in 1000 ms', latencyMs: 1000 };

describe('rise and fall', () => {
  it('starts up and goes down only after fall failures in a row', () => {
    const h = new BackendHealth(2, 3, 0);
    expect(h.state).toBe('up');
    expect(h.record(refused, 1)).toBeUndefined();
    expect(h.record(silent, 2)).toBeUndefined();
    expect(h.record(refused, 3)).toEqual({ from: 'up', to: 'down', reason: '3 failed checks: connect refused' });
    expect(h.state).toBe('down');
    expect(h.snapshot()).toMatchObject({ state: 'down', reason: '3 failed checks: connect refused', failuresInRow: 3, transitions: 1, since: 3, checks: { pass: 0, fail: 2, timeout: 1 } });
  });

  it('forgives a failure that a pass follows (no flap on one lost answer)', () => {
    const h = new BackendHealth(2, 3, 0);
    for (let i = 0; i < 30; i++) {
      expect(h.record(i % 3 === 2 ? pass : silent, i)).toBeUndefined();
    }
    expect(h.state).toBe('up');
    expect(h.snapshot().transitions).toBe(0);
  });

  it('comes back after rise passes in a row, and a failure restarts the count', () => {
    const h = new BackendHealth(2, 1, 0);
    expect(h.record(refused, 1)?.to).toBe('down');
    expect(h.record(pass, 2)).toBeUndefined();
    expect(h.record(refused, 3)).toBeUndefined();
    expect(h.record(pass, 4)).toBeUndefined();
    expect(h.record(pass, 5)).toEqual({ from: 'down', to: 'up', reason: '2 passed checks: connect ok' });
    expect(h.snapshot()).toMatchObject({ state: 'up', transitions: 2, since: 5, lastCheck: { at: 5, outcome: 'pass', reason: 'connect ok', latencyMs: 1 } });
  });

  it('refuses rise or fall below 1', () => {
    expect(() => new BackendHealth(0, 3, 0)).toThrow(RangeError);
  });
});
