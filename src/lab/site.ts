/**
 * The lab's site as data (the patent's fig. 3): hosts, links, addresses, routes,
 * VIPs and APIs, parameterised by the lab's name. Everything else is derived from it: the
 * `ip` batches that build it (netns.ts), the appliances', controller's and keepers'
 * configurations, and `lab info`. Pure: no I/O here.
 */
import path from 'node:path';
import type { ControllerConfigInput } from '../config/controller.js';
import type { ApplianceConfigInput } from '../config/appliance.js';
import type { Role } from '../api/auth.js';
import { etcdClientFiles } from '../api/etcd-pki.js';
import { inNetwork } from '../packet/ipv4.js';

/** The three L2 segments; each is one bridge inside the `<lab>-sw` namespace. */
export type SegmentName = 'ext' | 'int' | 'mgmt';
export type HostRole = 'client' | 'router' | 'appliance' | 'server' | 'controller' | 'switch';

export interface Segment {
  name: SegmentName;
  /** Bridge name inside the switch namespace. */
  bridge: string;
  network: string;
  prefixLength: number;
}

export interface Interface {
  /** Name inside the host's namespace (≤ 15 characters). */
  name: string;
  address: string;
  prefixLength: number;
  /**
   * Where the veth's other end goes: a segment (the peer is a port of that bridge in the
   * switch namespace, named `<host>-<segment>`) or another host's interface (point to point).
   */
  attach: { segment: SegmentName } | { host: string; interface: string };
}

export interface Route {
  /** `default` or a prefix `a.b.c.d/n`. */
  to: string;
  via: string;
}

export interface Host {
  name: string;
  role: HostRole;
  /** `<lab>-<host>`. */
  namespace: string;
  interfaces: Interface[];
  routes: Route[];
  /** IPv4 forwarding (router, appliances). */
  forwarding: boolean;
}

export interface Api {
  address: string;
  port: number;
}

export interface Vip {
  name: string;
  /** The ct mark of its connections: unique, 1..65535. */
  id: number;
  address: string;
  insideAddress: string;
  prefixLength: number;
  protocol: 'tcp';
  ports: number[];
  mode: 'dnat' | 'fullnat';
  /** Server host names. */
  servers: string[];
  scheduler?: 'roundrobin' | 'sourcehash';
  snatPorts?: string;
  /** The appliance that starts with it. */
  owner: string;
}

export interface Site {
  name: string;
  /** Where `lab up` writes configurations, logs and its state file. */
  stateDir: string;
  segments: Segment[];
  hosts: Host[];
  vips: Vip[];
  apis: {
    appliances: Record<string, Api>;
    /** The first controller (the only one of the default site). */
    controller: { host: string } & Api;
    /** Every controller; more than one run on etcd, with an etcd member each on their box. */
    controllers: ({ host: string } & Api)[];
    keepers: Record<string, Api>;
  };
  /** The etcd members (on the controllers' hosts) when the site has several controllers. */
  etcd?: { clientPort: number; peerPort: number; leaseSeconds: number };
  /** The servers' service (`vipshift lab serve`). */
  service: { echoPort: number; httpPort: number };
}

export const DEFAULT_LAB_NAME = 'vs';
export const DEFAULT_STATE_BASE = '/run/vipshift-lab';
/** Lab names become namespace and file names: keep them short and free of `-`, so that
 * `<lab>-<host>` is unambiguous. */
export const LAB_NAME = /^[a-z][a-z0-9]{0,11}$/;
export const SWITCH_HOST = 'sw';
const IFNAMSIZ = 15;

export function checkLabName(name: string): void {
  if (!LAB_NAME.test(name)) {
    throw new Error(`lab name '${name}': expected a lower-case letter then up to 11 letters or digits (it prefixes namespace names)`);
  }
}

export interface SiteOptions {
  name?: string;
  /** Parent of the lab's state directory. */
  stateBase?: string;
  /** 1 (the default: `ctl` on SQLite) or 2–3 (`ctl1`.. on etcd, an etcd member each). */
  controllers?: number;
  /** VIPs beyond the four (benchmarks at scale): fullnat on every server, owned by lb1 (see fullnatVip). */
  extraVips?: number;
}

