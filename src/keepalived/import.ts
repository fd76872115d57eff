/**
 * keepalived.conf → a complete vipshift appliance configuration (src/config/appliance.ts). The
 * statements come from the generic parser; here each supported keyword gets its meaning and its
 * checks. The `vrrp` section uses the names of src/config/vrrp.ts (vrrp_instance → instances[],
 * virtual_router_id → vrid, ...); each virtual_server becomes a VIP (those of one address and
 * pool share one, with several ports), its real servers backends with their checks. What
 * keepalived has no word for (the agent's address, the interfaces, owners, SNAT ports) gets a
 * documented default, listed in `defaulted`; what vipshift cannot do is refused with file:line.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { hostname, networkInterfaces } from 'node:os';
import { KeepalivedConfigError, type Position, type Warning } from './diagnostics.js';
import { parse, type Statement } from './parser.js';
import { tokenizeFile, type Token } from './tokenizer.js';
import { IDENTITY_RULE } from '../api/auth.js';

/** keepalived's `virtual_ipaddress` entry: a CIDR, or with the device it goes on (`dev`). */
export type VirtualAddress = string | { address: string; dev: string };

export interface VrrpInstance {
  name: string;
  interface: string;
  vrid: number;
  /** keepalived's vrrp_version (2 unless told 3). */
  version: 2 | 3;
  priority: number;
  /** Seconds, whole centiseconds (VRRPv2: whole seconds). */
  advertIntervalSeconds: number;
  preempt: boolean;
  preemptDelaySeconds: number;
  addresses: VirtualAddress[];
  unicastPeers: string[];
  unicastSource?: string;
  accept: boolean;
  trackInterfaces: string[];
  garpRepeat?: number;
  garpIntervalSeconds?: number;
  /** use_vmac: true, or the macvlan's name. */
  useVmac?: boolean | string;
}

export interface VrrpSyncGroup {
  name: string;
  instances: string[];
}

/** A health check in the words of src/config/check.ts (durations in milliseconds). */
export interface Check {
  enabled?: boolean;
  type?: 'tcp' | 'http' | 'https' | 'script';
  port?: number;
  inter?: number;
  timeout?: number;
  fall?: number;
  source?: string;
  path?: string;
  expect?: number[];
  host?: string;
  command?: string;
  args?: string[];
}

export interface Backend {
  address: string;
  /** Absent: the port the client asked for on the VIP. */
  port?: number;
  weight: number;
  check?: Check;
}

/** One VIP of the appliance schema (src/config/appliance.ts). */
export interface ImportedVip {
  name: string;
  /** The ct mark of its connections: the VIP's position in the file, from 1. */
  id: number;
  address: string;
  prefixLength: number;
  /** The floating address on the servers' subnet (LVS-NAT: their gateway). */
  insideAddress: string;
  protocol: 'tcp' | 'udp';
  ports: number[];
  mode: 'dnat' | 'fullnat';
  scheduler: 'roundrobin' | 'sourcehash' | 'maglev';
  backends: Backend[];
  sorryServer?: { address: string; port?: number };
  onDown?: 'keep' | 'reset';
  check?: Check;
  snatPorts?: string;
  owner: string;
}

/** Notify hooks (src/config/hooks.ts): argv per event kind. */
export type ImportedNotify = Partial<Record<'master' | 'backup' | 'fault' | 'backendUp' | 'backendDown', string[]>>;

/** A complete appliance configuration (src/config/appliance.ts) as a file would say it. */
export interface ImportedConfig {
  appliance: string;
  api: { listen: string };
  interfaces: { external: string; internal: string };
  vips: ImportedVip[];
  vrrp: { instances: VrrpInstance[]; syncGroups: VrrpSyncGroup[] };
  notify?: ImportedNotify;
}

/** Why a field holds what it holds when keepalived had no word for it: a comment above it. */
export interface Defaulted {
  path: (string | number)[];
  comment: string;
}

/** Which keepalived statement a part of the configuration comes from (for file:line of later checks). */
export interface Origin {
  path: (string | number)[];
  at: Position;
}

export interface ImportResult {
  config: ImportedConfig;
  /** Fields set to a documented default, with the reason (printed as YAML comments). */
  defaulted: Defaulted[];
  origins: Origin[];
  warnings: Warning[];
  files: string[];
}

/** What the import reads from the machine it runs on: keepalived.conf names interfaces, not addresses. */
export interface HostFacts {
  hostname: string;
  /** IPv4 addresses of an interface, primary first; [] when it has none or does not exist. */
  addresses(ifname: string): string[];
}

export const hostFacts: HostFacts = {
  hostname: hostname(),
  addresses: (ifname) => (networkInterfaces()[ifname] ?? []).filter((e) => e.family === 'IPv4').map((e) => e.address),
};

/** The agent API's port when keepalived.conf says nothing (the lab's appliances listen there too). */
export const DEFAULT_AGENT_PORT = 8441;
/** The source ports a fullnat VIP's SNAT uses when keepalived says nothing. */
export const DEFAULT_SNAT_PORTS = '20000-29999';

/** Reads FILE and its includes. Throws KeepalivedConfigError naming file and line. */
export function importKeepalivedFile(file: string, host: HostFacts = hostFacts): ImportResult {
  const { tokens, warnings, files } = tokenizeFile(file);
  const { config, defaulted, origins } = importStatements(parse(tokens, warnings), warnings, host, file);
  return { config, defaulted, origins, warnings, files };
}

interface Globals {
  routerId?: string;
  routerIdAt?: Position;
  /** keepalived speaks VRRPv2 unless told vrrp_version 3. */
  version: 2 | 3;
  strict: boolean;
  garpRepeat?: number;
  garpInterval?: number;
}

