import { describe, expect, it } from 'vitest';
import { hostBatch, hostSysctls, switchBatch } from '../../src/lab/netns.js';
import {
  type Site,
  applianceConfig,
  checkLabName,
  controllerConfig,
  defaultSite,
  host,
  keeperConfig,
  labInfo,
  siteProblems,
} from '../../src/lab/site.js';

const site = defaultSite({ name: 'vs', stateBase: '/tmp/labs' });
const clone = (s: Site): Site => structuredClone(s);

describe('a site with extra VIPs (benchmarks at scale)', () => {
  it('adds fullnat VIPs on lb1, each address and VRID once, within the segments and the VRRP range', () => {
    const big = defaultSite({ name: 'vs', stateBase: '/tmp/labs', extraVips: 200 });
    expect(siteProblems(big)).toEqual([]);
    expect(big.vips).toHaveLength(204);
    const addresses = [...big.hosts.flatMap((h) => h.interfaces.map((i) => i.address)), ...big.vips.flatMap((v) => [v.address, v.insideAddress])];
    expect(new Set(addresses).size).toBe(addresses.length);
    expect(new Set(big.vips.map((v) => v.id)).size).toBe(204);
    expect(Math.max(...big.vips.map((v) => v.id))).toBeLessThanOrEqual(255);
    expect(big.vips.slice(4).every((v) => v.owner === 'lb1' && v.mode === 'fullnat')).toBe(true);
    expect(applianceConfig(big, 'lb2').vrrp?.instances).toHaveLength(408);
    expect(() => defaultSite({ extraVips: 201 })).toThrow(/0 to 200/);
  });
});

describe('the default site', () => {
  it('is consistent', () => {
    expect(siteProblems(site)).toEqual([]);
  });

  it('has every address of the contract, each once', () => {
    const addresses = [
      ...site.hosts.flatMap((h) => h.interfaces.map((i) => i.address)),
      ...site.vips.flatMap((v) => [v.address, v.insideAddress]),
    ];
    expect(new Set(addresses).size).toBe(addresses.length);
    const of = (name: string) => host(site, name).interfaces.map((i) => `${i.name} ${i.address}/${i.prefixLength}`);
    expect(of('client')).toEqual(['eth0 198.51.100.10/24']);
    expect(of('router')).toEqual(['cl0 198.51.100.1/24', 'ext0 203.0.113.1/24']);
    expect(of('lb1')).toEqual(['ext0 203.0.113.2/24', 'int0 198.18.0.2/24', 'mgmt0 192.0.2.11/24']);
    expect(of('lb2')).toEqual(['ext0 203.0.113.3/24', 'int0 198.18.0.3/24', 'mgmt0 192.0.2.12/24']);
    expect(of('srv2')).toEqual(['int0 198.18.0.102/24', 'mgmt0 192.0.2.22/24']);
    expect(of('ctl')).toEqual(['mgmt0 192.0.2.2/24']);
  });

  it('routes dnat servers through their VIP inside address, and everything else stays in the lab', () => {
    expect(host(site, 'client').routes).toEqual([{ to: 'default', via: '198.51.100.1' }]);
    expect(host(site, 'lb1').routes).toEqual([{ to: 'default', via: '203.0.113.1' }]);
    expect(host(site, 'router').routes).toEqual([]);
    for (const v of site.vips.filter((x) => x.mode === 'dnat')) {
      expect(host(site, v.servers[0]!).routes).toEqual([{ to: 'default', via: v.insideAddress }]);
    }
    // Every gateway is an address of the lab (a host's or a VIP's inside address): no route leaves it.
    const labAddresses = new Set([...site.hosts.flatMap((h) => h.interfaces.map((i) => i.address)), ...site.vips.map((v) => v.insideAddress)]);
    for (const h of site.hosts) for (const r of h.routes) expect(labAddresses.has(r.via), `${h.name} via ${r.via}`).toBe(true);
  });

  it('names namespaces after the lab and keeps interface names within 15 characters', () => {
    const named = defaultSite({ name: 'vtab12cd34ef' });
    expect(named.hosts.map((h) => h.namespace)).toEqual(
      ['client', 'router', 'lb1', 'lb2', 'srv1', 'srv2', 'srv3', 'ctl', 'sw'].map((h) => `vtab12cd34ef-${h}`),
    );
    expect(siteProblems(named)).toEqual([]);
    const created = switchBatch(named).flatMap((l) => [...l.matchAll(/(?:link add|peer name) (\S+)/g)].map((m) => m[1]!));
    expect(created.length).toBeGreaterThan(0);
    for (const n of created) expect(n.length).toBeLessThanOrEqual(15);
    expect(named.stateDir).toBe('/run/vipshift-lab/vtab12cd34ef');
  });

  it('refuses lab names that would make ambiguous or overlong names', () => {
    for (const bad of ['vs-a', 'VS', '1vs', 'abcdefghijklm', '']) expect(() => checkLabName(bad)).toThrow(/lab name/);
    expect(() => checkLabName('vtlab1234')).not.toThrow();
  });
});