/** Free addresses of the inside segment for extra VIPs' inside addresses (the rest: appliances, the four VIPs, servers). */
const EXTRA_INSIDE_HOSTS = [...Array.from({ length: 80 }, (_, i) => 20 + i), ...Array.from({ length: 145 }, (_, i) => 110 + i)];
export const MAX_EXTRA_VIPS = 200;

export const MAX_CONTROLLERS = 3;

/** The default site of the contract: one client, a router, two appliances, three servers, a controller. */
export function defaultSite(options: SiteOptions = {}): Site {
  const name = options.name ?? DEFAULT_LAB_NAME;
  checkLabName(name);
  const controllerCount = options.controllers ?? 1;
  if (!Number.isInteger(controllerCount) || controllerCount < 1 || controllerCount > MAX_CONTROLLERS) {
    throw new Error(`--controllers ${controllerCount}: expected 1 to ${MAX_CONTROLLERS}`);
  }
  const controllers =
    controllerCount === 1 ? [{ name: 'ctl', mgmt: '192.0.2.2' }] : Array.from({ length: controllerCount }, (_, i) => ({ name: `ctl${i + 1}`, mgmt: `192.0.2.${i + 2}` }));
  const ns = (host: string) => `${name}-${host}`;
  const lan = (ifname: string, segment: SegmentName, address: string): Interface => ({
    name: ifname,
    address,
    prefixLength: 24,
    attach: { segment },
  });

  const appliances = [
    { name: 'lb1', ext: '203.0.113.2', int: '198.18.0.2', mgmt: '192.0.2.11' },
    { name: 'lb2', ext: '203.0.113.3', int: '198.18.0.3', mgmt: '192.0.2.12' },
  ];
  // dnat servers send their replies through the inside address of their VIP (embodiment 1).
  const servers = [
    { name: 'srv1', int: '198.18.0.101', mgmt: '192.0.2.21', gateway: '198.18.0.10' },
    { name: 'srv2', int: '198.18.0.102', mgmt: '192.0.2.22', gateway: '198.18.0.11' },
    { name: 'srv3', int: '198.18.0.103', mgmt: '192.0.2.23', gateway: '198.18.0.12' },
  ];

  const hosts: Host[] = [
    {
      name: 'client',
      role: 'client',
      namespace: ns('client'),
      interfaces: [
        { name: 'eth0', address: '198.51.100.10', prefixLength: 24, attach: { host: 'router', interface: 'cl0' } },
      ],
      routes: [{ to: 'default', via: '198.51.100.1' }],
      forwarding: false,
    },
    {
      name: 'router',
      role: 'router',
      namespace: ns('router'),
      interfaces: [
        { name: 'cl0', address: '198.51.100.1', prefixLength: 24, attach: { host: 'client', interface: 'eth0' } },
        lan('ext0', 'ext', '203.0.113.1'),
      ],
      routes: [],
      forwarding: true,
    },
    ...appliances.map(
      (a): Host => ({
        name: a.name,
        role: 'appliance',
        namespace: ns(a.name),
        interfaces: [lan('ext0', 'ext', a.ext), lan('int0', 'int', a.int), lan('mgmt0', 'mgmt', a.mgmt)],
        routes: [{ to: 'default', via: '203.0.113.1' }],
        forwarding: true,
      }),
    ),
    ...servers.map(
      (s): Host => ({
        name: s.name,
        role: 'server',
        namespace: ns(s.name),
        interfaces: [lan('int0', 'int', s.int), lan('mgmt0', 'mgmt', s.mgmt)],
        routes: [{ to: 'default', via: s.gateway }],
        forwarding: false,
      }),
    ),
    ...controllers.map(
      (c): Host => ({ name: c.name, role: 'controller', namespace: ns(c.name), interfaces: [lan('mgmt0', 'mgmt', c.mgmt)], routes: [], forwarding: false }),
    ),
    { name: SWITCH_HOST, role: 'switch', namespace: ns(SWITCH_HOST), interfaces: [], routes: [], forwarding: false },
  ];

  const extra = options.extraVips ?? 0;
  if (!Number.isInteger(extra) || extra < 0 || extra > MAX_EXTRA_VIPS) throw new Error(`--vips ${extra}: expected 0 to ${MAX_EXTRA_VIPS} extra VIPs`);
  const vips: Vip[] = [
    dnatVip('vip1', 1, '203.0.113.10', '198.18.0.10', 'srv1', 'lb1'),
    dnatVip('vip2', 2, '203.0.113.11', '198.18.0.11', 'srv2', 'lb1'),
    dnatVip('vip3', 3, '203.0.113.12', '198.18.0.12', 'srv3', 'lb2'),
    fullnatVip('vip4', 4, '203.0.113.13', '198.18.0.13'),
    ...Array.from({ length: extra }, (_, i) => fullnatVip(`vip${5 + i}`, 5 + i, `203.0.113.${20 + i}`, `198.18.0.${EXTRA_INSIDE_HOSTS[i]!}`)),
  ];

  return {
    name,
    stateDir: path.join(options.stateBase ?? DEFAULT_STATE_BASE, name),
    segments: [
      { name: 'ext', bridge: 'ext', network: '203.0.113.0', prefixLength: 24 },
      { name: 'int', bridge: 'int', network: '198.18.0.0', prefixLength: 24 },
      { name: 'mgmt', bridge: 'mgmt', network: '192.0.2.0', prefixLength: 24 },
    ],
    hosts,
    vips,
    apis: {
      appliances: Object.fromEntries(appliances.map((a) => [a.name, { address: a.mgmt, port: 8441 }])),
      controller: { host: controllers[0]!.name, address: controllers[0]!.mgmt, port: 8440 },
      controllers: controllers.map((c) => ({ host: c.name, address: c.mgmt, port: 8440 })),
      keepers: Object.fromEntries(servers.map((s) => [s.name, { address: s.mgmt, port: 8442 }])),
    },
    service: { echoPort: 7, httpPort: 80 },
    ...(controllerCount > 1 ? { etcd: { clientPort: 2379, peerPort: 2380, leaseSeconds: 3 } } : {}),
  };
}

