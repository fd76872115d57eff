/**
 * An appliance whose VRRP speaker dies stops and exits non-zero, and comes back whole under a
 * supervisor that restarts it as systemd does (Restart=always, here RestartSec=1: systemd is
 * not running on the test machines), holding its VIPs again. The lab's appliances run under
 * that supervisor instead of `lab up`'s plain start. The newest controller epoch it was shown
 * survives the restart: a step of an older epoch is still refused. SIGTERM'd with an idle
 * keep-alive client on its API, it exits 0 at once (its speaker stops with it).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI, credentialsDir } from '../../src/lab/lab.js';
import { run } from '../../src/lab/netns.js';
import { startProcess } from '../../src/lab/processes.js';
import { apiUrl, configPath, host, type Site } from '../../src/lab/site.js';
import { withLab } from '../helpers/lab.js';
import { type AgentStatus, agentStatus, waitFor } from './helpers/replication-lab.js';

const modeOn = (s: AgentStatus, vip: string) => s.vips.find((v) => v.name === vip)?.mode;

/** A POST signed by the lab's controller (`ctl`), from its namespace: '200' or the refusal's status and message. */
async function asController(site: Site, appliance: string, apiPath: string, body: unknown = {}): Promise<string> {
  const dist = path.dirname(CLI);
  const script = `
    const { loadCredentials } = await import(${JSON.stringify(path.join(dist, 'api/auth.js'))});
    const { ApiClient } = await import(${JSON.stringify(path.join(dist, 'api/client.js'))});
    const c = new ApiClient(${JSON.stringify(apiUrl(site.apis.appliances[appliance]!))}, loadCredentials(${JSON.stringify(credentialsDir(site))}, 'ctl'), { peer: ${JSON.stringify(appliance)} });
    await c.post(${JSON.stringify(apiPath)}, ${JSON.stringify(body)}).then(() => console.log('200'), (e) => console.log(e.status + ' ' + e.message));
    c.close();`;
  const r = await run('ip', ['netns', 'exec', host(site, 'ctl').namespace, process.execPath, '--input-type=module', '-e', script]);
  return r.stdout.trim() || r.stderr.trim();
}