describe('siteProblems', () => {
  it('finds a duplicate address', () => {
    const s = clone(site);
    host(s, 'srv2').interfaces[0]!.address = '198.18.0.101';
    expect(siteProblems(s)).toEqual(['address 198.18.0.101 of srv2/int0 is also srv1/int0']);
  });

  it('finds an address outside its segment, a VIP clashing with a host, a bad owner and a long name', () => {
    const s = clone(site);
    host(s, 'lb2').interfaces[1]!.address = '198.19.0.3';
    s.vips[0]!.address = '203.0.113.2';
    s.vips[1]!.owner = 'srv1';
    host(s, 'ctl').interfaces[0]!.name = 'management-iface0';
    const problems = siteProblems(s).join('\n');
    expect(problems).toMatch(/lb2\/int0: 198\.19\.0\.3 is outside segment int/);
    expect(problems).toMatch(/address 203\.0\.113\.2 of VIP vip1 is also lb1\/ext0/);
    expect(problems).toMatch(/VIP vip2: owner 'srv1' is not an appliance/);
    expect(problems).toMatch(/ctl\/management-iface0: interface name longer than 15/);
  });

  it('finds duplicate VIP ids and a dnat server that does not route through its VIP', () => {
    const s = clone(site);
    s.vips[2]!.id = 1;
    s.vips[0]!.servers.push('srv2');
    const problems = siteProblems(s).join('\n');
    expect(problems).toMatch(/VIP vip3: id 1 used twice/);
    expect(problems).toMatch(/VIP vip1: dnat server srv2 routes its replies through 198.18.0.11, not 198.18.0.10/);
  });

  it('finds a point-to-point peer that does not point back', () => {
    const s = clone(site);
    host(s, 'router').interfaces[0]!.attach = { host: 'client', interface: 'eth9' };
    expect(siteProblems(s).join('\n')).toMatch(/router\/cl0: peer client\/eth9 does not exist/);
  });
});

