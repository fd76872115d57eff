/** The appliance's fence against deposed controllers: an older epoch than the newest seen is refused, also after a restart. */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { EpochFence, FileEpochStore, type EpochStore } from '../../src/appliance/agent.js';
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

  it('records a newer epoch before accepting it, and a restarted appliance still refuses the older one', () => {
    // The store as the disk would keep it: what was saved is what a new process loads.
    let disk = 0;
    const saves: number[] = [];
    const store: EpochStore = { load: () => disk, save: (e) => (saves.push(e), (disk = e)) };
    const before = new EpochFence(store);
    before.check(5, logger);
    before.check(5, logger);
    before.check(9, logger);
    expect(saves).toEqual([5, 9]); // once per newer epoch, not per request
    // The appliance restarts: a new fence on the same store.
    const after = new EpochFence(store);
    expect(after.status()).toEqual({ newest: 9, refused: 0 });
    expect(() => after.check(5, logger)).toThrow(/controller epoch 5 is older than 9/);
    after.check(9, logger);
    expect(after.status()).toEqual({ newest: 9, refused: 1 });
  });

  it('refuses an epoch it cannot record, and remembers nothing of it', () => {
    let failing = true;
    const fence = new EpochFence({ load: () => 3, save: () => { if (failing) throw new Error('ENOSPC: no space left on device'); } });
    let refusal: unknown;
    try {
      fence.check(4, logger);
    } catch (err) {
      refusal = err;
    }
    expect(refusal).toMatchObject({ status: 503, field: 'query.epoch', message: 'could not record controller epoch 4: ENOSPC: no space left on device' });
    expect(fence.status().newest).toBe(3);
    failing = false;
    fence.check(4, logger);
    expect(fence.status().newest).toBe(4);
  });

  it('keeps the epoch in a file: none yet is 0, written whole, unreadable is an error naming the file', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vipshift-epoch-'));
    try {
      const file = path.join(dir, 'state', 'lb1.controller-epoch');
      const store = new FileEpochStore(file);
      expect(store.load()).toBe(0);
      new EpochFence(store).check(1234567, logger);
      expect(readFileSync(file, 'utf8')).toBe('1234567\n');
      expect(new FileEpochStore(file).load()).toBe(1234567);
      writeFileSync(file, 'twelve');
      expect(() => store.load()).toThrow(`${file}: expected the newest controller epoch (a whole number), found 'twelve'`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
