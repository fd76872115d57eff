/** The appliance's fence against deposed controllers: an older epoch than the newest seen is refused. */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { EpochFence } from '../../src/appliance/agent.js';
import { epochQuery } from '../../src/appliance/agent-api.js';
import { HttpError } from '../../src/api/server.js';

const logger = pino({ level: 'silent' });

describe('EpochFence', () => {
  it('accepts requests without an epoch, the same or a newer epoch, and refuses an older one', () => {
    const fence = new EpochFence();
    fence.check(undefined, logger);
    fence.check(7, logger);
    fence.check(7, logger);
    fence.check(12, logger);
    fence.check(undefined, logger);
    let refusal: unknown;
    try {
      fence.check(7, logger);
    } catch (err) {
      refusal = err;
    }
    expect(refusal).toBeInstanceOf(HttpError);
    expect(refusal).toMatchObject({ status: 409, field: 'query.epoch', message: 'controller epoch 7 is older than 12: a newer controller leads' });
    expect(fence.refused).toBe(1);
    // The refusal does not lower what it has seen.
    expect(() => fence.check(11, logger)).toThrow(/older than 12/);
  });

  it('the step query takes a whole epoch and nothing else', () => {
    expect(epochQuery.parse({ epoch: '42' })).toEqual({ epoch: 42 });
    expect(epochQuery.parse({})).toEqual({});
    for (const bad of [{ epoch: 'x' }, { epoch: '-1' }, { epoch: '1.5' }, { epoch: '99999999999999999999' }, { epoch: '3', other: '1' }]) {
      expect(epochQuery.safeParse(bad).success).toBe(false);
    }
  });
});
