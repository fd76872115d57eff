/**
 * The journal on the real kernel: the controller is SIGKILLed in the middle of the pre-copy and
 * of each of the four steps of a migration (VIPSHIFT_TEST_PAUSE_STEP holds it there) while 60 connections talk to
 * the VIP, and started again. Every connection must live on (no reset, no failure: a stall
 * while the VIP has no owner is allowed, TCP retransmits) and the VIP must end `normal` on
 * exactly one appliance, the one the recovery rule says.
 */
import { describe, expect, it } from 'vitest';
import type { MigrationProgress, Phase } from '../../src/migration/migration.js';
import { withLab } from '../helpers/lab.js';
import { api, modesOf, siteStatus, sleep, startController, writeControllerConfig } from './controller-helpers.js';

/** A restarted controller ends an interrupted migration within this (its first try, or the poll after: statistics every 1 s). */
const RECOVERY_BOUND_MS = 15_000;

const errorsOf = (e: Record<string, number>) => Object.values(e).reduce((a, b) => a + b, 0);

describe('controller killed during a migration', () => {
  it('recovers in every step: connections alive, each VIP owned by exactly one appliance', async () => {
    await withLab({ prefix: 'vtctl', controller: false }, async (lab) => {
      const config = writeControllerConfig(lab, {
        rebalance: { mode: 'manual' },
        // The pause counts against the step timeout.
        migration: { stepTimeoutMs: 60_000 },
        statistics: { intervalSeconds: 1 },
      });
      const vip1 = lab.info.vips.find((v) => v.name === 'vip1')!;
      // A timeline of kills and of connection errors as they appear, for the failure message.
      const timeline: string[] = [];
      const t0 = Date.now();
      const mark = (what: string) => timeline.push(`${((Date.now() - t0) / 1000).toFixed(2)} s ${what}`);
      let lastErrors = 0;
      const traffic = lab.traffic({ address: vip1.address, port: 7, connections: 60, intervalMs: 50, timeoutMs: 20_000, progressMs: 250 }, (p) => {
        const n = errorsOf(p.errors);
        if (n !== lastErrors) mark(`connection errors ${JSON.stringify(p.errors)}`);
        lastErrors = n;
      });
      await traffic.established;
      // Step → who owns vip1 after the restart: before the commit point it goes back.
      const rules: [Phase, 'back' | 'forward'][] = [
        ['precopy', 'back'],
        ['prepare', 'back'],
        ['move_address', 'back'],
        ['move_entries', 'back'],
        ['activate', 'forward'],
      ];
      const report: string[] = [];
      let before = 'lb1';
      for (const [step, outcome] of rules) {
        const target = before === 'lb1' ? 'lb2' : 'lb1';
        const ctl = await startController(lab, config, { VIPSHIFT_TEST_PAUSE_STEP: `${step}:60000` });
        const started = await api(lab).post<MigrationProgress>('/v1/migrations', { vip: 'vip1', to: target });
        for (let i = 0; ; i++) {
          const m = await api(lab).get<MigrationProgress>(`/v1/migrations/${started.id}`);
          if (m.step === step) break;
          if (i > 200) throw new Error(`migration never reached ${step}: ${JSON.stringify(m)}`);
          await sleep(20);
        }
        await sleep(500); // into the pause, after the step's first action
        mark(`SIGKILL in ${step}`);
        process.kill(ctl.pid, 'SIGKILL');
        await ctl.exited;
        await sleep(500); // the site runs without a controller
        const t1 = Date.now();
        const again = await startController(lab, config);
        const restartMs = Date.now() - t1;
        mark(`restarted in ${restartMs} ms`);
        // The API answers before the recovery has ended it (an appliance may answer late):
        // the site is judged once the journal says how it ended.
        let m = await api(lab).get<MigrationProgress>(`/v1/migrations/${started.id}`);
        while (m.state === 'running' && Date.now() - t1 < RECOVERY_BOUND_MS) {
          await sleep(100);
          m = await api(lab).get<MigrationProgress>(`/v1/migrations/${started.id}`);
        }
        const recoveredMs = Date.now() - t1;
        mark(`migration ${m.state} ${recoveredMs} ms after the restart began`);
        const site = await siteStatus(lab);
        const owner = outcome === 'back' ? before : target;
        expect(m.state, `${step}: ${m.error}`).toBe(outcome === 'back' ? 'aborted' : 'done');
        expect(site.vips.find((v) => v.name === 'vip1')?.owner).toBe(owner);
        expect(modesOf(site, 'vip1')).toEqual({ [owner]: 'normal' });
        // Exactly one table: the other appliance keeps none of vip1's entries, pre-copied or imported.
        const other = owner === 'lb1' ? 'lb2' : 'lb1';
        expect(site.appliances.find((a) => a.name === other)?.vips.find((v) => v.name === 'vip1')?.entries, `${step}: ${other}'s entries`).toBe(0);
        for (const v of ['vip2', 'vip3', 'vip4']) expect(Object.values(modesOf(site, v)), v).toEqual(['normal']);
        report.push(`${step}: ${m.state}, owner ${owner}, controller restarted in ${restartMs} ms, migration ended ${recoveredMs} ms after`);
        before = owner;
        process.kill(again.pid, 'SIGTERM');
        await again.exited;
      }
      await sleep(2000);
      const summary = await traffic.stop();
      console.log(`${report.join('\n')}\nlongest stall ${summary.gapMs.max} ms`);
      expect(summary.connections, `${JSON.stringify(summary.errorCodes)}\n${timeline.join('\n')}`).toMatchObject({ requested: 60, established: 60, ok: 60, failed: 0 });
      expect(errorsOf(summary.errors)).toBe(0);
      expect(summary.bytes.echoed).toBe(summary.bytes.sent);
    });
  }, 240_000);
});