function dnatVip(name: string, id: number, address: string, insideAddress: string, server: string, owner: string): Vip {
  return { name, id, address, insideAddress, prefixLength: 24, protocol: 'tcp', ports: [7, 80], mode: 'dnat', servers: [server], owner };
}

/**
 * A fullnat VIP on all three servers, owned by lb1: vip4, and the extra VIPs of a site at
 * scale (vip5.., VRIDs 5..204 on each interface, 203.0.113.20 on; fullnat because a dnat VIP
 * needs its servers routed through its inside address, and a server has one gateway).
 */
function fullnatVip(name: string, id: number, address: string, insideAddress: string): Vip {
  return { name, id, address, insideAddress, prefixLength: 24, protocol: 'tcp', ports: [7, 80], mode: 'fullnat', servers: ['srv1', 'srv2', 'srv3'], scheduler: 'roundrobin', snatPorts: '20000-29999', owner: 'lb1' };
}

// --- lookups -------------------------------------------------------------------------------

export function host(site: Site, name: string): Host {
  const h = site.hosts.find((x) => x.name === name);
  if (!h) throw new Error(`lab ${site.name}: no host '${name}' (hosts: ${site.hosts.map((x) => x.name).join(', ')})`);
  return h;
}

export function hostsOf(site: Site, role: HostRole): Host[] {
  return site.hosts.filter((h) => h.role === role);
}

/** The address of a host on a segment (or its only point-to-point address). */
export function addressOn(site: Site, hostName: string, segment: SegmentName): string {
  const i = host(site, hostName).interfaces.find((x) => 'segment' in x.attach && x.attach.segment === segment);
  if (!i) throw new Error(`lab ${site.name}: host '${hostName}' has no interface on segment '${segment}'`);
  return i.address;
}

/** Name of the bridge port, in the switch namespace, of a host's interface on a segment. */
export function switchPortName(hostName: string, segment: SegmentName): string {
  return `${hostName}-${segment}`;
}

export const apiUrl = (api: Api) => `http://${api.address}:${api.port}`;
const listen = (api: Api) => `${api.address}:${api.port}`;

// --- derived configurations ----------------------------------------------------------------