describe('an appliance whose speaker dies', () => {
  it('exits non-zero, is restarted, and holds its VIPs again', async () => {
    await withLab({ prefix: 'vtrst', appliances: false, controller: false }, async (lab) => {
      const { site } = lab;
      const exits = path.join(site.stateDir, 'exits');
      // The supervisor: start, note how it ended, start again a second later, forever.
      for (const a of ['lb1', 'lb2']) {
        const command = `${process.execPath} ${CLI} appliance --config ${configPath(site, a)} --credentials ${credentialsDir(site)}`;
        startProcess({ name: `${a}-supervised`, namespace: host(site, a).namespace, command: ['bash', '-c', `while :; do ${command}; echo "${a} $?" >> ${exits}; sleep 1; done`], logDir: site.stateDir });
      }
      const serving = async () => {
        const [lb1, lb2] = await Promise.all([agentStatus(site, 'lb1'), agentStatus(site, 'lb2')]);
        return site.vips.every((v) => [lb1, lb2].filter((s) => modeOn(s, v.name) === 'normal').length === 1) && [lb1, lb2].every((s) => s.vips.every((v) => v.mode !== 'absent'));
      };
      await waitFor('both appliances serving, each VIP normal on one and held by the other', () => serving().catch(() => false), 30_000, 250);
      expect(modeOn(await agentStatus(site, 'lb1'), 'vip1')).toBe('normal');
      // A leader of epoch 42 shows itself to lb1 (as a newly elected controller on etcd does).
      expect(await asController(site, 'lb1', '/v1/controller/epoch?epoch=42')).toBe('200');

      // SIGKILL lb1's speaker (the child running `vrrp --control`).
      const pids = (await run('ip', ['netns', 'pids', host(site, 'lb1').namespace])).stdout.split(/\s+/).filter(Boolean);
      const speakers = pids.filter((pid) => {
        const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        return cmd.includes('vrrp') && cmd.includes('--control');
      });
      expect(speakers).toHaveLength(1);
      process.kill(Number(speakers[0]), 'SIGKILL');

      await waitFor('lb1 to exit', async () => fs.existsSync(exits), 20_000, 100);
      expect(fs.readFileSync(exits, 'utf8').trim().split('\n')).toEqual(['lb1 1']);
      // Restarted: answering again with a speaker of its own, every VIP served by exactly one
      // appliance and held by the other (lb2 took lb1's over meanwhile: no preemption back).
      const speaking = async () => (await agentStatus(site, 'lb1')).vrrp.every((i) => i.state === 'backup' || i.state === 'master');
      await waitFor('lb1 back, its speaker past its start, every VIP served once and held by the other', async () => (await speaking().catch(() => false)) && serving().catch(() => false), 40_000, 250);
      const lb1 = await agentStatus(site, 'lb1');
      expect(lb1.vrrp.length).toBe(site.vips.length * 2);
      expect(lb1.failover.standby).toBe(true);
      // The epoch outlived the restart: a deposed leader's step (epoch 41) is refused.
      expect((lb1 as AgentStatus & { controllerEpoch?: { newest: number } }).controllerEpoch?.newest).toBe(42);
      expect(await asController(site, 'lb1', '/v1/vips/vip1/abort?epoch=41')).toMatch(/^409 .*controller epoch 41 is older than 42/);
      expect(fs.readFileSync(exits, 'utf8').trim().split('\n')).toEqual(['lb1 1']);

      // SIGTERM, with a client holding an idle keep-alive connection to its API (and lb2's
      // own): it stops, its speaker too, and exits 0 promptly.
      const holder = spawn('ip', ['netns', 'exec', host(site, 'ctl').namespace, process.execPath, '--input-type=module', '-e', `
        const { loadCredentials } = await import(${JSON.stringify(path.join(path.dirname(CLI), 'api/auth.js'))});
        const { ApiClient } = await import(${JSON.stringify(path.join(path.dirname(CLI), 'api/client.js'))});
        const c = new ApiClient(${JSON.stringify(apiUrl(site.apis.appliances.lb1!))}, loadCredentials(${JSON.stringify(credentialsDir(site))}, 'ctl'), { peer: 'lb1' });
        await c.get('/v1/status');
        console.log('held');
        setTimeout(() => c.close(), 30_000);`]);
      try {
        await new Promise<void>((resolve, reject) => {
          holder.stdout.on('data', (d: Buffer) => d.toString().includes('held') && resolve());
          holder.once('exit', (code) => reject(new Error(`the keep-alive client ended (${code})`)));
        });
        const held = await run('ip', ['netns', 'exec', host(site, 'lb1').namespace, 'ss', '-Htn', 'state', 'established', 'sport', '=', `${site.apis.appliances.lb1!.port}`]);
        expect(held.stdout.trim().split('\n').length).toBeGreaterThanOrEqual(1);
        const appliance = (await run('ip', ['netns', 'pids', host(site, 'lb1').namespace])).stdout.split(/\s+/).filter(Boolean).filter((pid) => {
          const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
          return cmd.includes('appliance') && cmd.includes(CLI);
        });
        expect(appliance).toHaveLength(1);
        const t0 = Date.now();
        process.kill(Number(appliance[0]), 'SIGTERM');
        // Under the 5 s after which the appliance kills a speaker that does not stop by itself.
        await waitFor('lb1 to exit after SIGTERM', async () => fs.readFileSync(exits, 'utf8').trim().split('\n').length === 2, 4_000, 50);
        const exitMs = Date.now() - t0;
        expect(fs.readFileSync(exits, 'utf8').trim().split('\n')).toEqual(['lb1 1', 'lb1 0']);
        console.log(`lb1 exited ${exitMs} ms after SIGTERM, an idle keep-alive client holding its API`);
      } finally {
        holder.kill();
      }
    });
  }, 120_000);
});
