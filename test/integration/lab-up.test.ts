/**
 * `lab up` on the real kernel: the namespaces hold the site's addresses and routes, the lab
 * is sealed off from the host, the segments carry traffic where they should (and only there),
 * and the servers' service answers. Needs root and a build (dist/cli.js).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, type UpResult, labDown, labUp, reapAbandonedLabs, registeredCommands, siteFor } from '../../src/lab/lab.js';
import { run } from '../../src/lab/netns.js';
import { type Site, apiUrl, host, labInfo } from '../../src/lab/site.js';
import { startTraffic } from '../../src/lab/traffic.js';
import { uniqueLabName } from '../helpers/lab.js';

const PREFIX = 'vtlab';
let name: string;
let site: Site;
let up: UpResult;

const exec = (hostName: string, command: string[]) => run('ip', ['netns', 'exec', host(site, hostName).namespace, ...command]);
const ping = async (from: string, to: string) => {
  const r = await exec(from, ['ping', '-c', '1', '-W', '1', to]);
  return { ok: r.code === 0, ttl: Number(/ttl=(\d+)/.exec(r.stdout)?.[1]) };
};

beforeAll(async () => {
  await reapAbandonedLabs(PREFIX);
  name = uniqueLabName(PREFIX);
  site = siteFor(name);
  up = await labUp({ name, owned: true });
});

afterAll(async () => {
  if (name) await labDown({ name });
});

describe('lab up', () => {
  it('reports what the site describes, with its services running', async () => {
    const r = await run(process.execPath, [CLI, 'lab', 'info', '--name', name, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info).toMatchObject(JSON.parse(JSON.stringify(labInfo(site))));
    expect(info).toEqual(JSON.parse(JSON.stringify(up.status)));
    const services = info.processes.filter((p: { name: string }) => p.name.endsWith('-service'));
    expect(services.map((p: { name: string; namespace: string; running: boolean }) => [p.name, p.namespace, p.running])).toEqual([
      ['srv1-service', `${name}-srv1`, true],
      ['srv2-service', `${name}-srv2`, true],
      ['srv3-service', `${name}-srv3`, true],
    ]);
    const commands = await registeredCommands();
    for (const d of ['appliance', 'controller', 'keeper'] as const) {
      expect(info.daemons[d]).toBe(commands.has(d) ? 'started' : 'not registered');
    }
  });

  it('gives every namespace the addresses, routes and forwarding of the site', async () => {
    for (const h of site.hosts) {
      const addrs = JSON.parse(await run('ip', ['-n', h.namespace, '-j', 'addr', 'show']).then((x) => x.stdout)) as Array<{
        ifname: string;
        operstate: string;
        addr_info: Array<{ family: string; local: string; prefixlen: number }>;
      }>;
      const got = addrs.flatMap((a) => a.addr_info.filter((x) => x.family === 'inet' && a.ifname !== 'lo').map((x) => `${a.ifname} ${x.local}/${x.prefixlen}`));
      const own = h.interfaces.map((i) => `${i.name} ${i.address}/${i.prefixLength}`);
      // A running appliance also holds the addresses of the VIPs it owns: the VIP outside, its inside address inside.
      const on = (segment: string) => h.interfaces.find((i) => 'segment' in i.attach && i.attach.segment === segment)?.name;
      const vips =
        h.role === 'appliance' && up.status.daemons.appliance === 'started'
          ? site.vips
              .filter((v) => v.owner === h.name)
              .flatMap((v) => [`${on('ext')} ${v.address}/${v.prefixLength}`, `${on('int')} ${v.insideAddress}/${v.prefixLength}`])
          : [];
      expect(got.sort(), h.name).toEqual([...own, ...vips].sort());
      expect(addrs.some((a) => a.addr_info.some((x) => x.family === 'inet6')), `${h.name} has IPv6`).toBe(false);
      const routes = JSON.parse((await run('ip', ['-n', h.namespace, '-j', 'route', 'show'])).stdout) as Array<{ dst: string; gateway?: string }>;
      expect(routes.filter((x) => x.gateway).map((x) => ({ to: x.dst, via: x.gateway })), h.name).toEqual(h.routes);
      const forwarding = await run('ip', ['netns', 'exec', h.namespace, 'sysctl', '-n', 'net.ipv4.ip_forward']);
      expect(forwarding.stdout.trim(), `${h.name} forwarding`).toBe(h.forwarding ? '1' : '0');
    }
  });

  it('is sealed: every veth has its peer inside the lab', async () => {
    const mine = new Set(site.hosts.map((h) => h.namespace));
    let veths = 0;
    for (const h of site.hosts) {
      const ids = JSON.parse((await run('ip', ['-n', h.namespace, '-j', 'netns', 'list-id'])).stdout || '[]') as Array<{ nsid: number; name?: string }>;
      const links = JSON.parse((await run('ip', ['-n', h.namespace, '-j', '-d', 'link', 'show'])).stdout) as Array<{
        ifname: string;
        link_netnsid?: number;
        linkinfo?: { info_kind: string };
      }>;
      for (const l of links) {
        if (l.ifname === 'lo') continue;
        expect(['veth', 'bridge'], `${h.name}/${l.ifname}`).toContain(l.linkinfo?.info_kind);
        if (l.linkinfo?.info_kind !== 'veth') continue;
        veths++;
        const peerNs = ids.find((x) => x.nsid === l.link_netnsid)?.name;
        expect(mine.has(peerNs ?? '(host or unnamed)'), `${h.name}/${l.ifname} peer in ${peerNs}`).toBe(true);
      }
    }
    expect(veths).toBe(30); // 15 pairs, both ends counted
  });

  it('routes the client to the appliances’ external addresses through the router, and nowhere else', async () => {
    for (const to of ['203.0.113.1', '203.0.113.2', '203.0.113.3']) expect((await ping('client', to)).ok, to).toBe(true);
    // One hop: the appliance's reply crossed the router (TTL 64 − 1).
    expect((await ping('client', '203.0.113.2')).ttl).toBe(63);
    for (const to of ['198.18.0.101', '198.18.0.2', '192.0.2.11', '192.0.2.2']) expect((await ping('client', to)).ok, to).toBe(false);
    expect((await ping('router', '198.18.0.101')).ok).toBe(false);
  });

  it('connects appliances and servers on the inside segment', async () => {
    for (const from of ['lb1', 'lb2']) {
      for (const to of ['198.18.0.101', '198.18.0.102', '198.18.0.103']) expect((await ping(from, to)).ok, `${from} → ${to}`).toBe(true);
    }
    expect((await ping('srv1', '198.18.0.3')).ok).toBe(true);
  });

  it('connects everyone on the management segment', async () => {
    const mgmt = ['192.0.2.2', '192.0.2.11', '192.0.2.12', '192.0.2.21', '192.0.2.22', '192.0.2.23'];
    for (const to of mgmt) expect((await ping('ctl', to)).ok, `ctl → ${to}`).toBe(true);
    expect((await ping('srv3', '192.0.2.11')).ok).toBe(true);
  });

  it('runs the servers’ echo, byte-exact, for an appliance', async () => {
    const run = startTraffic(host(site, 'lb1').namespace, { address: '198.18.0.102', port: 7, connections: 20, intervalMs: 20, durationMs: 1000 });
    const s = await run.done;
    expect(s.connections).toEqual({ requested: 20, established: 20, ok: 20, failed: 0 });
    expect(s.errors).toEqual({ connect: 0, reset: 0, timeout: 0, mismatch: 0, closed: 0, other: 0 });
    expect(s.messages.sent).toBeGreaterThan(20 * 20);
    expect(s.messages.echoed).toBe(s.messages.sent);
  });

  it('answers HTTP with the server’s name and the client address it saw', async () => {
    const get = (from: string, url: string) =>
      exec(from, [process.execPath, '-e', `fetch(${JSON.stringify(url)}).then((r) => r.text()).then((t) => process.stdout.write(t))`]);
    const r = await get('lb2', 'http://198.18.0.103/who');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ server: 'srv3', client: { address: '198.18.0.3' }, local: { address: '198.18.0.103', port: 80 }, path: '/who' });
    const m = await get('ctl', 'http://192.0.2.21/');
    expect(JSON.parse(m.stdout)).toMatchObject({ server: 'srv1', client: { address: '192.0.2.2' } });
  });

  it('serves each appliance’s metrics: VRRP, BFD to its peer, the access table mirror', async () => {
    const r = await exec('ctl', [process.execPath, CLI, 'metrics', '--lab', name, '--target', apiUrl(site.apis.appliances.lb2!)]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^vipshift_vrrp_adverts_received_total\{instance="[^"]+"\} [1-9]/m);
    expect(r.stdout).toMatch(/^vipshift_bfd_session_state\{[^}]*state="Up"[^}]*\} 1$/m);
    expect(r.stdout).toMatch(/^vipshift_access_table_mirror_synced\{appliance="lb2"\} 1$/m);
    expect(r.stdout).toMatch(/^vipshift_vrrp_state\{[^}]*state="backup"[^}]*\} 1$/m);
    // The same in the status the controller gathers.
    const status = await run(process.execPath, [CLI, 'status', '--json', '--lab', name]);
    expect(status.code, status.stderr).toBe(0);
    const lb2 = (JSON.parse(status.stdout) as { appliances: { name: string; bfd?: { running: boolean; sessions: { state: string }[] }; mirror?: { synced: boolean } }[] }).appliances.find((a) => a.name === 'lb2');
    expect(lb2?.bfd?.running).toBe(true);
    expect(lb2?.bfd?.sessions.map((x) => x.state)).toContain('Up');
    expect(lb2?.mirror?.synced).toBe(true);
  });

  it('runs commands in a host with `lab exec` and passes the exit code on', async () => {
    const r = await run(process.execPath, [CLI, 'lab', 'exec', '--name', name, 'srv2', '--', 'ip', '-br', 'addr', 'show', 'int0']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/198\.18\.0\.102\/24/);
    expect((await run(process.execPath, [CLI, 'lab', 'exec', '--name', name, 'ctl', '--', 'sh', '-c', 'exit 3'])).code).toBe(3);
    const bad = await run(process.execPath, [CLI, 'lab', 'exec', '--name', name, 'nowhere', '--', 'true']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/no host 'nowhere'/);
  });
});
