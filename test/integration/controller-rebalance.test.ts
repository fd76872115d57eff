/**
 * Automatic rebalancing on the real kernel: traffic only to vip1 and vip2, both on lb1, over
 * live connections. The controller must move one of them to lb2 by itself with no connection
 * error, then keep still under the same load.
 *
 * Time scale: production defaults poll every 5 s, plan every 30 s with a 300 s cool-down, and
 * the issue asks for no flapping over a further minute (two plan rounds, well inside one
 * cool-down). The test polls every 1 s, plans every 2 s and cools down for only 5 s, then
 * watches 20 s: 10 plan rounds, 20 polls, the cool-down expiring 3 times over — so what keeps
 * the VIPs still is the hysteresis (threshold, smoothing) and not the cool-down alone, a
 * stricter test than a minute at the default scale, in a third of the time.
 *
 * Also here (same lab): forged requests to the controller — no credentials, a key of another
 * cluster, a replayed capture — are refused and no VIP moves; and a backend change made while
 * lb2's agent refuses connections reaches lb2 (and its file) once its poll answers again.
 */
import { request } from 'node:http';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createClusterCredentials, loadCredentials, sha256Hex, signRequest, type Credentials } from '../../src/api/auth.js';
import type { MigrationProgress } from '../../src/migration/migration.js';
import { credentialsDir } from '../../src/lab/lab.js';
import { configPath } from '../../src/lab/site.js';
import { parseApplianceConfig } from '../../src/config/appliance.js';
import { withLab, type Lab } from '../helpers/lab.js';
import { api, modesOf, siteStatus, sleep, startController, writeControllerConfig } from './controller-helpers.js';

const errorsOf = (e: Record<string, number>) => Object.values(e).reduce((a, b) => a + b, 0);