/** An appliance's configuration file (src/config/appliance.ts's schema). */
export function applianceConfig(site: Site, appliance: string): ApplianceConfigInput {
  const h = host(site, appliance);
  if (h.role !== 'appliance') throw new Error(`lab ${site.name}: '${appliance}' is not an appliance`);
  const ifname = (segment: SegmentName) => {
    const i = h.interfaces.find((x) => 'segment' in x.attach && x.attach.segment === segment);
    if (!i) throw new Error(`lab ${site.name}: appliance '${appliance}' has no interface on '${segment}'`);
    return i.name;
  };
  return {
    appliance,
    api: { listen: listen(site.apis.appliances[appliance]!) },
    interfaces: { external: ifname('ext'), internal: ifname('int') },
    hold: { policy: 'queue', queueLength: 4096 },
    vips: siteVipsConfig(site),
    vrrp: vrrpFor(site, appliance, ifname('ext'), ifname('int')),
    // Replication (on by default) pushes copies to the keeper of each connection's server.
    keepers: hostsOf(site, 'server').map((s) => ({ name: s.name, server: addressOn(site, s.name, 'int'), api: apiUrl(site.apis.keepers[s.name]!) })),
    // Failover from the keepers' copies is the default (standby): not set here, so the lab
    // and `make demo` run what an operator gets.
    // The newest controller epoch each appliance has seen, kept across its restarts.
    stateDir: site.stateDir,
    failover: {
      peers: hostsOf(site, 'appliance')
        .filter((a) => a.name !== appliance)
        .map((a) => ({ name: a.name, api: apiUrl(site.apis.appliances[a.name]!) })),
    },
  };
}

/** Every VIP of the site as the appliances and keepers configure it (src/config/appliance.ts's VIP entries). */
export function siteVipsConfig(site: Site): ApplianceConfigInput['vips'] {
  return site.vips.map((v) => ({
    name: v.name,
    id: v.id,
    address: v.address,
    insideAddress: v.insideAddress,
    prefixLength: v.prefixLength,
    protocol: v.protocol,
    ports: [...v.ports],
    mode: v.mode,
    backends: v.servers.map((s) => ({ address: addressOn(site, s, 'int'), weight: 1 })),
    ...(v.scheduler ? { scheduler: v.scheduler } : {}),
    ...(v.snatPorts ? { snatPorts: v.snatPorts } : {}),
    owner: v.owner,
  }));
}

/** The lab's advertisement interval (takeover well inside half a second). */
export const LAB_ADVERT_INTERVAL = 0.1;

/**
 * BFD between the appliances (src/vrrp/bfd-session.ts): at 0.1 s adverts VRRP alone declares
 * a dead master after ~0.36 s, later than a client's first TCP retransmission (~0.2 s), which
 * is then lost; BFD at 50 ms × 3 declares it in ≤ 0.15 s.
 */
export const LAB_BFD = { minTxMs: 50, minRxMs: 50, multiplier: 3 };

/**
 * One VRRP sync group per VIP — the VIP on the external segment and its inside address on
 * the internal one, VRID = the VIP's id on both — so the two move together. The VIP's
 * first owner has the higher priority, so it wins the election at a cold start; no
 * preemption, so an appliance that comes back after a failover stays backup instead of
 * taking its VIPs back from the peer that now holds their connections.
 */
function vrrpFor(site: Site, appliance: string, external: string, internal: string): NonNullable<ApplianceConfigInput['vrrp']> {
  // The backup sits out the first seconds so that at a cold start the owner claims first; an
  // owner of many VIPs (a site with extra VIPs) takes longer to start, and a backup that became
  // master of them meanwhile would take each over from the keepers.
  const backupDelay = site.vips.length > 4 ? 2 + Math.ceil(site.vips.length / 10) : 2;
  const instances = site.vips.flatMap((v) => {
    const owner = v.owner === appliance;
    const common = { vrid: v.id, priority: owner ? 150 : 100, advertIntervalSeconds: LAB_ADVERT_INTERVAL, preempt: false, garpRepeat: 3, startupDelaySeconds: owner ? 0 : backupDelay, bfd: LAB_BFD };
    return [
      { ...common, name: `${v.name}-ext`, interface: external, addresses: [`${v.address}/${v.prefixLength}`] },
      { ...common, name: `${v.name}-int`, interface: internal, addresses: [`${v.insideAddress}/${v.prefixLength}`] },
    ];
  });
  return { instances, syncGroups: site.vips.map((v) => ({ name: v.name, instances: [`${v.name}-ext`, `${v.name}-int`] })) };
}

