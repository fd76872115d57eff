import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { scrapedMetric } from '../../src/metrics/metrics.js';

describe('scrapedMetric', () => {
  it('shows exactly what its source holds at each scrape, for a gauge and a counter', async () => {
    const registry = new Registry();
    let fill = new Map([['vip1', 3], ['vip2', 7]]);
    let drops = 5;
    scrapedMetric(registry, 'gauge', { name: 'test_fill', help: 'h', labelNames: ['vip'], samples: () => [...fill].map(([vip, v]) => [{ vip }, v] as const) });
    scrapedMetric(registry, 'counter', { name: 'test_drops_total', help: 'h', samples: async () => [[{}, drops]] });

    const first = await registry.metrics();
    expect(first).toMatch(/^# TYPE test_fill gauge$/m);
    expect(first).toMatch(/^test_fill\{vip="vip1"\} 3$/m);
    expect(first).toMatch(/^test_fill\{vip="vip2"\} 7$/m);
    expect(first).toMatch(/^# TYPE test_drops_total counter$/m);
    expect(first).toMatch(/^test_drops_total 5$/m);

    // A VIP gone from the source is gone from the metric; a counter is not summed across scrapes.
    fill = new Map([['vip1', 4]]);
    drops = 9;
    const second = await registry.metrics();
    expect(second).toMatch(/^test_fill\{vip="vip1"\} 4$/m);
    expect(second).not.toMatch(/vip2/);
    expect(second).toMatch(/^test_drops_total 9$/m);
  });
});
