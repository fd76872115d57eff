import { describe, expect, it } from 'vitest';
import { EntryCounts } from '../../src/nat/entry-counts.js';

describe('entry counts for the status', () => {
  it('counts every VIP from one dump, reuses it longer the larger the table, recounts after invalidate', async () => {
    let now = 0;
    let dumps = 0;
    let table = new Map([
      [1, 30_000],
      [2, 20_000],
    ]);
    const counts = new EntryCounts(async () => {
      dumps++;
      return table;
    }, () => now);
    // 50,000 entries in all: reused for 50,000 × 0.1 ms = 5 s.
    expect([await counts.get(1), await counts.get(2), await counts.get(3)]).toEqual([30_000, 20_000, 0]);
    expect(dumps).toBe(1);
    table = new Map([[1, 11]]);
    now += 4000;
    expect(await counts.get(1)).toBe(30_000);
    expect(dumps).toBe(1);
    now += 1001;
    expect(await counts.get(1)).toBe(11);
    expect(dumps).toBe(2);
    now += 2; // 11 entries: reused for 1.1 ms only
    table = new Map([[1, 12]]);
    expect(await counts.get(1)).toBe(12);
    expect(dumps).toBe(3);
    table = new Map();
    expect(await counts.get(1)).toBe(12); // young: still the last count
    counts.invalidate();
    expect(await counts.get(1)).toBe(0);
    expect(dumps).toBe(4);
  });

  it('asks the kernel once for concurrent callers', async () => {
    let dumps = 0;
    const counts = new EntryCounts(async () => {
      dumps++;
      await new Promise((r) => setTimeout(r, 5));
      return new Map([[2, 7]]);
    });
    expect(await Promise.all([counts.get(2), counts.get(2), counts.get(3)])).toEqual([7, 7, 0]);
    expect(dumps).toBe(1);
  });
});