/** A raw request to the controller's local socket with exactly these headers. */
function raw(lab: Lab, method: string, target: string, headers: Record<string, string>, body: Buffer): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath: path.join(lab.site.stateDir, 'controller.sock'), method, path: target, headers: { ...headers, 'content-type': 'application/json', 'content-length': String(body.length) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const signed = (creds: Credentials, body: Buffer) => signRequest(creds, { method: 'POST', path: '/v1/migrations', audience: 'ctl', contentSha256: sha256Hex(body) });

describe('the controller rebalances by itself', () => {
  it('moves vip1 or vip2 to lb2 under live connections, zero errors, then no flapping; forged requests move nothing', async () => {
    await withLab({ prefix: 'vtctl', controller: false }, async (lab) => {
      const config = writeControllerConfig(lab, {
        statistics: { intervalSeconds: 1, downAfterPolls: 3, smoothing: 0.5 },
        rebalance: { mode: 'auto', load: 'packets', threshold: 0.25, coolDownSeconds: 5, intervalSeconds: 2, maxConcurrent: 1, minLoad: 100 },
      });
      const controller = await startController(lab, config);
      const address = (vip: string) => lab.info.vips.find((v) => v.name === vip)!.address;
      const t1 = lab.traffic({ address: address('vip1'), port: 7, connections: 40, intervalMs: 20, timeoutMs: 5000 });
      const t2 = lab.traffic({ address: address('vip2'), port: 7, connections: 40, intervalMs: 20, timeoutMs: 5000 });
      await Promise.all([t1.established, t2.established]);

      const t0 = Date.now();
      let moved: MigrationProgress | undefined;
      while (!moved && Date.now() - t0 < 30_000) {
        await sleep(500);
        moved = (await api(lab).get<MigrationProgress[]>('/v1/migrations')).find((m) => m.state === 'done');
      }
      expect(moved, 'the controller moved nothing within 30 s').toBeDefined();
      const reactionMs = Date.now() - t0;
      expect(['vip1', 'vip2']).toContain(moved!.vip);
      expect(moved).toMatchObject({ from: 'lb1', to: 'lb2' });

      // Steady load: watch for 20 s (see the time scale above).
      await sleep(20_000);
      const migrations = await api(lab).get<MigrationProgress[]>('/v1/migrations');
      expect(migrations.map((m) => `${m.vip} ${m.from}→${m.to} ${m.state}`)).toEqual([`${moved!.vip} lb1→lb2 done`]);
      const plan = await api(lab).get<{ moves: unknown[]; imbalance: { before: number } }>('/v1/plan');
      expect(plan.moves).toEqual([]);

      // Forged requests: the other VIP must stay on lb1.
      const other = moved!.vip === 'vip1' ? 'vip2' : 'vip1';
      const body = Buffer.from(JSON.stringify({ vip: other, to: 'lb2', wait: true }));
      const elsewhere = mkdtempSync(path.join(tmpdir(), 'vipshift-forger-'));
      try {
        createClusterCredentials(path.join(elsewhere, 'pki'), { admin: 'admin', ctl: 'controller' });
        const forger = loadCredentials(path.join(elsewhere, 'pki'), 'admin');
        expect((await raw(lab, 'POST', '/v1/migrations', {}, body)).status).toBe(401);
        expect((await raw(lab, 'POST', '/v1/migrations', signed(forger, body), body)).status).toBe(401);
        // A genuine admin request (a drill that aborts at step 1), captured: replayed as is, or
        // with its body swapped for a real move, it is refused.
        const admin = loadCredentials(credentialsDir(lab.site), 'admin');
        const drill = Buffer.from(JSON.stringify({ vip: other, to: 'lb2', wait: true, abortAt: 'prepare' }));
        const captured = signed(admin, drill);
        const first = await raw(lab, 'POST', '/v1/migrations', captured, drill);
        expect(first.status).toBe(200);
        expect(JSON.parse(first.body)).toMatchObject({ state: 'aborted' });
        expect((await raw(lab, 'POST', '/v1/migrations', captured, drill)).status).toBe(401);
        expect((await raw(lab, 'POST', '/v1/migrations', captured, body)).status).toBe(401);
      } finally {
        rmSync(elsewhere, { recursive: true, force: true });
      }
      const site = await siteStatus(lab);
      expect(site.vips.find((v) => v.name === other)?.owner).toBe('lb1');
      expect(modesOf(site, other)).toEqual({ lb1: 'normal' });
      expect(modesOf(site, moved!.vip)).toEqual({ lb2: 'normal' });

      const [s1, s2] = await Promise.all([t1.stop(), t2.stop()]);
      for (const s of [s1, s2]) {
        expect(s.connections, `${s.target.address}: ${JSON.stringify(s.errors)} ${JSON.stringify(s.errorCodes)}; migrations ${JSON.stringify(migrations)}`).toMatchObject({ requested: 40, established: 40, ok: 40, failed: 0 });
        expect(errorsOf(s.errors)).toBe(0);
        expect(s.bytes.echoed).toBe(s.bytes.sent);
      }
      const after = site.vips.filter((v) => v.name === 'vip1' || v.name === 'vip2').map((v) => `${v.name} ${v.traffic?.packetsPerSecond.toFixed(0)} packets/s`);
      console.log(`moved ${moved!.vip} after ${reactionMs} ms (migration ${moved!.totalMs} ms); ${after.join(', ')}; imbalance now ${(plan.imbalance.before * 100).toFixed(1)} %; longest stall ${Math.max(s1.gapMs.max, s2.gapMs.max)} ms`);

      // A backend change while lb2's agent refuses connections reaches lb2 at its first poll back.
      const agentPort = new URL(lab.info.appliances.find((a) => a.name === 'lb2')!.api).port;
      const refuse = await lab.exec('lb2', ['nft', '-f', '-'], `table inet vtcut {\n chain in { type filter hook input priority 0; tcp dport ${agentPort} reject with tcp reset; }\n}\n`);
      expect(refuse.code, refuse.stderr).toBe(0);
      const weightOn = async (appliance: string, address: string) =>
        (await siteStatus(lab)).appliances.find((a) => a.name === appliance)?.vips.find((v) => v.name === 'vip4')?.backends.find((b) => b.address === address)?.weight;
      const backend = (await siteStatus(lab)).appliances.find((a) => a.name === 'lb1')!.vips.find((v) => v.name === 'vip4')!.backends.at(-1)!.address;
      const change = await api(lab).post<{ appliances: { appliance: string; ok: boolean }[] }>('/v1/vips/vip4/backends', { action: 'weight', address: backend, weight: 5 });
      expect(change.appliances.map((o) => [o.appliance, o.ok])).toEqual([['lb1', true], ['lb2', false]]);
      expect(await weightOn('lb1', backend)).toBe(5);
      const back = await lab.exec('lb2', ['nft', 'delete', 'table', 'inet', 'vtcut']);
      expect(back.code, back.stderr).toBe(0);
      const tBack = Date.now();
      while ((await weightOn('lb2', backend)) !== 5 && Date.now() - tBack < 15_000) await sleep(250);
      const said = () => readFileSync(controller.log, 'utf8').split('\n').filter((l) => /backend|replay/.test(l)).slice(-10).join('\n');
      expect(await weightOn('lb2', backend), `lb2 did not get the change within 15 s of answering again; the controller said:\n${said()}`).toBe(5);
      // Applied there and written to its own file: it runs on it without the controller.
      const file = parseApplianceConfig(readFileSync(configPath(lab.site, 'lb2'), 'utf8'), 'lb2.yaml');
      expect(file.vips.find((v) => v.name === 'vip4')?.backends.find((b) => b.address === backend)?.weight).toBe(5);
      console.log(`lb2 caught up with a backend change ${Date.now() - tBack} ms after its agent answered again`);
    });
  }, 180_000);
});