interface InstanceDraft extends VrrpInstance {
  at: Position;
  startsMaster: boolean;
  notify: Partial<Record<'master' | 'backup' | 'fault' | 'any', { argv: string[]; at: Position }>>;
}

interface VipDraft extends ImportedVip {
  at: Position;
  /** Each virtual_server merged into this VIP: its port and where it stands. */
  services: { port: number; at: Position }[];
}

export function importStatements(
  statements: Statement[],
  warnings: Warning[],
  host: HostFacts = hostFacts,
  /** The file read, for problems of the whole file (an empty one has no statement to name it). */
  file = statements[0]?.file ?? '-',
): { config: ImportedConfig; defaulted: Defaulted[]; origins: Origin[] } {
  const warn = (at: Position, message: string): void => {
    warnings.push({ file: at.file, line: at.line, message });
  };
  const problems: KeepalivedConfigError[] = [];
  const globals: Globals = { strict: false, version: 2 };
  // global_defs first: its settings are defaults for every instance, wherever it stands.
  for (const s of statements) if (s.keyword === 'global_defs') readGlobals(s, globals);

  const instances: InstanceDraft[] = [];
  const syncGroups: VrrpSyncGroup[] = [];
  const groupNotify: InstanceDraft['notify'][] = [];
  const grouped = new Map<string, string>();
  for (const s of statements) {
    if (s.keyword === 'vrrp_instance') {
      const inst = readInstance(s, globals, warn);
      const same = instances.find((i) => i.name === inst.name);
      if (same) throw new KeepalivedConfigError(s, `vrrp_instance ${inst.name} already defined at ${same.at.file}:${same.at.line}`);
      const clash = instances.find((i) => i.interface === inst.interface && i.vrid === inst.vrid);
      if (clash) throw new KeepalivedConfigError(s, `virtual_router_id ${inst.vrid} on ${inst.interface} is already used by ${clash.name}`);
      instances.push(inst);
    }
  }
  for (const s of statements) {
    if (s.keyword === 'vrrp_sync_group') {
      const { group, notify } = readSyncGroup(s, instances, grouped, syncGroups);
      syncGroups.push(group);
      groupNotify.push(notify);
    }
  }
  const defaulted: Defaulted[] = [];
  const note = (path: (string | number)[], comment: string): void => {
    defaulted.push({ path, comment });
  };

  // The appliance's name: keepalived's router_id, whose own default is the host name. It is
  // also the box's key id, so it is made one (keepalived's own default `LVS_DEVEL` → `lvs-devel`).
  let appliance = globals.routerId;
  if (appliance !== undefined) {
    const named = asKeyId(appliance);
    if (named !== appliance) note(['appliance'], `router_id ${appliance} as a key id (${IDENTITY_RULE}): it names this box's key in the credentials`);
    appliance = named;
  } else {
    appliance = asKeyId(host.hostname.split('.')[0]!);
    note(['appliance'], `no router_id in global_defs: the host name, as keepalived does; it names this box's key in the credentials`);
  }

  const vips: VipDraft[] = [];
  const backendNotify: BackendNotify[] = [];
  for (const s of statements) {
    if (s.keyword !== 'virtual_server') continue;
    try {
      readVirtualServer(s, vips, instances, syncGroups, appliance, warn, note, backendNotify);
    } catch (e) {
      if (!(e instanceof KeepalivedConfigError)) throw e;
      problems.push(e);
    }
  }

  // The agent API listens on the address keepalived sends unicast adverts from, or on the
  // first address of the VRRP interface that is not a virtual one.
  const first = instances[0];
  const virtual = new Set(instances.flatMap((i) => i.addresses.map(cidrAddress)));
  let listen: string | undefined;
  const source = instances.find((i) => i.unicastSource)?.unicastSource;
  if (source) {
    listen = `${source}:${DEFAULT_AGENT_PORT}`;
    note(['api', 'listen'], `the agent API: keepalived's unicast_src_ip, port ${DEFAULT_AGENT_PORT}`);
  } else if (first) {
    const address = host.addresses(first.interface).find((a) => !virtual.has(a));
    if (address) {
      listen = `${address}:${DEFAULT_AGENT_PORT}`;
      note(['api', 'listen'], `the agent API: the first address of ${first.interface} (vrrp_instance ${first.name}) that is not a virtual one, port ${DEFAULT_AGENT_PORT}`);
    } else {
      problems.push(new KeepalivedConfigError(first.at, `vrrp_instance ${first.name}: vipshift's agent API needs an address, and ${first.interface} has no IPv4 address on this machine; add unicast_src_ip, or import on the box itself`));
    }
  } else {
    problems.push(new KeepalivedConfigError({ file, line: 1 }, 'no vrrp_instance: vipshift needs one to know its interfaces and to move the VIPs'));
  }

  // The external interface carries the VIPs; the internal one their inside addresses.
  const external = instances.find((i) => vips.some((v) => i.addresses.some((a) => cidrAddress(a) === v.address))) ?? first;
  const insideDev = (() => {
    for (const v of vips) {
      for (const i of instances) {
        const x = i.addresses.find((a) => cidrAddress(a) === v.insideAddress);
        if (x) return typeof x === 'string' ? i.interface : x.dev;
      }
    }
    return undefined;
  })();
  const interfaces = { external: external?.interface ?? 'eth0', internal: insideDev ?? external?.interface ?? 'eth0' };
  note(['interfaces', 'external'], `where the VIPs are: the interface of vrrp_instance ${external?.name ?? '(none)'}`);
  note(
    ['interfaces', 'internal'],
    insideDev ? `where the inside addresses are (the real servers' side)` : `no virtual_server has an inside address on another interface: the same as external`,
  );

  const notify = mapNotify(instances, groupNotify, backendNotify, warn);
  if (problems.length > 0) throw KeepalivedConfigError.all(problems);
  const config: ImportedConfig = {
    appliance,
    api: { listen: listen! },
    interfaces,
    vips: vips.map(({ at: _at, services: _s, ...vip }) => vip),
    vrrp: { instances: instances.map(({ at: _at, startsMaster: _m, notify: _n, ...inst }) => inst), syncGroups },
    ...(notify ? { notify } : {}),
  };
  const top: Position = { file, line: 1 };
  const origins: Origin[] = [
    { path: [], at: top },
    ...(globals.routerIdAt ? [{ path: ['appliance'], at: globals.routerIdAt }] : []),
    ...(first ? [{ path: ['api'], at: first.at }, { path: ['interfaces'], at: first.at }] : []),
    ...vips.map((v, i) => ({ path: ['vips', i], at: v.at })),
    ...instances.map((inst, i) => ({ path: ['vrrp', 'instances', i], at: inst.at })),
  ];
  return { config, defaulted, origins };
}

