import { describe, expect, it } from 'vitest';
import { EntryCounts } from '../../src/nat/entry-counts.js';

describe('entry counts for the status', () => {
  it('reuses a count while it is young, for longer the larger it is, and recounts after invalidate', async () => {
    let now = 0;
    let dumps = 0;
    let table = 50_000;
    const counts = new EntryCounts(async () => {
      dumps++;
      return table;
    }, () => now);
    expect(await counts.get(1)).toBe(50_000); // reused for 50,000 × 0.1 ms = 5 s
    table = 11;
    now += 4000;
    expect(await counts.get(1)).toBe(50_000);
    expect(dumps).toBe(1);
    now += 1001;
    expect(await counts.get(1)).toBe(11);
    expect(dumps).toBe(2);
    now += 2; // 11 entries: reused for 1.1 ms only
    table = 12;
    expect(await counts.get(1)).toBe(12);
    expect(dumps).toBe(3);
    table = 0;
    expect(await counts.get(1)).toBe(12); // young: still the last count
    counts.invalidate(1);
    expect(await counts.get(1)).toBe(0);
    expect(dumps).toBe(4);
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
