/**
 * Health checks on the real kernel: the lab's fullnat vip4 (srv1, srv2, srv3) and dnat vip1
 * (srv1) under a steady stream of new HTTP connections. srv1's service is stopped, then
 * started again; srv2 is blackholed, then mended. Each time the backend leaves the pool within
 * fall × inter (+ the timeout when it went silent), from then on no new connection to vip4
 * fails or reaches it, and it comes back after rise. The standby appliance (lb2) checks the
 * same backends. Needs root and a build (dist/cli.js).
 */
import { describe, expect, it } from 'vitest';
import { agentStatus } from './helpers/replication-lab.js';
import { blackhole, pooledAt, probe, startService, stopService, waitForTransition, withCheck, type Probe } from './helpers/health-lab.js';
import { withLab } from '../helpers/lab.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const CHECK = { inter: 500, timeout: 300, rise: 2, fall: 3 };
// Generous: the machine is shared and loaded; the benchmark, not this test, judges speed.
const MARGIN_MS = 1500;
const VIP1 = '203.0.113.10';
const VIP4 = '203.0.113.13';

describe('health checks', () => {
  it('take a stopped or blackholed backend out of the pool and bring it back', async () => {
    await withLab({ prefix: 'vthc', configure: { appliance: withCheck(CHECK) } }, async (lab) => {
      const site = lab.site;
      await sleep(1500);
      const load = probe(site, [VIP4, VIP1], 50);
      try {
        await sleep(1000);

        // 1. srv1's service stops: connections to it are refused.
        const stoppedAt = Date.now();
        await stopService(site, 'srv1');
        const down4 = await waitForTransition(site, 'lb1', { msg: 'backend down', vip: 'vip4', backend: '198.18.0.101:7' }, stoppedAt, 10_000);
        expect(down4.time - stoppedAt).toBeLessThanOrEqual(CHECK.fall * CHECK.inter + MARGIN_MS);
        expect(down4.reason).toMatch(/^3 failed checks: connect refused/);
        const down1 = await waitForTransition(site, 'lb1', { msg: 'backend down', vip: 'vip1', backend: '198.18.0.101:7' }, stoppedAt, 5000);
        // lb2 stands by for vip4 and checks it too.
        await waitForTransition(site, 'lb2', { msg: 'backend down', vip: 'vip4', backend: '198.18.0.101:7' }, stoppedAt, 5000);
        const lb1 = await agentStatus(site, 'lb1');
        const srv1 = lb1.vips.find((v) => v.name === 'vip4')!.backends.find((b) => b.address === '198.18.0.101')!;
        expect(srv1).toMatchObject({ state: 'down', check: { type: 'tcp', state: 'down', checkPort: 7 } });
        expect(srv1.check!.lastCheck!.reason).toBe('connect refused');
        await sleep(1500);

        const startedAt = Date.now();
        await startService(site, 'srv1');
        // Counted from when it listens again: a node process starts slowly on a loaded machine.
        const listeningAt = Date.now();
        const up4 = await waitForTransition(site, 'lb1', { msg: 'backend up', vip: 'vip4', backend: '198.18.0.101:7' }, startedAt, 10_000);
        expect(up4.time - listeningAt).toBeLessThanOrEqual(CHECK.rise * CHECK.inter + MARGIN_MS);
        const up1 = await waitForTransition(site, 'lb1', { msg: 'backend up', vip: 'vip1', backend: '198.18.0.101:7' }, startedAt, 5000);
        await sleep(1500);

        // 2. srv2 is blackholed: nothing answers, the checks time out.
        const silencedAt = Date.now();
        await blackhole(site, 'srv2', true);
        const down2 = await waitForTransition(site, 'lb1', { msg: 'backend down', vip: 'vip4', backend: '198.18.0.102:7' }, silencedAt, 10_000);
        expect(down2.time - silencedAt).toBeLessThanOrEqual(CHECK.fall * CHECK.inter + CHECK.timeout + MARGIN_MS);
        expect(down2.reason).toBe(`3 failed checks: no answer in ${CHECK.timeout} ms`);
        await sleep(1500);
        const mendedAt = Date.now();
        await blackhole(site, 'srv2', false);
        const up2 = await waitForTransition(site, 'lb1', { msg: 'backend up', vip: 'vip4', backend: '198.18.0.102:7' }, mendedAt, 10_000);
        expect(up2.time - mendedAt).toBeLessThanOrEqual(CHECK.rise * CHECK.inter + MARGIN_MS);
        await sleep(1000);

        const probes = await load.stop();
        const vip4 = probes.filter((p) => p.vip === VIP4);
        const between = (p: Probe, from: number, to: number) => p.at >= from && p.at < to;
        // From the pool change on (the `backend down` line is written after it) until the
        // backend is back, every new vip4 connection succeeds, and elsewhere. A probe is
        // opened after its `at`, so none of these sent its SYN before the change.
        for (const [out, back, server] of [
          [down4.time, pooledAt(up4), 'srv1'],
          [down2.time, pooledAt(up2), 'srv2'],
        ] as const) {
          const during = vip4.filter((p) => between(p, out, back));
          expect(during.length).toBeGreaterThan(10);
          expect(during.filter((p) => !p.ok)).toEqual([]);
          expect(during.filter((p) => p.server === server)).toEqual([]);
        }
        // The blackholed backend's unanswered SYNs: their entries go with it (by the end of
        // the change: the line's time), so a client's retransmitted SYN, 1 s after the first,
        // is a new connection and meets the new pool. Every vip4 connection opened under the
        // old pool less than 900 ms before that succeeded, those that had met srv2 a
        // retransmission late (round robin: one in three of them).
        const late = vip4.filter((p) => between(p, down2.time - 900, down2.time - (down2.applyMs ?? 0)));
        expect(late.filter((p) => !p.ok || p.server === 'srv2')).toEqual([]);
        if (late.length >= 3) expect(late.filter((p) => p.ms >= 900).length).toBeGreaterThan(0);
        // Back in the pool: it serves again.
        expect(vip4.filter((p) => p.at > up2.time + 200 && p.server === 'srv2').length).toBeGreaterThan(0);
        expect(vip4.filter((p) => p.at > up4.time + 200 && p.at < silencedAt && p.server === 'srv1').length).toBeGreaterThan(0);
        // vip1 (dnat) had only srv1: while it was out, new connections got a reset at once.
        const vip1Out = probes.filter((p) => p.vip === VIP1 && between(p, down1.time + 200, pooledAt(up1)));
        expect(vip1Out.length).toBeGreaterThan(10);
        // (a reset answering the SYN is ECONNREFUSED to the client)
        expect(vip1Out.filter((p) => p.ok || p.error !== 'ECONNREFUSED' || p.ms >= 1000)).toEqual([]);
        const vip1Back = probes.filter((p) => p.vip === VIP1 && p.at > up1.time + 200);
        expect(vip1Back.length).toBeGreaterThan(10);
        expect(vip1Back.filter((p) => !p.ok || p.server !== 'srv1')).toEqual([]);
      } finally {
        await load.stop().catch(() => undefined);
      }
    });
  }, 120_000);
});
