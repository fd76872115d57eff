/**
 * Failover from table copies on the real kernel: a lab whose lb2 backs lb1 up,
 * live echo connections through vip1 (dnat) and vip4 (fullnat), and lb1's power cut — every
 * process SIGKILLed, every link down. lb2's VRRP speaker notices the silence, takes the
 * addresses, and the takeover installs the keepers' copies; no controller is involved.
 */
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import type { MigrationProgress } from '../../src/migration/migration.js';
import type { TrafficRun, TrafficSummary } from '../../src/lab/traffic.js';
import { type Lab, withLab } from '../helpers/lab.js';
import { type AgentStatus, agentStatus, copiesOf, failoverLab, keeperStatus, powerLoss, waitFor } from './helpers/replication-lab.js';
import { api, startController, writeControllerConfig } from './controller-helpers.js';

const VIP1 = '203.0.113.10';
const VIP4 = '203.0.113.13';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function echo(lab: Lab, address: string, connections: number): TrafficRun {
  return lab.traffic({ address, port: 7, connections, intervalMs: 20, timeoutMs: 10_000 });
}

const errorsOf = (s: TrafficSummary) => Object.values(s.errors).reduce((a, b) => a + b, 0);
const modeOn = (s: AgentStatus, vip: string) => s.vips.find((v) => v.name === vip)?.mode;

/** Cuts lb1's power and waits until lb2 has taken `vips` over; returns lb2's status then. */
async function failOver(lab: Lab, vips: string[]): Promise<AgentStatus> {
  await powerLoss(lab.site, 'lb1');
  let status: AgentStatus | undefined;
  await waitFor(
    `lb2 to take over ${vips.join(', ')}`,
    async () => {
      status = await agentStatus(lab.site, 'lb2');
      return vips.every((v) => modeOn(status!, v) === 'normal');
    },
    20_000,
  );
  return status!;
}

function expectIntact(s: TrafficSummary, connections: number): void {
  expect(s.connections).toMatchObject({ requested: connections, established: connections, ok: connections, failed: 0 });
  expect(errorsOf(s)).toBe(0);
  // Byte-exact: every payload came back as sent (a difference would count as a mismatch).
  expect(s.bytes.echoed).toBe(s.bytes.sent);
  expect(s.messages.echoed).toBe(s.messages.sent);
}

