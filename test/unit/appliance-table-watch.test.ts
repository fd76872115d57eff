import { describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { TableWatch } from '../../src/appliance/table-watch.js';
import type { TableStats } from '../../src/netlink/conntrack.js';

function watch(samples: TableStats[]) {
  const lines: { level: number; msg: string }[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => lines.push(JSON.parse(s)) });
  let i = 0;
  const w = new TableWatch({ tableStats: async () => samples[Math.min(i++, samples.length - 1)]! }, logger);
  return { w, lines };
}

const stats = (entries: number, drop = 0, earlyDrop = 0): TableStats => ({ entries, max: 1000, drop, earlyDrop, insertFailed: 0 });

describe('the conntrack table watch', () => {
  it('reports size and headroom; full at 99 % or when the kernel refused new connections; says so once each way', async () => {
    const { w, lines } = watch([stats(10), stats(500), stats(990), stats(995, 3, 7), stats(400, 3, 7), stats(400, 5, 7), stats(400, 5, 7)]);
    expect(await w.look()).toEqual({ entries: 10, max: 1000, headroom: 990, full: false, refused: 0, earlyDropped: 0, createsFailed: 0 });
    expect((await w.look()).full).toBe(false);
    expect(await w.look()).toMatchObject({ full: true, headroom: 10 });
    expect(await w.look()).toMatchObject({ full: true, refused: 3, earlyDropped: 7 });
    expect(await w.look()).toMatchObject({ full: false, headroom: 600 });
    // Refusals while below 99 % (a burst that filled and emptied it between two looks): full.
    expect((await w.look()).full).toBe(true);
    expect((await w.look()).full).toBe(false);
    expect(lines.map((l) => l.msg)).toEqual([
      'conntrack table full: new connections are refused, established ones go on',
      'conntrack table has room again',
      'conntrack table full: new connections are refused, established ones go on',
      'conntrack table has room again',
    ]);
  });

  it('counts the creates a migration or takeover could not make', async () => {
    const { w } = watch([stats(10)]);
    w.failedCreates(0);
    w.failedCreates(4);
    expect((await w.look()).createsFailed).toBe(4);
  });
});
