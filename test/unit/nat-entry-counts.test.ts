import { describe, expect, it } from 'vitest';
import { EntryCounts } from '../../src/nat/entry-counts.js';

describe('entry counts for the status', () => {
  it('reuses a count while it is young, for longer the more it cost, and recounts after invalidate', async () => {
    let now = 0;
    let dumps = 0;
    let table = 10;
    const counts = new EntryCounts(async () => {
      dumps++;
      now += 100; // this count cost 100 ms: reused for 100 / 0.02 = 5 s
      return table;
    }, () => now);
    expect(await counts.get(1)).toBe(10);
    table = 11;
    now += 4000;
    expect(await counts.get(1)).toBe(10);
    expect(dumps).toBe(1);
    now += 1001;
    expect(await counts.get(1)).toBe(11);
    expect(dumps).toBe(2);
    table = 0;
    counts.invalidate(1);
    expect(await counts.get(1)).toBe(0);
    expect(dumps).toBe(3);
  });

  it('asks the kernel once for concurrent callers', async () => {
    let dumps = 0;
    const counts = new EntryCounts(async () => {
      dumps++;
      await new Promise((r) => setTimeout(r, 5));
      return 7;
    });
    expect(await Promise.all([counts.get(2), counts.get(2), counts.get(2)])).toEqual([7, 7, 7]);
    expect(dumps).toBe(1);
  });
});
