/**
 * A keepalived.conf for the lab's lb1 runs as the appliance (`vipshift appliance --keepalived`,
 * a small vipshift file beside it for the agent's management address) and carries the site's
 * traffic: a dnat VIP (one real server) and a pool (three, checked by TCP_CHECK) in VRRPv2
 * with a virtual MAC. `vipshift check` accepts the file first; SIGHUP with a broken file
 * changes nothing. Needs root and a build (dist/cli.js).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI, credentialsDir } from '../../src/lab/lab.js';
import { withLab } from '../helpers/lab.js';

const NO_ERRORS = { connect: 0, reset: 0, timeout: 0, mismatch: 0, closed: 0, other: 0 };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const instance = (name: string, ifname: string, vrid: number, address: string, vmac: boolean) => `vrrp_instance ${name} {
    state MASTER
    interface ${ifname}
    virtual_router_id ${vrid}
    priority 150
    advert_int 1
    ${vmac ? 'use_vmac' : ''}
    virtual_ipaddress {
        ${address}/24
    }
}
`;

const realServer = (address: string) => `    real_server ${address} 7 {
        TCP_CHECK {
            connect_timeout 1
        }
    }
`;

/** lb1 of the lab in keepalived's words: vip1 (srv1) and the pool vip4 (srv1..3), each with its servers' gateway. */
const KEEPALIVED_CONF = `global_defs {
    router_id lb1
}
vrrp_sync_group G_vip1 {
    group {
        VI_vip1_ext
        VI_vip1_int
    }
}
vrrp_sync_group G_vip4 {
    group {
        VI_vip4_ext
        VI_vip4_int
    }
}
${instance('VI_vip1_ext', 'ext0', 1, '203.0.113.10', true)}${instance('VI_vip1_int', 'int0', 101, '198.18.0.10', false)}${instance('VI_vip4_ext', 'ext0', 4, '203.0.113.13', true)}${instance('VI_vip4_int', 'int0', 104, '198.18.0.13', false)}
virtual_server 203.0.113.10 7 {
    delay_loop 1
    lb_algo rr
    lb_kind NAT
    protocol TCP
${realServer('198.18.0.101')}}
virtual_server 203.0.113.13 7 {
    delay_loop 1
    lb_algo rr
    lb_kind NAT
    protocol TCP
${realServer('198.18.0.101')}${realServer('198.18.0.102')}${realServer('198.18.0.103')}}
`;

describe('keepalived.conf runs as the appliance', () => {
  it('vipshift check accepts it; the appliance runs it and carries traffic to the dnat VIP and the pool; SIGHUP with a broken file changes nothing', async () => {
    await withLab({ prefix: 'vtkpa', appliances: false, controller: false, keepers: false }, async (lab) => {
      const dir = lab.site.stateDir;
      const conf = join(dir, 'lb1-keepalived.conf');
      const overlay = join(dir, 'lb1-overlay.yaml');
      writeFileSync(conf, KEEPALIVED_CONF);
      // What keepalived cannot say: the agent listens on the management network.
      writeFileSync(overlay, 'api:\n  listen: 192.0.2.11:8441\n');

      const check = await lab.exec('lb1', [process.execPath, CLI, 'check', '--keepalived', conf, '--config', overlay]);
      expect(check.stderr).toMatch(/already routes through another VIP's inside address, so this one is fullnat/);
      expect(check.stdout).toBe(`${conf}: OK: appliance lb1, 2 VIPs with 4 backends, 4 VRRP instances in 2 sync groups, API 192.0.2.11:8441 (1 warning)\n`);
      expect(check.code).toBe(0);

      const logs: string[] = [];
      const child: ChildProcess = spawn('ip', ['netns', 'exec', lab.ns('lb1'), process.execPath, CLI, 'appliance', '--keepalived', conf, '--config', overlay, '--credentials', credentialsDir(lab.site)], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stdout?.on('data', (d: Buffer) => logs.push(d.toString()));
      child.stderr?.on('data', (d: Buffer) => logs.push(d.toString()));
      try {
        for (let t = 0; !logs.join('').includes('appliance ready'); t += 100) {
          if (t > 20_000 || child.exitCode !== null) throw new Error(`the appliance did not start:\n${logs.join('')}`);
          await sleep(100);
        }
        // The VIPs answer from the virtual MAC; the checks have brought the backends up.
        const links = await lab.exec('lb1', ['ip', '-br', 'link', 'show', 'vrrp.1']);
        expect(links.stdout).toContain('00:00:5e:00:01:01');
        await sleep(2500);

        const dnat = lab.traffic({ address: '203.0.113.10', port: 7, connections: 20, intervalMs: 20, durationMs: 2000 });
        const pool = lab.traffic({ address: '203.0.113.13', port: 7, connections: 30, intervalMs: 20, durationMs: 2000 });
        await sleep(500);
        // A broken file on SIGHUP: said so, nothing changes, the traffic goes on.
        writeFileSync(conf, KEEPALIVED_CONF.replace('priority 150', 'priority 300'));
        child.kill('SIGHUP');
        const [d, p] = await Promise.all([dnat.done, pool.done]);
        expect(d.errors).toEqual(NO_ERRORS);
        expect(d.connections.ok).toBe(20);
        expect(p.errors).toEqual(NO_ERRORS);
        expect(p.connections.ok).toBe(30);
        expect(d.messages.echoed).toBeGreaterThan(20 * 50);
        expect(logs.join('')).toMatch(/priority 300 is outside 1-255.*SIGHUP: configuration refused; nothing changed/);
        // The pool's connections were spread over its three servers (the reply direction of each entry).
        const entries = await lab.exec('lb1', ['conntrack', '-L', '-p', 'tcp', '--orig-dst', '203.0.113.13']);
        const servers = new Set([...entries.stdout.matchAll(/src=(198\.18\.0\.10[1-3]) /g)].map((m) => m[1]));
        expect([...servers].sort()).toEqual(['198.18.0.101', '198.18.0.102', '198.18.0.103']);
      } finally {
        // SIGTERM gives the VIPs up; whatever is left, lab down kills with the namespace.
        child.kill('SIGTERM');
        await Promise.race([new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r))), sleep(5000)]);
        child.kill('SIGKILL');
      }
    });
  }, 120_000);
});