/**
 * A stock Prometheus's scrape configuration for the lab (docs/metrics.md): every process's
 * metrics listener (the API's address, port + 1000, the processes' default), with the
 * cluster's bearer token. Prometheus runs in the controller's namespace, which reaches them all.
 */
export function prometheusConfig(site: Site, scrapeInterval = '15s'): Record<string, unknown> {
  const target = (api: Api) => `${api.address}:${api.port + 1000}`;
  const job = (name: string, apis: Api[]) => ({
    job_name: name,
    authorization: { type: 'Bearer', credentials_file: path.join(pkiDir(site), 'metrics.token') },
    static_configs: [{ targets: apis.map(target) }],
  });
  return {
    global: { scrape_interval: scrapeInterval, scrape_timeout: scrapeInterval === '1s' ? '1s' : '10s' },
    scrape_configs: [
      job('vipshift-appliance', hostsOf(site, 'appliance').map((a) => site.apis.appliances[a.name]!)),
      job('vipshift-controller', site.apis.controllers),
      job('vipshift-keeper', hostsOf(site, 'server').map((s) => site.apis.keepers[s.name]!)),
    ],
  };
}

/** The local socket of a controller (the operator's CLI on the host): `controller.sock` for a sole one. */
export function controllerSocket(site: Site, controller: string): string {
  return path.join(site.stateDir, site.etcd ? `controller-${controller}.sock` : 'controller.sock');
}

/** The etcd members of a site with several controllers: name, client and peer URL. */
export function etcdMembers(site: Site): { name: string; address: string; client: string; peer: string }[] {
  const e = site.etcd;
  if (!e) return [];
  // TLS both ways, on the certificates `lab up` mints (vipshift pki etcd): only the lab's controllers get in.
  return site.apis.controllers.map((c) => ({ name: c.host, address: c.address, client: `https://${c.address}:${e.clientPort}`, peer: `https://${c.address}:${e.peerPort}` }));
}

/** A controller's configuration file (src/config/controller.ts's schema). */
export function controllerConfig(site: Site, controller = site.apis.controller.host): ControllerConfigInput {
  const c = site.apis.controllers.find((x) => x.host === controller);
  if (!c) throw new Error(`lab ${site.name}: '${controller}' is not a controller`);
  return {
    controller: c.host,
    api: { listen: listen(c), socket: controllerSocket(site, c.host) },
    journal: path.join(site.stateDir, 'controller-journal.sqlite'),
    ...(site.etcd
      ? { store: { etcd: { endpoints: etcdMembers(site).map((m) => m.client), prefix: `/vipshift/${site.name}/`, leaseSeconds: site.etcd.leaseSeconds, tls: etcdClientFiles(pkiDir(site), c.host) } } }
      : {}),
    appliances: hostsOf(site, 'appliance').map((a) => ({ name: a.name, api: apiUrl(site.apis.appliances[a.name]!) })),
    keepers: hostsOf(site, 'server').map((s) => ({ name: s.name, api: apiUrl(site.apis.keepers[s.name]!) })),
    vips: site.vips.map((v) => ({ name: v.name, address: v.address, owner: v.owner })),
  };
}

/** A keeper's configuration as the lab writes it (schema: src/config/keeper.ts). */
export interface KeeperConfig {
  keeper: string;
  api: { listen: string };
  database: string;
  pki: string;
  sockdiag: boolean;
  vips: ApplianceConfigInput['vips'];
}

/**
 * The lab's cluster credentials (vipshift pki init): one key per host that runs an API, with
 * its role, the operator (`admin`) and a read-only `monitor`.
 */
export const pkiDir = (site: Site): string => path.join(site.stateDir, 'credentials');
export function clusterMembers(site: Site): Record<string, Role> {
  return {
    ...Object.fromEntries(hostsOf(site, 'appliance').map((h) => [h.name, 'appliance' as const])),
    ...Object.fromEntries(hostsOf(site, 'server').map((h) => [h.name, 'keeper' as const])),
    ...Object.fromEntries(site.apis.controllers.map((c) => [c.host, 'controller' as const])),
    admin: 'admin',
    monitor: 'monitor',
  };
}

export function keeperConfig(site: Site, server: string): KeeperConfig {
  const api = site.apis.keepers[server];
  if (!api) throw new Error(`lab ${site.name}: '${server}' runs no keeper`);
  return {
    keeper: server,
    api: { listen: listen(api) },
    database: path.join(site.stateDir, `${server}-keeper.sqlite`),
    pki: pkiDir(site),
    sockdiag: true,
    vips: siteVipsConfig(site),
  };
}