/** A name made a key id: lower case, other characters as '-', starting with a letter. */
function asKeyId(name: string): string {
  const id = name.toLowerCase().replace(/[^a-z0-9-]/g, '-');
  return (/^[a-z]/.test(id) ? id : `lb-${id}`).slice(0, 32);
}

/**
 * keepalived runs notify scripts per instance or sync group with its own arguments (`notify`:
 * type, name, state, priority); vipshift runs one program per event kind for the box, with the
 * event in the environment. One script for every instance maps; several differing ones do not.
 */
function mapNotify(instances: InstanceDraft[], groups: InstanceDraft['notify'][], backends: BackendNotify[], warn: Warn): ImportedNotify | undefined {
  const out: ImportedNotify = {};
  for (const kind of ['backendUp', 'backendDown'] as const) {
    const distinct = new Map(backends.filter((b) => b.kind === kind).map((b) => [b.argv.join('\0'), b]));
    const [chosen, ...others] = [...distinct.values()];
    if (!chosen) continue;
    out[kind] = chosen.argv;
    for (const o of others) warn(o.at, `notify: vipshift runs one ${kind} program per box; ${chosen.argv[0]} (${chosen.at.file}:${chosen.at.line}) is kept, this one is left out`);
  }
  const sources = [...instances.map((i) => i.notify), ...groups];
  for (const kind of ['master', 'backup', 'fault'] as const) {
    const scripts = sources.flatMap((n) => [n[kind], n.any].filter((x) => x !== undefined));
    const distinct = new Map(scripts.map((x) => [x.argv.join('\0'), x]));
    if (distinct.size === 0) continue;
    const [chosen, ...others] = [...distinct.values()];
    out[kind] = chosen!.argv;
    for (const o of others) warn(o.at, `notify: vipshift runs one ${kind} program per box; ${chosen!.argv[0]} (${chosen!.at.file}:${chosen!.at.line}) is kept, this one is left out`);
  }
  for (const n of sources) {
    if (n.any) warn(n.any.at, `notify ${n.any.argv[0]}: runs on master, backup and fault with the event in its environment (VIPSHIFT_EVENT, VIPSHIFT_VIP...), not keepalived's four arguments`);
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

type Warn = (at: Position, message: string) => void;

function readGlobals(s: Statement, g: Globals): void {
  for (const c of s.children ?? []) {
    const [a] = c.args;
    switch (c.keyword) {
      case 'router_id':
        g.routerId = a!.text;
        g.routerIdAt = a!;
        break;
      case 'vrrp_version':
        g.version = integer(a!, 2, 3, 'vrrp_version') as 2 | 3;
        break;
      case 'vrrp_strict':
        g.strict = true;
        break;
      case 'vrrp_garp_master_repeat':
        g.garpRepeat = integer(a!, 1, 100, 'vrrp_garp_master_repeat');
        break;
      case 'vrrp_garp_interval':
        g.garpInterval = seconds(a!, 0, 10, 'vrrp_garp_interval');
        break;
    }
  }
}

function readInstance(s: Statement, g: Globals, warn: Warn): InstanceDraft {
  const name = s.args[0]!.text;
  let iface: string | undefined;
  let vrid: number | undefined;
  let explicitAccept: boolean | undefined;
  let priority: number | undefined;
  let nopreempt: Position | undefined;
  const inst: InstanceDraft = {
    name,
    interface: '',
    vrid: 0,
    priority: 100,
    advertIntervalSeconds: 1,
    preempt: true,
    preemptDelaySeconds: 0,
    addresses: [],
    unicastPeers: [],
    accept: false,
    trackInterfaces: [],
    at: { file: s.file, line: s.line },
    startsMaster: false,
    version: g.version,
    notify: {},
  };
  let advertAt: Token | undefined;
  let auth: Statement | undefined;
  for (const c of s.children ?? []) {
    const a = c.args[0]!;
    switch (c.keyword) {
      case 'state':
        if (a.text !== 'MASTER' && a.text !== 'BACKUP') throw new KeepalivedConfigError(a, `state must be MASTER or BACKUP, not '${a.text}'`);
        inst.startsMaster = a.text === 'MASTER';
        break;
      case 'interface':
        iface = interfaceName(a);
        break;
      case 'virtual_router_id':
        vrid = integer(a, 1, 255, 'virtual_router_id (VRID)');
        break;
      case 'priority':
        priority = integer(a, 1, 255, 'priority');
        break;
      case 'advert_int':
        inst.advertIntervalSeconds = centiseconds(a, warn);
        advertAt = a;
        break;
      case 'version':
        inst.version = integer(a, 2, 3, 'version') as 2 | 3;
        break;
      case 'use_vmac':
        inst.useVmac = c.args[0] ? interfaceName(c.args[0]) : true;
        break;
      case 'authentication':
        auth = c;
        break;
      case 'notify_master':
      case 'notify_backup':
      case 'notify_fault':
      case 'notify': {
        const argv = notifyArgv(c, warn);
        if (argv) inst.notify[c.keyword === 'notify' ? 'any' : (c.keyword.slice('notify_'.length) as 'master')] = { argv, at: c };
        break;
      }
      case 'preempt':
        nopreempt = undefined;
        break;
      case 'nopreempt':
        nopreempt = c;
        break;
      case 'preempt_delay':
        inst.preemptDelaySeconds = seconds(a, 0, 1000, 'preempt_delay');
        break;
      case 'virtual_ipaddress':
        for (const line of c.lines ?? []) inst.addresses.push(virtualAddress(line, warn));
        break;
      case 'unicast_src_ip':
        inst.unicastSource = ipv4(a, 'unicast_src_ip');
        break;
      case 'unicast_peer':
        for (const [peer, ...rest] of c.lines ?? []) {
          inst.unicastPeers.push(ipv4(peer!, 'unicast_peer'));
          if (rest.length > 0) warn(rest[0]!, `unicast_peer options '${words(rest)}' are not supported; ignored`);
        }
        break;
      case 'track_interface':
        for (const [dev, ...rest] of c.lines ?? []) {
          inst.trackInterfaces.push(interfaceName(dev!));
          if (rest.length > 0) warn(rest[0]!, `track_interface '${words(rest)}': weights are not supported; a tracked link down means fault`);
        }
        break;
      case 'accept':
        explicitAccept = true;
        break;
      case 'no_accept':
        explicitAccept = false;
        break;
      case 'garp_master_repeat':
        inst.garpRepeat = integer(a, 1, 100, 'garp_master_repeat');
        break;
      case 'garp_interval':
        inst.garpIntervalSeconds = seconds(a, 0, 10, 'garp_interval');
        break;
    }
  }
  if (iface === undefined) throw new KeepalivedConfigError(s, `vrrp_instance ${name} has no interface`);
  if (vrid === undefined) throw new KeepalivedConfigError(s, `vrrp_instance ${name} has no virtual_router_id`);
  if (inst.addresses.length === 0) throw new KeepalivedConfigError(s, `vrrp_instance ${name} has no virtual_ipaddress; vipshift needs at least one`);
  if (inst.addresses.length > 255) throw new KeepalivedConfigError(s, `vrrp_instance ${name} has ${inst.addresses.length} addresses; an advertisement carries at most 255`);
  inst.interface = iface;
  inst.vrid = vrid;
  if (inst.version === 2 && !Number.isInteger(inst.advertIntervalSeconds)) {
    // As keepalived: VRRPv2 carries whole seconds (RFC 3768 §5.3.7).
    const rounded = Math.max(1, Math.round(inst.advertIntervalSeconds));
    warn(advertAt ?? s, `advert_int ${inst.advertIntervalSeconds} rounded to ${rounded}: VRRPv2 carries whole seconds (RFC 3768 §5.3.7), as keepalived rounds it`);
    inst.advertIntervalSeconds = rounded;
  }
  if (inst.version === 3 && inst.advertIntervalSeconds > 40.95) throw new KeepalivedConfigError(advertAt ?? s, `advert_int ${inst.advertIntervalSeconds} is over 40.95 s, the most VRRPv3 carries (RFC 5798 §5.2.7)`);
  if (auth) {
    warn(
      auth,
      inst.version === 2
        ? 'authentication: vipshift sends VRRPv2 adverts with Auth Type 0 (RFC 3768 removed authentication) and accepts PASS/AH unchecked; a keepalived peer with this block drops vipshift\'s adverts: remove it on the peers'
        : 'authentication: VRRPv3 has no authentication (RFC 5798 §9); ignored',
    );
  }
  // As keepalived 2.2: `state MASTER` without a priority makes this node the address owner.
  inst.priority = priority ?? (inst.startsMaster ? 255 : 100);
  if (nopreempt && (inst.startsMaster || inst.priority === 255)) {
    warn(nopreempt, `nopreempt has no effect with ${inst.startsMaster ? 'state MASTER' : 'priority 255'} (keepalived clears it too); preempting`);
  } else if (nopreempt) {
    inst.preempt = false;
    if (inst.preemptDelaySeconds > 0) {
      warn(nopreempt, 'preempt_delay has no effect with nopreempt (keepalived resets it too)');
      inst.preemptDelaySeconds = 0;
    }
  }
  // `dev` naming the instance's own interface says nothing more than the plain CIDR.
  inst.addresses = inst.addresses.map((x) => (typeof x !== 'string' && x.dev === iface ? x.address : x));
  // keepalived only drops traffic to a backup-held address in vrrp_strict mode; without it the
  // addresses answer whatever the accept setting says, which is RFC 5798's Accept_Mode = True.
  inst.accept = explicitAccept ?? !g.strict;
  if (inst.garpRepeat === undefined && g.garpRepeat !== undefined) inst.garpRepeat = g.garpRepeat;
  if (inst.garpIntervalSeconds === undefined && g.garpInterval !== undefined) inst.garpIntervalSeconds = g.garpInterval;
  return inst;
}

function readSyncGroup(
  s: Statement,
  instances: InstanceDraft[],
  grouped: Map<string, string>,
  groups: VrrpSyncGroup[],
): { group: VrrpSyncGroup; notify: InstanceDraft['notify'] } {
  const name = s.args[0]!.text;
  if (groups.some((g) => g.name === name)) throw new KeepalivedConfigError(s, `vrrp_sync_group ${name} already defined`);
  const members: string[] = [];
  const notify: InstanceDraft['notify'] = {};
  for (const c of s.children ?? []) {
    if (['notify_master', 'notify_backup', 'notify_fault', 'notify'].includes(c.keyword)) {
      const argv = notifyArgv(c, () => undefined);
      if (argv) notify[c.keyword === 'notify' ? 'any' : (c.keyword.slice('notify_'.length) as 'master')] = { argv, at: c };
      continue;
    }
    if (c.keyword !== 'group') continue;
    for (const line of c.lines ?? []) {
      for (const t of line) {
        if (!instances.some((i) => i.name === t.text)) throw new KeepalivedConfigError(t, `vrrp_sync_group ${name}: no vrrp_instance named '${t.text}'`);
        const other = grouped.get(t.text);
        if (other !== undefined) throw new KeepalivedConfigError(t, `vrrp_instance ${t.text} is already in vrrp_sync_group ${other}`);
        grouped.set(t.text, name);
        members.push(t.text);
      }
    }
  }
  if (members.length === 0) throw new KeepalivedConfigError(s, `vrrp_sync_group ${name} has no group { } members`);
  return { group: { name, instances: members }, notify };
}

/** A notify script's argv: keepalived splits a quoted "path args" at spaces. Hooks need an absolute path. */
function notifyArgv(c: Statement, warn: Warn): string[] | undefined {
  const argv = c.args.flatMap((t) => (t.quoted ? t.text.split(/\s+/).filter(Boolean) : [t.text]));
  if (!argv[0]?.startsWith('/')) {
    warn(c, `${c.keyword} ${argv[0] ?? ''}: vipshift runs hooks without a shell or PATH search and needs an absolute path; left out`);
    return undefined;
  }
  return argv;
}

const SCHEDULERS: Record<string, ImportedVip['scheduler']> = { rr: 'roundrobin', wrr: 'roundrobin', sh: 'sourcehash', mh: 'maglev' };

type Note = (path: (string | number)[], comment: string) => void;

/**
 * One virtual_server: a new VIP, or another port of the VIP with the same address, protocol
 * and pool (keepalived needs one virtual_server per port; vipshift's VIP has a port list).
 */
function readVirtualServer(
  s: Statement,
  vips: VipDraft[],
  instances: InstanceDraft[],
  groups: VrrpSyncGroup[],
  appliance: string,
  warn: Warn,
  note: Note,
  backendNotify: BackendNotify[],
): void {
  const [first, second] = s.args as [Token, Token];
  if (first.text === 'fwmark') {
    throw new KeepalivedConfigError(s, `virtual_server fwmark ${second.text}: vipshift selects a VIP's traffic by address and port, not by a firewall mark; list a virtual_server per ADDRESS PORT`);
  }
  if (first.text === 'group') {
    throw new KeepalivedConfigError(s, `virtual_server group ${second.text}: virtual_server_group is not supported; list a virtual_server per ADDRESS PORT`);
  }
  if (isIPv6(first.text)) throw new KeepalivedConfigError(s, `virtual_server ${first.text}: vipshift's NAT is IPv4 only`);
  const address = ipv4(first, 'virtual_server address');
  const port = integer(second, 1, 65535, 'virtual_server port');
  let protocol: ImportedVip['protocol'] = 'tcp';
  let scheduler: ImportedVip['scheduler'] | undefined;
  let algo: Token | undefined;
  let persistence: Statement | undefined;
  let delayLoop: number | undefined;
  let virtualhost: string | undefined;
  let sorry: ImportedVip['sorryServer'];
  const backends: (Backend & { at: Position; inhibit: boolean })[] = [];
  for (const c of s.children ?? []) {
    const a = c.args[0];
    switch (c.keyword) {
      case 'protocol':
        if (a!.text === 'TCP' || a!.text === 'UDP') protocol = a!.text === 'TCP' ? 'tcp' : 'udp';
        else if (a!.text === 'SCTP') throw new KeepalivedConfigError(a!, `virtual_server ${address} ${port}: protocol SCTP is not supported (TCP, UDP)`);
        else throw new KeepalivedConfigError(a!, `protocol must be TCP, UDP or SCTP, not '${a!.text}'`);
        break;
      case 'lb_kind':
        if (!['NAT', 'DR', 'TUN'].includes(a!.text)) throw new KeepalivedConfigError(a!, `lb_kind must be NAT, DR or TUN, not '${a!.text}'`);
        if (a!.text !== 'NAT') {
          throw new KeepalivedConfigError(a!, `virtual_server ${address} ${port}: lb_kind ${a!.text} is not supported: vipshift translates addresses (NAT) so that a VIP's connections can move between appliances`);
        }
        break;
      case 'lb_algo':
        algo = a;
        scheduler = SCHEDULERS[a!.text];
        if (!scheduler) warn(a!, `lb_algo ${a!.text} is not supported (rr, wrr, sh, mh); using roundrobin`);
        break;
      case 'persistence_timeout':
        persistence = c;
        break;
      case 'delay_loop':
        delayLoop = seconds(a!, 0.1, 3600, 'delay_loop');
        break;
      case 'virtualhost':
        virtualhost = a!.text;
        break;
      case 'sorry_server':
        sorry = { address: ipv4(a!, 'sorry_server address'), ...(c.args[1] ? { port: integer(c.args[1], 1, 65535, 'sorry_server port') } : {}) };
        break;
      case 'real_server': {
        const backend = readRealServer(c, port, delayLoop, virtualhost, warn, backendNotify);
        const dup = backends.find((b) => b.address === backend.address && (b.port ?? port) === (backend.port ?? port));
        if (dup) throw new KeepalivedConfigError(c, `real_server ${backend.address} ${backend.port ?? port} is listed twice`);
        backends.push(backend);
        break;
      }
    }
  }
  if (backends.length === 0 && !sorry) throw new KeepalivedConfigError(s, `virtual_server ${address} ${port} has no real_server and no sorry_server: nothing to send its connections to`);
  if (algo === undefined) warn(s, `virtual_server ${address} ${port} has no lb_algo; using roundrobin`);
  if (algo?.text === 'rr' && new Set(backends.map((b) => b.weight)).size > 1) {
    warn(algo, 'lb_algo rr: IPVS ignores weights, vipshift roundrobin honours them (as wrr)');
  }
  if (persistence) {
    // IPVS keeps a client on its real server for the timeout; Maglev's consistent hash keeps
    // it there as long as the pool does not change, without a timer.
    if (scheduler === 'roundrobin' || scheduler === undefined) scheduler = 'maglev';
    warn(persistence, `persistence_timeout: a client stays on its backend by consistent hashing (scheduler ${scheduler}) for as long as the pool is unchanged, not for a timeout`);
  }
  const where = `${s.file}:${s.line}`;

  // Every real server with one checker: the VIP's; others differ by an override.
  const checks = backends.map((b) => b.check);
  const common = checks.find((c) => c !== undefined);
  const vipCheck = common && checks.every((c) => c === undefined || JSON.stringify(c) === JSON.stringify(common)) ? common : undefined;
  const pool: Backend[] = backends.map(({ at: _at, inhibit: _i, check, ...b }) => {
    if (check === undefined) return { ...b, check: { enabled: false } }; // keepalived: always in service
    return vipCheck ? b : { ...b, check };
  });
  const onDown = backends.some((b) => b.inhibit) ? 'keep' : undefined;

  const carrier = instances.find((i) => i.addresses.some((x) => cidrAddress(x) === address));
  if (!carrier) throw new KeepalivedConfigError(s, `virtual_server ${address}: no vrrp_instance has ${address} in virtual_ipaddress; vipshift moves a VIP with VRRP, add it to one`);
  const existing = vips.find((v) => v.address === address);
  // Each VIP has an inside address of its own (it moves with the VIP): the first one free.
  const taken = new Set(vips.filter((v) => v !== existing).map((v) => v.insideAddress));
  const inside = existing?.insideAddress ?? insideAddress(carrier, backends, instances, groups, address, taken);
  if (!inside) {
    const used = insideAddress(carrier, backends, instances, groups, address, new Set());
    if (used) {
      const other = vips.find((v) => v.insideAddress === used)!;
      throw new KeepalivedConfigError(
        s,
        `virtual_server ${address}: the real servers' subnet has no virtual_ipaddress left for it (${used} is ${other.address}'s, ${other.at.file}:${other.at.line}); each VIP needs its own inside address there (it moves with the VIP): add one to vrrp_instance ${carrier.name} or its sync group`,
      );
    }
    throw new KeepalivedConfigError(
      s,
      `virtual_server ${address} ${port}: vipshift needs an inside address for this VIP (the real servers' gateway in LVS-NAT, the source of fullnat): add a virtual_ipaddress on the real servers' subnet to vrrp_instance ${carrier.name} or its sync group`,
    );
  }

  const samePool = (v: VipDraft) => JSON.stringify(v.backends) === JSON.stringify(pool) && v.protocol === protocol;
  if (existing) {
    // Ports of one pool share a VIP when each backend serves the port asked for.
    if (!samePool(existing) || pool.some((b) => b.port !== undefined) || existing.services.some((x) => x.port === port)) {
      throw new KeepalivedConfigError(
        s,
        `virtual_server ${address} ${port}: ${address} is already a VIP (${existing.at.file}:${existing.at.line}) with another pool, protocol or port mapping; a vipshift VIP has one pool for all its ports: give this service its own virtual address`,
      );
    }
    existing.ports.push(port);
    existing.services.push({ port, at: s });
    return;
  }
  const x = carrier.addresses.find((y) => cidrAddress(y) === address)!;
  const prefixLength = prefixOf(x);
  if (prefixLength < 1) throw new KeepalivedConfigError(s, `virtual_server ${address}: its virtual_ipaddress has prefix /0`);
  const index = vips.length;
  // LVS-NAT is vipshift's dnat: the servers see the client's address and route their replies
  // through the VIP's inside address. A server can have one such gateway, so one already in
  // another dnat VIP makes this one fullnat (the appliance rewrites the source as well).
  const shared = pool.find((b) => vips.some((v) => v.mode === 'dnat' && v.backends.some((o) => o.address === b.address)));
  const mode: ImportedVip['mode'] = shared ? 'fullnat' : 'dnat';
  if (shared) warn(s, `virtual_server ${address} ${port}: real server ${shared.address} already routes through another VIP's inside address, so this one is fullnat: its servers see ${inside} as the client`);
  const vip: VipDraft = {
    name: `vip${index + 1}`,
    id: index + 1,
    address,
    prefixLength,
    insideAddress: inside,
    protocol,
    ports: [port],
    mode,
    scheduler: scheduler ?? 'roundrobin',
    backends: pool,
    ...(sorry ? { sorryServer: sorry } : {}),
    ...(onDown ? { onDown } : {}),
    ...(vipCheck ? { check: vipCheck } : {}),
    ...(mode === 'fullnat' ? { snatPorts: DEFAULT_SNAT_PORTS } : {}),
    owner: carrier.startsMaster || carrier.priority === 255 ? appliance : PEER_OWNER,
    at: s,
    services: [{ port, at: s }],
  };
  vips.push(vip);
  const at = (...rest: string[]) => ['vips', index, ...rest];
  note(at('name'), `virtual_server ${address} ${port} (${where}); the name is vipshift's own`);
  note(at('id'), 'the ct mark of its connections: its place among the VIPs of this file');
  note(at('insideAddress'), `the virtual_ipaddress on the real servers' subnet that moves with ${address} (their gateway)`);
  note(
    at('mode'),
    mode === 'dnat'
      ? "lb_kind NAT: dnat, the servers see the client's address and route back through the inside address"
      : 'lb_kind NAT, but a real server already routes through another VIP: fullnat, the servers see the inside address as the source',
  );
  if (mode === 'fullnat') note(at('snatPorts'), 'source ports of the SNAT toward the servers (keepalived has no word for them)');
  note(
    at('owner'),
    vip.owner === appliance
      ? `vrrp_instance ${carrier.name} starts MASTER here (or has priority 255): this box owns it first`
      : `vrrp_instance ${carrier.name} starts BACKUP here: another box owns it first; keepalived.conf does not name it`,
  );
}

/** The owner of a VIP this box backs up: keepalived.conf names no other box. */
export const PEER_OWNER = 'peer';

/**
 * In LVS-NAT the real servers' gateway is a floating address on their subnet that moves with
 * the VIP: one in the same instance or sync group as the VIP's address, else any instance's.
 */
function insideAddress(
  carrier: InstanceDraft,
  backends: Backend[],
  instances: InstanceDraft[],
  groups: VrrpSyncGroup[],
  vip: string,
  taken: Set<string>,
): string | undefined {
  if (backends.length === 0) return undefined;
  const group = groups.find((gr) => gr.instances.includes(carrier.name));
  const near = instances.filter((i) => i === carrier || (group?.instances.includes(i.name) ?? false));
  for (const pool of [near, instances]) {
    for (const inst of pool) {
      for (const x of inst.addresses) {
        const a = cidrAddress(x);
        if (a !== vip && !taken.has(a) && backends.every((b) => sameSubnet(a, b.address, prefixOf(x)))) return a;
      }
    }
  }
  return undefined;
}

/** A real server's notify_up / notify_down: the appliance's backendUp / backendDown hooks. */
interface BackendNotify {
  kind: 'backendUp' | 'backendDown';
  argv: string[];
  at: Position;
}

function readRealServer(
  s: Statement,
  virtualPort: number,
  delayLoop: number | undefined,
  virtualhost: string | undefined,
  warn: Warn,
  backendNotify: BackendNotify[],
): Backend & { at: Position; inhibit: boolean } {
  const [addr, portToken] = s.args;
  const address = ipv4(addr!, 'real_server address');
  const port = portToken ? integer(portToken, 1, 65535, 'real_server port') : virtualPort;
  let weight = 1;
  let inhibit = false;
  let check: Check | undefined;
  for (const c of s.children ?? []) {
    if (c.keyword === 'weight') {
      const w = c.args[0]!;
      weight = integer(w, 0, 65535, 'weight');
      if (weight > MAX_WEIGHT) {
        warn(w, `weight ${weight}: vipshift's weights are 0..${MAX_WEIGHT}; using ${MAX_WEIGHT}`);
        weight = MAX_WEIGHT;
      }
    } else if (c.keyword === 'inhibit_on_failure') inhibit = true;
    else if (c.keyword === 'notify_up' || c.keyword === 'notify_down') {
      const argv = notifyArgv(c, warn);
      if (argv) backendNotify.push({ kind: c.keyword === 'notify_up' ? 'backendUp' : 'backendDown', argv, at: c });
    }
    else if (['TCP_CHECK', 'HTTP_GET', 'SSL_GET', 'MISC_CHECK'].includes(c.keyword)) {
      if (check) warn(c, `real_server ${address} ${port}: one checker per backend in vipshift; this ${c.keyword} is left out`);
      else check = readChecker(c, delayLoop, virtualhost, warn);
    }
  }
  return { address, ...(port === virtualPort ? {} : { port }), weight, ...(check ? { check } : {}), at: s, inhibit };
}

/** The vipshift weight range (src/config/appliance.ts): IPVS's 0..65535 is cut there. */
export const MAX_WEIGHT = 256;

/** TCP_CHECK / HTTP_GET / SSL_GET / MISC_CHECK → a check of src/config/check.ts. */
function readChecker(c: Statement, delayLoop: number | undefined, virtualhost: string | undefined, warn: Warn): Check {
  const types: Record<string, NonNullable<Check['type']>> = { TCP_CHECK: 'tcp', HTTP_GET: 'http', SSL_GET: 'https', MISC_CHECK: 'script' };
  const type = types[c.keyword]!;
  const check: Check = { type };
  if (delayLoop !== undefined) check.inter = Math.round(delayLoop * 1000);
  let urls = 0;
  for (const k of c.children ?? []) {
    const a = k.args[0]!;
    switch (k.keyword) {
      case 'connect_timeout':
        check.timeout = Math.round(seconds(a, 0.01, 600, 'connect_timeout') * 1000);
        break;
      case 'connect_port':
        check.port = integer(a, 1, 65535, 'connect_port');
        break;
      case 'bindto':
        check.source = ipv4(a, 'bindto');
        break;
      case 'retry':
        // keepalived retries this many times before it calls the server down.
        check.fall = Math.min(100, Math.max(1, integer(a, 0, 1000, 'retry')));
        break;
      case 'delay_loop':
        check.inter = Math.round(seconds(a, 0.1, 3600, 'delay_loop') * 1000);
        break;
      case 'delay_before_retry':
        warn(k, 'delay_before_retry: vipshift checks every inter (delay_loop), also after a failure');
        break;
      case 'virtualhost':
        virtualhost = a.text;
        break;
      case 'url':
        if (urls++ > 0) {
          warn(k, 'one url per check in vipshift; this one is left out');
          break;
        }
        for (const u of k.children ?? []) {
          if (u.keyword === 'path') check.path = u.args[0]!.text;
          if (u.keyword === 'status_code') check.expect = [...(check.expect ?? []), ...u.args.map((t) => integer(t, 100, 599, 'status_code'))];
          if (u.keyword === 'virtualhost') check.host = u.args[0]!.text;
        }
        break;
      case 'misc_path': {
        const argv = k.args.flatMap((t) => (t.quoted ? t.text.split(/\s+/).filter(Boolean) : [t.text]));
        check.command = argv[0]!;
        if (argv.length > 1) check.args = argv.slice(1);
        if (!check.command.startsWith('/')) warn(k, `misc_path ${check.command}: vipshift runs check scripts without a shell or PATH search; give an absolute path`);
        break;
      }
      case 'misc_timeout':
        check.timeout = Math.round(seconds(a, 0.01, 600, 'misc_timeout') * 1000);
        break;
    }
  }
  if ((type === 'http' || type === 'https') && check.host === undefined && virtualhost !== undefined) check.host = virtualhost;
  if (type === 'script' && check.command === undefined) throw new KeepalivedConfigError(c, 'MISC_CHECK without misc_path: nothing to run');
  // vipshift's rule: a check's timeout is at most its interval; keepalived lets it run over.
  const inter = check.inter ?? 2000;
  if (check.timeout !== undefined && check.timeout > inter) {
    warn(c, `${c.keyword}: timeout ${check.timeout / 1000} s is longer than the interval (delay_loop ${inter / 1000} s); using the interval`);
    check.timeout = inter;
  }
  return check;
}

/** One `virtual_ipaddress` line: ADDRESS[/PREFIX] [dev IF] [label L] [brd B] [scope S] ... */
function virtualAddress(line: Token[], warn: Warn): VirtualAddress {
  const [head, ...options] = line as [Token, ...Token[]];
  const cidr = cidrv4(head);
  let dev: string | undefined;
  for (let i = 0; i < options.length; i++) {
    const o = options[i]!;
    const value = options[i + 1];
    switch (o.text) {
      case 'dev':
        if (!value) throw new KeepalivedConfigError(o, `'dev' needs an interface name`);
        dev = interfaceName(value);
        i++;
        break;
      case 'label':
      case 'brd':
      case 'broadcast':
      case 'scope':
        if (!value) throw new KeepalivedConfigError(o, `'${o.text}' needs a value`);
        warn(o, `virtual_ipaddress ${head.text}: ${o.text} ${value.text} is not supported; ignored`);
        i++;
        break;
      default:
        warn(o, `virtual_ipaddress ${head.text}: option '${o.text}' is not supported; ignored`);
    }
  }
  return dev === undefined ? cidr : { address: cidr, dev };
}

function words(tokens: Token[]): string {
  return tokens.map((t) => t.text).join(' ');
}

function integer(t: Token, min: number, max: number, what: string): number {
  if (!/^\d+$/.test(t.text)) throw new KeepalivedConfigError(t, `${what} must be a whole number, not '${t.text}'`);
  const n = Number(t.text);
  if (n < min || n > max) throw new KeepalivedConfigError(t, `${what} ${t.text} is outside ${min}-${max}`);
  return n;
}

function seconds(t: Token, min: number, max: number, what: string): number {
  if (!/^\d+(\.\d+)?$/.test(t.text)) throw new KeepalivedConfigError(t, `${what} must be a number of seconds, not '${t.text}'`);
  const n = Number(t.text);
  if (n < min || n > max) throw new KeepalivedConfigError(t, `${what} ${t.text} is outside ${min}-${max} seconds`);
  return n;
}

/** advert_int: RFC 5798 §5.2.7 carries centiseconds (up to 40.95 s), RFC 3768 whole seconds (up to 255). */
function centiseconds(t: Token, warn: Warn): number {
  const s = seconds(t, 0.01, 255, 'advert_int');
  const rounded = Math.round(s * 100) / 100;
  if (rounded !== s) warn(t, `advert_int ${t.text} rounded to ${rounded} (whole centiseconds, RFC 5798 §5.2.7)`);
  return rounded;
}

function interfaceName(t: Token): string {
  if (!/^[^\s/:]{1,15}$/.test(t.text)) throw new KeepalivedConfigError(t, `'${t.text}' is not an interface name (1-15 characters, no space, / or :)`);
  return t.text;
}

function ipv4(t: Token, what: string): string {
  if (!isIPv4(t.text)) throw new KeepalivedConfigError(t, `${what} '${t.text}' is not an IPv4 address`);
  return t.text;
}

function cidrv4(t: Token): string {
  const [addr, prefix, extra] = t.text.split('/');
  if (extra !== undefined || !isIPv4(addr!)) throw new KeepalivedConfigError(t, `virtual_ipaddress '${t.text}' is not an IPv4 address with optional /prefix`);
  if (prefix === undefined) return `${addr}/32`;
  if (!/^\d{1,2}$/.test(prefix) || Number(prefix) > 32) throw new KeepalivedConfigError(t, `virtual_ipaddress '${t.text}': prefix must be 0-32`);
  return `${addr}/${Number(prefix)}`;
}

function cidrAddress(x: VirtualAddress): string {
  return (typeof x === 'string' ? x : x.address).split('/')[0]!;
}

function prefixOf(x: VirtualAddress): number {
  return Number((typeof x === 'string' ? x : x.address).split('/')[1]);
}

function toUint32(a: string): number {
  return a.split('.').reduce((n, o) => n * 256 + Number(o), 0);
}

function sameSubnet(a: string, b: string, prefix: number): boolean {
  if (prefix === 0) return true;
  const shift = 32 - prefix;
  return Math.floor(toUint32(a) / 2 ** shift) === Math.floor(toUint32(b) / 2 ** shift);
}