describe('failover from table copies (power loss of lb1)', () => {
  it('the default lab (no setting changed): every connection of vip1 (dnat) and vip4 (fullnat) lives through lb1\'s power loss', async () => {
    await withLab({ prefix: 'vtrepd' }, async (lab) => {
      // A cold start on the defaults: each VIP normal on its owner, held by the other appliance.
      const before = await Promise.all([agentStatus(lab.site, 'lb1'), agentStatus(lab.site, 'lb2')]);
      for (const s of before) expect(s.failover.standby).toBe(true);
      for (const vip of lab.site.vips) {
        expect(before.map((s) => modeOn(s, vip.name)).sort()).toEqual(['migrating', 'normal']);
        expect(modeOn(before[vip.owner === 'lb1' ? 0 : 1]!, vip.name)).toBe('normal');
      }
      const dnat = echo(lab, VIP1, 300);
      const fullnat = echo(lab, VIP4, 300);
      await Promise.all([dnat.established, fullnat.established]);
      await waitFor('copies of all 600 connections on the keepers', async () => {
        const ks = await Promise.all(['srv1', 'srv2', 'srv3'].map((s) => keeperStatus(lab.site, s)));
        return copiesOf(ks[0]!, 'vip1') === 300 && ks.reduce((n, k) => n + copiesOf(k, 'vip4'), 0) === 300;
      }, 15_000);

      const lb2 = await failOver(lab, ['vip1', 'vip4']);
      await sleep(2000);
      const [s1, s4] = await Promise.all([dnat.stop(), fullnat.stop()]);
      expectIntact(s1, 300);
      expectIntact(s4, 300);
      for (const vip of ['vip1', 'vip4']) expect(lb2.vips.find((v) => v.name === vip)?.rejected).toBe(0);
    });
  }, 240_000);

  it('every connection of vip1 (dnat) and vip4 (fullnat) older than the replication interval survives byte-exact', async () => {
    await withLab({ prefix: 'vtrep', configure: failoverLab({ sockdiag: false }) }, async (lab) => {
      const dnat = echo(lab, VIP1, 500);
      const fullnat = echo(lab, VIP4, 500);
      await Promise.all([dnat.established, fullnat.established]);
      // Older than the replication interval (50 ms batches): every copy is on its keeper.
      await waitFor('copies of all 1000 connections on the keepers', async () => {
        const ks = await Promise.all(['srv1', 'srv2', 'srv3'].map((s) => keeperStatus(lab.site, s)));
        return copiesOf(ks[0]!, 'vip1') === 500 && ks.reduce((n, k) => n + copiesOf(k, 'vip4'), 0) === 500;
      }, 15_000);

      const lb2 = await failOver(lab, ['vip1', 'vip4']);
      await sleep(2000);
      const [s1, s4] = await Promise.all([dnat.stop(), fullnat.stop()]);

      expectIntact(s1, 500);
      expectIntact(s4, 500);
      const takeovers = lb2.failover.takeovers.filter((t) => t.vip === 'vip1' || t.vip === 'vip4');
      expect(takeovers.map((t) => t.created).sort()).toEqual([500, 500]);
      // The held packets went on once the copies were in: none was answered with a reset.
      for (const vip of ['vip1', 'vip4']) expect(lb2.vips.find((v) => v.name === vip)?.rejected).toBe(0);
    });
  }, 240_000);

  it('variant 1: with no copy yet, every dnat connection survives from the server\'s socket table', async () => {
    // A replication interval far longer than the connections' age: no copy reaches a keeper.
    await withLab({ prefix: 'vtrep', configure: failoverLab({ sockdiag: true, replication: { batchIntervalMs: 10_000, batchEntries: 100_000, refreshIntervalSeconds: 0 } }) }, async (lab) => {
      const dnat = echo(lab, VIP1, 500);
      await dnat.established;
      await sleep(500);
      expect(copiesOf(await keeperStatus(lab.site, 'srv1'), 'vip1')).toBe(0);

      const lb2 = await failOver(lab, ['vip1']);
      await sleep(2000);
      expectIntact(await dnat.stop(), 500);
      const t = lb2.failover.takeovers.find((x) => x.vip === 'vip1');
      expect(t?.created).toBe(500);
    });
  }, 240_000);

  it('negative control: with replication off, the same power loss breaks the connections', async () => {
    await withLab({ prefix: 'vtrep', configure: failoverLab({ sockdiag: false, replication: { enabled: false } }) }, async (lab) => {
      const dnat = echo(lab, VIP1, 200);
      await dnat.established;
      await sleep(500);
      await failOver(lab, ['vip1']);
      await sleep(2000);
      const s = await dnat.stop();
      expect(s.connections.failed).toBeGreaterThan(0);
      expect(s.errors.reset).toBeGreaterThan(0);
    });
  }, 240_000);

  it('with standbys armed (the default), a planned migration is not taken for a failover, and the source becomes the standby', async () => {
    await withLab({ prefix: 'vtrep', configure: failoverLab({}) }, async (lab) => {
      const dnat = echo(lab, VIP1, 300);
      await dnat.established;
      await sleep(500);
      const out = await promisify(execFile)(process.execPath, [path.resolve('dist/cli.js'), 'migrate', 'vip1', '--to', 'lb2', '--json', '--lab', lab.name]);
      const m = JSON.parse(out.stdout) as MigrationProgress;
      await sleep(1000);
      expectIntact(await dnat.stop(), 300);
      expect(m.state).toBe('done');
      const [lb1, lb2] = await Promise.all([agentStatus(lab.site, 'lb1'), agentStatus(lab.site, 'lb2')]);
      // The controller moved the entries; lb2's speaker claiming vip1 started no takeover.
      expect(lb2.failover.takeovers.filter((t) => t.vip === 'vip1')).toEqual([]);
      expect(modeOn(lb2, 'vip1')).toBe('normal');
      expect(lb2.replication.vips).toContain('vip1');
      // lb1 forgot vip1 and holds it again, ready to take it back.
      expect(modeOn(lb1, 'vip1')).toBe('migrating');
      expect(lb1.replication.vips).not.toContain('vip1');
    });
  }, 240_000);

  it("the source's power is cut mid-migration, its address given up: the target, master by VRRP, takes the VIP over at the abort, every connection lives", async () => {
    await withLab({ prefix: 'vtrepx', controller: false, configure: failoverLab({}) }, async (lab) => {
      // Paused in step 2 (lb1 has released vip1's address) long enough to cut lb1's power there.
      const config = writeControllerConfig(lab, { rebalance: { mode: 'manual' }, migration: { stepTimeoutMs: 3000 } });
      const ctl = await startController(lab, config, { VIPSHIFT_TEST_PAUSE_STEP: 'move_address:3000' });
      const client = api(lab);
      try {
        // Replies wait out the give-back's request to the dead source (30 s): a long patience.
        const dnat = lab.traffic({ address: VIP1, port: 7, connections: 100, intervalMs: 50, timeoutMs: 60_000 });
        await dnat.established;
        await waitFor('copies of the 100 connections on srv1', async () => copiesOf(await keeperStatus(lab.site, 'srv1'), 'vip1') >= 100, 10_000);
        const started = await client.post<MigrationProgress>('/v1/migrations', { vip: 'vip1', to: 'lb2' });
        await waitFor('the migration to reach step 2', async () => (await client.get<MigrationProgress>(`/v1/migrations/${started.id}`)).step === 'move_address', 10_000, 20);
        await powerLoss(lab.site, 'lb1');
        let lb2: AgentStatus | undefined;
        await waitFor('lb2 to serve vip1', async () => modeOn((lb2 = await agentStatus(lab.site, 'lb2')), 'vip1') === 'normal', 60_000, 250);
        const served = performance.now();
        // The give-back first waits out its last request to the dead source (ending its change
        // journal, ~15 s), then the controller's next recovery finds lb2 serving vip1 and gives
        // nothing back.
        let m: MigrationProgress | undefined;
        await waitFor('the migration to end', async () => (m = await client.get<MigrationProgress>(`/v1/migrations/${started.id}`)).state !== 'running', 60_000, 250);
        // TCP backed off through the ~33 s outage: a connection's next retransmission may come
        // up to ~26 s after lb2 took over (RTO doubling from 200 ms). Every one has resumed by then.
        await sleep(Math.max(2000, served + 30_000 - performance.now()));
        const s = await dnat.stop();
        // The migration could not give the VIP back to a dead source, and says so.
        expect(m!.state, JSON.stringify(m)).toBe('aborted');
        expect(m!.error).toMatch(/recovering failed too/);
        // lb2 took vip1 over (from srv1's keeper: lb1 is gone), and not one connection was lost.
        expect(lb2!.failover.takeovers.filter((t) => t.vip === 'vip1').map((t) => t.outcome)).toEqual(['activated']);
        expectIntact(s, 100);
        console.log(JSON.stringify({ migration: { error: m!.error, steps: m!.steps }, gapMs: s.gapMs, takeover: lb2!.failover.takeovers.find((t) => t.vip === 'vip1') }));
      } finally {
        client.close();
        process.kill(ctl.pid, 'SIGTERM');
        await ctl.exited;
      }
    });
  }, 240_000);
});