// --- lab info ------------------------------------------------------------------------------

export interface LabInfo {
  name: string;
  stateDir: string;
  namespaces: string[];
  client: { name: string; namespace: string; address: string } | undefined;
  clients: Array<{ name: string; namespace: string; address: string }>;
  router: { name: string; namespace: string; addresses: string[] };
  appliances: Array<{
    name: string;
    namespace: string;
    api: string;
    addresses: Record<SegmentName, string>;
    config: string;
  }>;
  servers: Array<{ name: string; namespace: string; address: string; mgmtAddress: string; echoPort: number; httpPort: number; keeper: string }>;
  vips: Array<{
    name: string;
    id: number;
    address: string;
    insideAddress: string;
    mode: 'dnat' | 'fullnat';
    ports: number[];
    owner: string;
    servers: Array<{ name: string; address: string }>;
  }>;
  controller: { name: string; namespace: string; api: string; config: string };
  controllers: { name: string; namespace: string; api: string; config: string; socket: string }[];
  etcd: { name: string; client: string; peer: string }[];
  switch: { namespace: string; bridges: Record<SegmentName, string> };
}

export function labInfo(site: Site): LabInfo {
  const pick = (h: Host, segment: SegmentName) => addressOn(site, h.name, segment);
  const clients = hostsOf(site, 'client').map((h) => ({ name: h.name, namespace: h.namespace, address: h.interfaces[0]!.address }));
  const router = hostsOf(site, 'router')[0]!;
  const ctl = host(site, site.apis.controller.host);
  return {
    name: site.name,
    stateDir: site.stateDir,
    namespaces: site.hosts.map((h) => h.namespace),
    client: clients[0],
    clients,
    router: { name: router.name, namespace: router.namespace, addresses: router.interfaces.map((i) => i.address) },
    appliances: hostsOf(site, 'appliance').map((h) => ({
      name: h.name,
      namespace: h.namespace,
      api: apiUrl(site.apis.appliances[h.name]!),
      addresses: { ext: pick(h, 'ext'), int: pick(h, 'int'), mgmt: pick(h, 'mgmt') },
      config: configPath(site, h.name),
    })),
    servers: hostsOf(site, 'server').map((h) => ({
      name: h.name,
      namespace: h.namespace,
      address: pick(h, 'int'),
      mgmtAddress: pick(h, 'mgmt'),
      echoPort: site.service.echoPort,
      httpPort: site.service.httpPort,
      keeper: apiUrl(site.apis.keepers[h.name]!),
    })),
    vips: site.vips.map((v) => ({
      name: v.name,
      id: v.id,
      address: v.address,
      insideAddress: v.insideAddress,
      mode: v.mode,
      ports: [...v.ports],
      owner: v.owner,
      servers: v.servers.map((s) => ({ name: s, address: pick(host(site, s), 'int') })),
    })),
    controller: { name: ctl.name, namespace: ctl.namespace, api: apiUrl(site.apis.controller), config: configPath(site, ctl.name) },
    controllers: site.apis.controllers.map((c) => ({
      name: c.host,
      namespace: host(site, c.host).namespace,
      api: apiUrl(c),
      config: configPath(site, c.host),
      socket: controllerSocket(site, c.host),
    })),
    etcd: etcdMembers(site),
    switch: {
      namespace: host(site, SWITCH_HOST).namespace,
      bridges: Object.fromEntries(site.segments.map((s) => [s.name, s.bridge])) as Record<SegmentName, string>,
    },
  };
}

export function configPath(site: Site, hostName: string): string {
  return path.join(site.stateDir, `${hostName}.yaml`);
}

// --- validation ----------------------------------------------------------------------------

/**
 * Checks what the kernel or the other parts would otherwise refuse late and obscurely:
 * interface name lengths, unique addresses and names, addresses inside their segment, peers
 * that exist and point back, VIPs on the external segment with unique ids.
 * Returns the problems found (empty when the site is sound).
 */
