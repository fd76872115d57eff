/**
 * Replication to the keepers on the real kernel: copies survive a keeper restart, a
 * keeper that was down during load catches up, and an event socket overrun (ENOBUFS, a tiny
 * receive buffer) is answered by a resynchronisation that loses nothing. "Nothing lost" is
 * checked as: the keeper holds exactly as many copies of the VIP as lb1 has entries.
 */
import { describe, expect, it } from 'vitest';
import type { Site } from '../../src/lab/site.js';
import { withLab } from '../helpers/lab.js';
import { agentStatus, copiesOf, failoverLab, keeperStatus, killKeeper, startKeeper, waitFor } from './helpers/replication-lab.js';

const VIP1 = '203.0.113.10';

async function entriesOnLb1(site: Site, vip: string): Promise<number> {
  return (await agentStatus(site, 'lb1')).vips.find((v) => v.name === vip)?.entries ?? -1;
}

/** Waits until srv1's keeper holds one copy per entry of vip1 on lb1, and returns that count. */
async function converged(site: Site, atLeast: number): Promise<number> {
  let n = 0;
  await waitFor(
    `srv1's copies of vip1 to match lb1's entries (≥ ${atLeast})`,
    async () => {
      const [entries, k] = await Promise.all([entriesOnLb1(site, 'vip1'), keeperStatus(site, 'srv1')]);
      n = entries;
      return entries >= atLeast && copiesOf(k, 'vip1') === entries;
    },
    30_000,
    300,
  );
  return n;
}

describe('replication to the keepers', () => {
  it('a keeper restart loses no copy; a keeper down during load catches up', async () => {
    await withLab({ prefix: 'vtrep', configure: failoverLab({}) }, async (lab) => {
      const first = lab.traffic({ address: VIP1, port: 7, connections: 300, intervalMs: 50 });
      await first.established;
      expect(await converged(lab.site, 300)).toBe(300);

      // SIGKILL and start again: the copies are in SQLite (WAL), not in the process.
      await killKeeper(lab.site, 'srv1');
      await startKeeper(lab.site, 'srv1');
      expect(copiesOf(await keeperStatus(lab.site, 'srv1'), 'vip1')).toBe(300);

      // Down while 300 more connections open: lb1 keeps a backlog and delivers it later.
      await killKeeper(lab.site, 'srv1');
      const second = lab.traffic({ address: VIP1, port: 7, connections: 300, intervalMs: 50 });
      await second.established;
      await waitFor('lb1 to notice the keeper is down', async () => (await agentStatus(lab.site, 'lb1')).replication.keepers.find((k) => k.name === 'srv1')?.state === 'down', 15_000);
      const during = (await agentStatus(lab.site, 'lb1')).replication.keepers.find((k) => k.name === 'srv1')!;
      expect(during.backlog).toBeGreaterThanOrEqual(300);
      await startKeeper(lab.site, 'srv1');
      expect(await converged(lab.site, 600)).toBe(600);
      const after = (await agentStatus(lab.site, 'lb1')).replication.keepers.find((k) => k.name === 'srv1')!;
      expect(after).toMatchObject({ state: 'up', backlog: 0, dropped: 0 });
      expect(after.failures).toBeGreaterThan(0);
      await Promise.all([first.stop(), second.stop()]);
    });
  }, 240_000);

  it('a keeper down longer than the backlog bound is resynchronised when it is back', async () => {
    await withLab({ prefix: 'vtrep', configure: failoverLab({ replication: { backlog: 50 } }) }, async (lab) => {
      await killKeeper(lab.site, 'srv1');
      const run = lab.traffic({ address: VIP1, port: 7, connections: 300, intervalMs: 50 });
      await run.established;
      await waitFor('the backlog to overflow', async () => ((await agentStatus(lab.site, 'lb1')).replication.keepers.find((k) => k.name === 'srv1')?.dropped ?? 0) > 0, 15_000);
      await startKeeper(lab.site, 'srv1');
      expect(await converged(lab.site, 300)).toBe(300);
      const srv1 = (await agentStatus(lab.site, 'lb1')).replication.keepers.find((k) => k.name === 'srv1')!;
      expect(srv1.resyncs).toBeGreaterThanOrEqual(2); // at start, and after the overflow
      await run.stop();
    });
  }, 240_000);

  it('an event overrun (ENOBUFS on a tiny receive buffer) resynchronises and loses nothing', async () => {
    await withLab({ prefix: 'vtrep', configure: failoverLab({ replication: { receiveBufferBytes: 4096 } }) }, async (lab) => {
      const run = lab.traffic({ address: VIP1, port: 7, connections: 1000, intervalMs: 100 });
      await run.established;
      expect(await converged(lab.site, 1000)).toBe(1000);
      const status = (await agentStatus(lab.site, 'lb1')).replication;
      expect(status.overruns).toBeGreaterThan(0);
      expect(status.keepers.find((k) => k.name === 'srv1')!.resyncs).toBeGreaterThanOrEqual(2);
      await run.stop();
    });
  }, 240_000);
});
