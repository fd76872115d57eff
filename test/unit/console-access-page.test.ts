import { describe, expect, it } from 'vitest';
import { AccessPages, orderRecords, parseFilter, rowAt, validateQuery } from '../../src/nat/access-page.js';
import { RECORD_SIZE, writeRecord, type EntryRecord } from '../../src/netlink/entry-record.js';

const window = { wscaleOriginal: 7, wscaleReply: 7, flagsOriginal: 0, flagsReply: 0 };

function record(i: number, over: Partial<EntryRecord> = {}): EntryRecord {
  return {
    client: { address: `198.51.100.${10 + (i % 3)}`, port: 1024 + (i % 60000) },
    vip: { address: '203.0.113.10', port: 7 },
    server: { address: '198.18.0.101', port: 7 },
    proto: 6,
    tcpState: i % 5 === 0 ? 7 : 3,
    tcpWindow: window,
    status: 0,
    timeout: 1000 - i,
    mark: 1,
    ...over,
  };
}

function table(n: number, make = record): Buffer {
  const b = Buffer.alloc(n * RECORD_SIZE);
  for (let i = 0; i < n; i++) writeRecord(b, i * RECORD_SIZE, make(i));
  return b;
}

describe('access table pages', () => {
  it('decodes a record into the row the console draws, with the inside address of fullnat', () => {
    const b = table(1, (i) => record(i, { inside: { address: '198.18.0.13', port: 20001 } }));
    expect(rowAt(b, 0)).toEqual({
      client: '198.51.100.10:1024',
      vip: '203.0.113.10:7',
      inside: '198.18.0.13:20001',
      server: '198.18.0.101:7',
      tcpState: 'TIME_WAIT',
      timeout: 1000,
    });
    expect(rowAt(table(1), 0).inside).toBeUndefined();
  });

  it('sorts by address then port, numerically (10 before 9 in the last octet would be a string sort)', () => {
    const b = table(4, (i) => record(i, { client: { address: ['198.51.100.9', '198.51.100.10', '198.51.100.9', '10.0.0.1'][i]!, port: [2, 1, 1, 5][i]! } }));
    const order = [...orderRecords(b, 'client', '')].map((i) => rowAt(b, i * RECORD_SIZE).client);
    expect(order).toEqual(['10.0.0.1:5', '198.51.100.9:1', '198.51.100.9:2', '198.51.100.10:1']);
    const desc = [...orderRecords(b, '-client', '')].map((i) => rowAt(b, i * RECORD_SIZE).client);
    expect(desc).toEqual([...order].reverse());
  });

  it('filters by field and by bare text, all terms together', () => {
    const b = table(100);
    const count = (f: string) => orderRecords(b, 'client', f).length;
    expect(count('')).toBe(100);
    expect(count('state:time')).toBe(20);
    expect(count('STATE:established')).toBe(80);
    expect(count('client:198.51.100.11')).toBe(33);
    expect(count('client:198.51.100.11 state:time_wait')).toBe(6); // i ≡ 1 (mod 3) and i ≡ 0 (mod 5)
    expect(count(":1066")).toBe(1); // a port, in any field
    expect(count('server:198.18.0.102')).toBe(0);
    expect(parseFilter('   ')).toBeUndefined();
  });

  it('matches a bare term within one field, never across two', () => {
    const b = table(3);
    // The client's port 1024 is followed by the server's address 198.18.0.101.
    expect(orderRecords(b, 'client', ':1024').length).toBe(1);
    expect(orderRecords(b, 'client', '1024198').length).toBe(0);
    expect(orderRecords(b, 'client', '1024\n198').length).toBe(1); // whitespace separates two terms
  });

  it('filters 100,000 entries with 100 terms (the most a 200-character filter holds) in well under a second', () => {
    const b = table(100_000);
    const worst = [Array(100).fill('1').join(' '), Array.from({ length: 66 }, (_, i) => ['19', '98', '51', '10', '18', '0.', '.1', '8.'][i % 8]).join(' ')];
    for (const filter of worst) {
      expect(filter.length).toBeLessThanOrEqual(200);
      const t0 = performance.now();
      const matched = orderRecords(b, 'client', filter).length;
      const ms = performance.now() - t0;
      expect(matched).toBe(100_000);
      // It took 2-3 s on the appliance's event loop before each record's fields were written out once.
      expect(ms).toBeLessThan(1500);
    }
  });

  it('refuses an unknown sort key and a page past the limit, naming the field', () => {
    expect(() => validateQuery({ sort: 'colour' })).toThrow(/sort must be one of/);
    expect(() => validateQuery({ limit: 5000 })).toThrow(/limit/);
    expect(() => validateQuery({ offset: -1 })).toThrow(/offset/);
  });

  it('pages a 100,000-entry snapshot, reusing it until it is too old for what its dump cost', async () => {
    let clock = 0;
    let dumps = 0;
    const big = table(100_000);
    const pages = new AccessPages(
      async () => {
        dumps++;
        clock += 250; // a dump of this size costs about a quarter of a second
        return big;
      },
      () => clock,
    );
    const p = await pages.page('vip1', { offset: 99_990, limit: 50, sort: '-timeout', filter: '' });
    expect(p.total).toBe(100_000);
    expect(p.matched).toBe(100_000);
    expect(p.rows).toHaveLength(10);
    expect(p.rows[0]!.timeout).toBeGreaterThanOrEqual(p.rows[9]!.timeout);
    expect(p.dumpMs).toBe(250);
    clock += 10_000; // younger than 250 ms / 2 % = 12.5 s: same snapshot
    const again = await pages.page('vip1', { offset: 0, limit: 20, sort: 'state', filter: 'state:time' });
    expect(dumps).toBe(1);
    expect(again.matched).toBe(20_000);
    expect(again.rows.every((r) => r.tcpState === 'TIME_WAIT')).toBe(true);
    expect(again.snapshotAgeMs).toBe(10_000);
    clock += 3_000;
    // Too old: still served at once, while the next dump runs; the page after has the new one.
    const stale = await pages.page('vip1', { offset: 0, limit: 20, sort: 'state', filter: 'state:time' });
    expect(stale.snapshotAgeMs).toBeGreaterThanOrEqual(13_000);
    expect(dumps).toBe(2);
    await new Promise((r) => setTimeout(r, 0));
    const fresh = await pages.page('vip1', { offset: 0, limit: 20, sort: 'state', filter: 'state:time' });
    expect(fresh.snapshotAgeMs).toBe(0);
    expect(dumps).toBe(2);
    expect(AccessPages.maxAgeMs(2)).toBe(1000); // small tables: every second
  });
});