describe('derived configurations', () => {
  it('gives each appliance the contract schema with every VIP and the servers by address', () => {
    const c = applianceConfig(site, 'lb2');
    expect(c.appliance).toBe('lb2');
    expect(c.api).toEqual({ listen: '192.0.2.12:8441' });
    expect(c.interfaces).toEqual({ external: 'ext0', internal: 'int0' });
    expect(c.hold).toEqual({ policy: 'queue', queueLength: 4096 });
    expect(c.vips.map((v) => [v.name, v.id, v.address, v.insideAddress, v.mode, v.owner])).toEqual([
      ['vip1', 1, '203.0.113.10', '198.18.0.10', 'dnat', 'lb1'],
      ['vip2', 2, '203.0.113.11', '198.18.0.11', 'dnat', 'lb1'],
      ['vip3', 3, '203.0.113.12', '198.18.0.12', 'dnat', 'lb2'],
      ['vip4', 4, '203.0.113.13', '198.18.0.13', 'fullnat', 'lb1'],
    ]);
    expect(c.vips[0]).toEqual({
      name: 'vip1',
      id: 1,
      address: '203.0.113.10',
      insideAddress: '198.18.0.10',
      prefixLength: 24,
      protocol: 'tcp',
      ports: [7, 80],
      mode: 'dnat',
      backends: [{ address: '198.18.0.101', weight: 1 }],
      owner: 'lb1',
    });
    expect(c.vips[3]).toMatchObject({
      backends: [
        { address: '198.18.0.101', weight: 1 },
        { address: '198.18.0.102', weight: 1 },
        { address: '198.18.0.103', weight: 1 },
      ],
      scheduler: 'roundrobin',
      snatPorts: '20000-29999',
    });
    expect(() => applianceConfig(site, 'srv1')).toThrow(/not an appliance/);
  });

  it('follows the site when it changes', () => {
    const s = clone(site);
    host(s, 'srv3').interfaces[0]!.address = '198.18.0.133';
    expect(applianceConfig(s, 'lb1').vips[2]!.backends).toEqual([{ address: '198.18.0.133', weight: 1 }]);
  });

  it('tells the controller the appliances, keepers and VIP owners', () => {
    expect(controllerConfig(site)).toEqual({
      controller: 'ctl',
      api: { listen: '192.0.2.2:8440', socket: '/tmp/labs/vs/controller.sock' },
      journal: '/tmp/labs/vs/controller-journal.sqlite',
      appliances: [
        { name: 'lb1', api: 'http://192.0.2.11:8441' },
        { name: 'lb2', api: 'http://192.0.2.12:8441' },
      ],
      keepers: [
        { name: 'srv1', api: 'http://192.0.2.21:8442' },
        { name: 'srv2', api: 'http://192.0.2.22:8442' },
        { name: 'srv3', api: 'http://192.0.2.23:8442' },
      ],
      vips: [
        { name: 'vip1', address: '203.0.113.10', owner: 'lb1' },
        { name: 'vip2', address: '203.0.113.11', owner: 'lb1' },
        { name: 'vip3', address: '203.0.113.12', owner: 'lb2' },
        { name: 'vip4', address: '203.0.113.13', owner: 'lb1' },
      ],
    });
    expect(keeperConfig(site, 'srv2')).toEqual({
      keeper: 'srv2',
      api: { listen: '192.0.2.22:8442' },
      database: '/tmp/labs/vs/srv2-keeper.sqlite',
      pki: '/tmp/labs/vs/credentials',
      sockdiag: true,
      vips: applianceConfig(site, 'lb1').vips,
    });
  });

  it('describes the lab for `lab info`', () => {
    const info = labInfo(site);
    expect(info.stateDir).toBe('/tmp/labs/vs');
    expect(info.clients).toEqual([{ name: 'client', namespace: 'vs-client', address: '198.51.100.10' }]);
    expect(info.appliances.map((a) => [a.name, a.namespace, a.api])).toEqual([
      ['lb1', 'vs-lb1', 'http://192.0.2.11:8441'],
      ['lb2', 'vs-lb2', 'http://192.0.2.12:8441'],
    ]);
    expect(info.servers.map((s) => [s.name, s.namespace, s.address])).toEqual([
      ['srv1', 'vs-srv1', '198.18.0.101'],
      ['srv2', 'vs-srv2', '198.18.0.102'],
      ['srv3', 'vs-srv3', '198.18.0.103'],
    ]);
    expect(info.vips[3]).toEqual({
      name: 'vip4',
      id: 4,
      address: '203.0.113.13',
      insideAddress: '198.18.0.13',
      mode: 'fullnat',
      ports: [7, 80],
      owner: 'lb1',
      servers: [
        { name: 'srv1', address: '198.18.0.101' },
        { name: 'srv2', address: '198.18.0.102' },
        { name: 'srv3', address: '198.18.0.103' },
      ],
    });
    expect(info.controller).toEqual({ name: 'ctl', namespace: 'vs-ctl', api: 'http://192.0.2.2:8440', config: '/tmp/labs/vs/ctl.yaml' });
  });
});

describe('the ip batches', () => {
  it('creates every veth end directly inside a lab namespace and bridges in the switch', () => {
    const lines = switchBatch(site);
    expect(lines.filter((l) => / type bridge /.test(l))).toEqual([
      'link add ext type bridge stp_state 0 forward_delay 0 mcast_snooping 0',
      'link add int type bridge stp_state 0 forward_delay 0 mcast_snooping 0',
      'link add mgmt type bridge stp_state 0 forward_delay 0 mcast_snooping 0',
    ]);
    const veths = lines.filter((l) => / type veth /.test(l));
    // One per segment attachment (router 1, appliances 2×3, servers 3×2, controller 1) and the client–router pair.
    expect(veths).toHaveLength(15);
    for (const l of veths) expect(l).toMatch(/ peer name \S+ netns vs-[a-z0-9]+$/);
    expect(veths).toContain('link add eth0 netns vs-client type veth peer name cl0 netns vs-router');
    expect(lines).toContain('link add lb1-ext type veth peer name ext0 netns vs-lb1');
    expect(lines).toContain('link set lb1-ext master ext up');
  });

  it('brings links up before routes that need them', () => {
    expect(hostBatch(host(site, 'srv1'))).toEqual([
      'link set lo up',
      'addr add 198.18.0.101/24 dev int0',
      'link set int0 up',
      'addr add 192.0.2.21/24 dev mgmt0',
      'link set mgmt0 up',
      'route add default via 198.18.0.10',
    ]);
  });

  it('forwards on the router and appliances only, and turns IPv6 off everywhere', () => {
    for (const h of site.hosts) {
      const s = hostSysctls(h);
      expect(s['net.ipv6.conf.default.disable_ipv6']).toBe('1');
      expect(s['net.ipv4.ip_forward']).toBe(h.role === 'router' || h.role === 'appliance' ? '1' : '0');
      expect(s['net.ipv4.conf.default.rp_filter']).toBe('0');
    }
  });
});