export function siteProblems(site: Site): string[] {
  const problems: string[] = [];
  const seenAddress = new Map<string, string>();
  const claim = (address: string, what: string) => {
    const prior = seenAddress.get(address);
    if (prior) problems.push(`address ${address} of ${what} is also ${prior}`);
    else seenAddress.set(address, what);
  };
  const hostNames = new Set<string>();
  for (const h of site.hosts) {
    if (hostNames.has(h.name)) problems.push(`host '${h.name}' defined twice`);
    hostNames.add(h.name);
    if (h.namespace !== `${site.name}-${h.name}`) problems.push(`host '${h.name}': namespace '${h.namespace}' is not '${site.name}-${h.name}'`);
    const ifnames = new Set<string>();
    for (const i of h.interfaces) {
      const where = `${h.name}/${i.name}`;
      if (i.name.length > IFNAMSIZ) problems.push(`${where}: interface name longer than ${IFNAMSIZ} characters`);
      if (ifnames.has(i.name)) problems.push(`${where}: interface defined twice`);
      ifnames.add(i.name);
      claim(i.address, where);
      if ('segment' in i.attach) {
        const seg = site.segments.find((s) => s.name === (i.attach as { segment: SegmentName }).segment);
        if (!seg) problems.push(`${where}: no segment '${i.attach.segment}'`);
        else {
          if (!inNetwork(i.address, `${seg.network}/${seg.prefixLength}`)) problems.push(`${where}: ${i.address} is outside segment ${seg.name} (${seg.network}/${seg.prefixLength})`);
          const port = switchPortName(h.name, seg.name);
          if (port.length > IFNAMSIZ) problems.push(`${where}: switch port name '${port}' longer than ${IFNAMSIZ} characters`);
        }
      } else {
        const { host: peerHost, interface: peerName } = i.attach;
        const peer = site.hosts.find((x) => x.name === peerHost)?.interfaces.find((x) => x.name === peerName);
        if (!peer) problems.push(`${where}: peer ${peerHost}/${peerName} does not exist`);
        else if ('segment' in peer.attach || peer.attach.host !== h.name || peer.attach.interface !== i.name) {
          problems.push(`${where}: peer ${peerHost}/${peerName} does not point back`);
        }
      }
    }
  }
  for (const s of site.segments) if (s.bridge.length > IFNAMSIZ) problems.push(`segment ${s.name}: bridge name longer than ${IFNAMSIZ} characters`);
  const ext = site.segments.find((s) => s.name === 'ext');
  const int = site.segments.find((s) => s.name === 'int');
  const ids = new Set<number>();
  for (const v of site.vips) {
    claim(v.address, `VIP ${v.name}`);
    claim(v.insideAddress, `inside address of VIP ${v.name}`);
    if (ext && !inNetwork(v.address, `${ext.network}/${ext.prefixLength}`)) problems.push(`VIP ${v.name}: ${v.address} is outside the external segment`);
    if (int && !inNetwork(v.insideAddress, `${int.network}/${int.prefixLength}`)) problems.push(`VIP ${v.name}: inside address ${v.insideAddress} is outside the internal segment`);
    if (!Number.isInteger(v.id) || v.id < 1 || v.id > 65535) problems.push(`VIP ${v.name}: id ${v.id} not in 1..65535`);
    if (ids.has(v.id)) problems.push(`VIP ${v.name}: id ${v.id} used twice`);
    ids.add(v.id);
    if (site.hosts.find((x) => x.name === v.owner)?.role !== 'appliance') problems.push(`VIP ${v.name}: owner '${v.owner}' is not an appliance`);
    for (const s of v.servers) if (site.hosts.find((x) => x.name === s)?.role !== 'server') problems.push(`VIP ${v.name}: '${s}' is not a server`);
    // A dnat backend sends its replies through its VIP's inside address (embodiment 1).
    for (const s of v.mode === 'dnat' ? v.servers : []) {
      const via = site.hosts.find((x) => x.name === s)?.routes.find((r) => r.to === 'default')?.via;
      if (via !== undefined && via !== v.insideAddress) problems.push(`VIP ${v.name}: dnat server ${s} routes its replies through ${via}, not ${v.insideAddress}`);
    }
  }
  for (const [name, api] of Object.entries(site.apis.appliances)) {
    if (!site.hosts.find((h) => h.name === name)?.interfaces.some((i) => i.address === api.address)) problems.push(`API of ${name}: ${api.address} is not one of its addresses`);
  }
  return problems;
}

