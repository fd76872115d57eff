/**
 * keepalived.conf → vipshift configuration. The statements come from the generic parser; here
 * each supported keyword gets its meaning and its checks. The `vrrp` section uses the names of
 * src/config/vrrp.ts (vrrp_instance → instances[], virtual_router_id → vrid, ...); `vips` follow
 * the appliance schema (src/config/appliance.ts) where keepalived says enough, one per virtual_server.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { KeepalivedConfigError, type Position, type Warning } from './diagnostics.js';
import { parse, type Statement } from './parser.js';
import { tokenizeFile, type Token } from './tokenizer.js';

/** keepalived's `virtual_ipaddress` entry: a CIDR, or with the device it goes on (`dev`). */
export type VirtualAddress = string | { address: string; dev: string };

export interface VrrpInstance {
  name: string;
  interface: string;
  vrid: number;
  priority: number;
  /** Seconds, whole centiseconds. */
  advertInterval: number;
  preempt: boolean;
  preemptDelay: number;
  addresses: VirtualAddress[];
  unicastPeers: string[];
  unicastSource?: string;
  accept: boolean;
  trackInterfaces: string[];
  garpRepeat?: number;
  garpInterval?: number;
}

export interface VrrpSyncGroup {
  name: string;
  instances: string[];
}

export interface Backend {
  address: string;
  port: number;
  weight: number;
}

export interface ImportedVip {
  name: string;
  /** The ct mark of its connections: the virtual_server's position in the file, from 1. */
  id: number;
  address: string;
  prefixLength?: number;
  /** The floating address on the servers' subnet (LVS-NAT: their gateway), if keepalived moves one. */
  insideAddress?: string;
  protocol: 'tcp' | 'udp';
  port: number;
  ports: number[];
  mode: 'dnat' | 'fullnat';
  scheduler: 'roundrobin' | 'sourcehash';
  backends: Backend[];
  /** The appliance schema's view of backends: the same servers without ports. */
  servers: { address: string; weight: number }[];
  /** router_id, when this node's instance carrying the address starts as MASTER. */
  owner?: string;
}

export interface ImportedConfig {
  appliance?: string;
  vips: ImportedVip[];
  vrrp: { instances: VrrpInstance[]; syncGroups: VrrpSyncGroup[] };
}

export interface ImportResult {
  config: ImportedConfig;
  warnings: Warning[];
  files: string[];
}

/** Reads FILE and its includes. Throws KeepalivedConfigError naming file and line. */
export function importKeepalivedFile(file: string): ImportResult {
  const { tokens, warnings, files } = tokenizeFile(file);
  return { config: importStatements(parse(tokens, warnings), warnings), warnings, files };
}

interface Globals {
  routerId?: string;
  /** keepalived speaks VRRPv2 unless told vrrp_version 3. */
  version: number;
  strict: boolean;
  garpRepeat?: number;
  garpInterval?: number;
}

interface InstanceDraft extends VrrpInstance {
  at: Position;
  startsMaster: boolean;
  version: number;
}

export function importStatements(statements: Statement[], warnings: Warning[]): ImportedConfig {
  const warn = (at: Position, message: string): void => {
    warnings.push({ file: at.file, line: at.line, message });
  };
  const globals: Globals = { strict: false, version: 2 };
  // global_defs first: its settings are defaults for every instance, wherever it stands.
  for (const s of statements) if (s.keyword === 'global_defs') readGlobals(s, globals, warn);

  const instances: InstanceDraft[] = [];
  const syncGroups: VrrpSyncGroup[] = [];
  const vips: ImportedVip[] = [];
  const grouped = new Map<string, string>();
  const groupStatements = statements.filter((s) => s.keyword === 'vrrp_sync_group');
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
  const v2 = instances.find((i) => i.version === 2);
  if (v2) {
    // A keepalived peer left at VRRPv2 and vipshift (VRRPv3) would both become master.
    warn(v2.at, `vrrp_instance ${v2.name} is VRRPv2 in keepalived (its default without vrrp_version 3); vipshift speaks VRRPv3 (RFC 5798) only: set vrrp_version 3 on the keepalived peers`);
  }
  for (const s of groupStatements) syncGroups.push(readSyncGroup(s, instances, grouped, syncGroups));
  for (const s of statements) {
    if (s.keyword === 'virtual_server') {
      const vip = readVirtualServer(s, vips.length + 1, instances, syncGroups, globals, warn);
      if (vip) vips.push(vip);
    }
  }

  const config: ImportedConfig = {
    vips,
    vrrp: { instances: instances.map(({ at: _at, startsMaster: _m, version: _v, ...inst }) => inst), syncGroups },
  };
  return globals.routerId === undefined ? config : { appliance: globals.routerId, ...config };
}

type Warn = (at: Position, message: string) => void;

function readGlobals(s: Statement, g: Globals, warn: Warn): void {
  for (const c of s.children ?? []) {
    const [a] = c.args;
    switch (c.keyword) {
      case 'router_id':
        g.routerId = a!.text;
        break;
      case 'vrrp_version':
        g.version = integer(a!, 2, 3, 'vrrp_version');
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
    advertInterval: 1,
    preempt: true,
    preemptDelay: 0,
    addresses: [],
    unicastPeers: [],
    accept: false,
    trackInterfaces: [],
    at: { file: s.file, line: s.line },
    startsMaster: false,
    version: g.version,
  };
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
        inst.advertInterval = centiseconds(a, warn);
        break;
      case 'version':
        inst.version = integer(a, 2, 3, 'version');
        break;
      case 'preempt':
        nopreempt = undefined;
        break;
      case 'nopreempt':
        nopreempt = c;
        break;
      case 'preempt_delay':
        inst.preemptDelay = seconds(a, 0, 1000, 'preempt_delay');
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
        inst.garpInterval = seconds(a, 0, 10, 'garp_interval');
        break;
    }
  }
  if (iface === undefined) throw new KeepalivedConfigError(s, `vrrp_instance ${name} has no interface`);
  if (vrid === undefined) throw new KeepalivedConfigError(s, `vrrp_instance ${name} has no virtual_router_id`);
  if (inst.addresses.length === 0) throw new KeepalivedConfigError(s, `vrrp_instance ${name} has no virtual_ipaddress; vipshift needs at least one`);
  if (inst.addresses.length > 255) throw new KeepalivedConfigError(s, `vrrp_instance ${name} has ${inst.addresses.length} addresses; an advertisement carries at most 255`);
  inst.interface = iface;
  inst.vrid = vrid;
  // As keepalived 2.2: `state MASTER` without a priority makes this node the address owner.
  inst.priority = priority ?? (inst.startsMaster ? 255 : 100);
  if (nopreempt && (inst.startsMaster || inst.priority === 255)) {
    warn(nopreempt, `nopreempt has no effect with ${inst.startsMaster ? 'state MASTER' : 'priority 255'} (keepalived clears it too); preempting`);
  } else if (nopreempt) {
    inst.preempt = false;
    if (inst.preemptDelay > 0) {
      warn(nopreempt, 'preempt_delay has no effect with nopreempt (keepalived resets it too)');
      inst.preemptDelay = 0;
    }
  }
  // `dev` naming the instance's own interface says nothing more than the plain CIDR.
  inst.addresses = inst.addresses.map((x) => (typeof x !== 'string' && x.dev === iface ? x.address : x));
  // keepalived only drops traffic to a backup-held address in vrrp_strict mode; without it the
  // addresses answer whatever the accept setting says, which is RFC 5798's Accept_Mode = True.
  inst.accept = explicitAccept ?? !g.strict;
  if (inst.garpRepeat === undefined && g.garpRepeat !== undefined) inst.garpRepeat = g.garpRepeat;
  if (inst.garpInterval === undefined && g.garpInterval !== undefined) inst.garpInterval = g.garpInterval;
  return inst;
}

function readSyncGroup(s: Statement, instances: InstanceDraft[], grouped: Map<string, string>, groups: VrrpSyncGroup[]): VrrpSyncGroup {
  const name = s.args[0]!.text;
  if (groups.some((g) => g.name === name)) throw new KeepalivedConfigError(s, `vrrp_sync_group ${name} already defined`);
  const members: string[] = [];
  for (const c of s.children ?? []) {
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
  return { name, instances: members };
}

const SCHEDULERS: Record<string, ImportedVip['scheduler']> = { rr: 'roundrobin', wrr: 'roundrobin', sh: 'sourcehash' };

function readVirtualServer(
  s: Statement,
  id: number,
  instances: InstanceDraft[],
  groups: VrrpSyncGroup[],
  g: Globals,
  warn: Warn,
): ImportedVip | undefined {
  const [first, second] = s.args as [Token, Token];
  if (first.text === 'fwmark' || first.text === 'group') {
    warn(s, `virtual_server ${first.text} ${second.text}: only 'virtual_server ADDRESS PORT' is supported; skipped`);
    return undefined;
  }
  if (isIPv6(first.text)) {
    warn(s, `virtual_server ${first.text}: IPv6 is not supported yet; skipped`);
    return undefined;
  }
  const address = ipv4(first, 'virtual_server address');
  const port = integer(second, 1, 65535, 'virtual_server port');
  let protocol: ImportedVip['protocol'] = 'tcp';
  let kind = 'NAT';
  let scheduler: ImportedVip['scheduler'] | undefined;
  let algo: Token | undefined;
  const backends: Backend[] = [];
  for (const c of s.children ?? []) {
    const a = c.args[0]!;
    switch (c.keyword) {
      case 'protocol':
        if (a.text === 'TCP' || a.text === 'UDP') protocol = a.text === 'TCP' ? 'tcp' : 'udp';
        else if (a.text === 'SCTP') {
          warn(a, `virtual_server ${address} ${port}: SCTP is not supported; skipped`);
          return undefined;
        } else throw new KeepalivedConfigError(a, `protocol must be TCP, UDP or SCTP, not '${a.text}'`);
        break;
      case 'lb_kind':
        if (!['NAT', 'DR', 'TUN'].includes(a.text)) throw new KeepalivedConfigError(a, `lb_kind must be NAT, DR or TUN, not '${a.text}'`);
        kind = a.text;
        if (kind !== 'NAT') {
          warn(a, `virtual_server ${address} ${port}: lb_kind ${kind} is not supported (vipshift translates addresses: NAT only); skipped`);
          return undefined;
        }
        break;
      case 'lb_algo':
        algo = a;
        scheduler = SCHEDULERS[a.text];
        if (!scheduler) warn(a, `lb_algo ${a.text} is not supported (rr, wrr, sh); using roundrobin`);
        break;
      case 'real_server': {
        const backend = readRealServer(c, port);
        const dup = backends.find((b) => b.address === backend.address && b.port === backend.port);
        if (dup) throw new KeepalivedConfigError(c, `real_server ${backend.address} ${backend.port} is listed twice`);
        backends.push(backend);
        break;
      }
    }
  }
  if (backends.length === 0) {
    warn(s, `virtual_server ${address} ${port} has no real_server; skipped`);
    return undefined;
  }
  if (algo === undefined) warn(s, `virtual_server ${address} ${port} has no lb_algo; using roundrobin`);
  if (algo?.text === 'rr' && new Set(backends.map((b) => b.weight)).size > 1) {
    warn(algo, 'lb_algo rr: IPVS ignores weights, vipshift roundrobin honours them (as wrr)');
  }
  // vipshift's dnat mode serves exactly one server, whose replies route back through the
  // appliance; several servers need fullnat, where the appliance also rewrites the source.
  const mode: ImportedVip['mode'] = backends.length === 1 ? 'dnat' : 'fullnat';
  if (mode === 'fullnat') {
    warn(s, `virtual_server ${address} ${port}: lb_kind NAT with ${backends.length} real servers is imported as fullnat; the servers see the appliance's inside address, not the client's`);
  }
  for (const b of backends) {
    if (b.port !== port) warn(s, `real_server ${b.address} ${b.port}: port differs from the virtual port ${port}; only backends[] carries it`);
  }

  const vip: ImportedVip = {
    name: `vip${id}`,
    id,
    address,
    protocol,
    port,
    ports: [port],
    mode,
    scheduler: scheduler ?? 'roundrobin',
    backends,
    servers: backends.map((b) => ({ address: b.address, weight: b.weight })),
  };
  const carrier = instances.find((i) => i.addresses.some((x) => cidrAddress(x) === address));
  if (!carrier) {
    warn(s, `virtual_server ${address}: no vrrp_instance has ${address} in virtual_ipaddress; nothing moves it between appliances`);
    return vip;
  }
  vip.prefixLength = prefixOf(carrier.addresses.find((x) => cidrAddress(x) === address)!);
  const inside = insideAddress(carrier, backends, instances, groups, address);
  if (inside) vip.insideAddress = inside;
  else warn(s, `virtual_server ${address}: no virtual_ipaddress on the real servers' subnet; they need a route back through the appliance`);
  if (carrier.startsMaster && g.routerId !== undefined) vip.owner = g.routerId;
  return vip;
}

/**
 * In LVS-NAT the real servers' gateway is a floating address on their subnet that moves with
 * the VIP: one in the same instance or sync group as the VIP's address, else any instance's.
 */
function insideAddress(carrier: InstanceDraft, backends: Backend[], instances: InstanceDraft[], groups: VrrpSyncGroup[], vip: string): string | undefined {
  const group = groups.find((gr) => gr.instances.includes(carrier.name));
  const near = instances.filter((i) => i === carrier || (group?.instances.includes(i.name) ?? false));
  for (const pool of [near, instances]) {
    for (const inst of pool) {
      for (const x of inst.addresses) {
        const a = cidrAddress(x);
        if (a !== vip && backends.every((b) => sameSubnet(a, b.address, prefixOf(x)))) return a;
      }
    }
  }
  return undefined;
}

function readRealServer(s: Statement, virtualPort: number): Backend {
  const [addr, portToken] = s.args;
  const address = ipv4(addr!, 'real_server address');
  const port = portToken ? integer(portToken, 1, 65535, 'real_server port') : virtualPort;
  let weight = 1;
  for (const c of s.children ?? []) {
    if (c.keyword === 'weight') weight = integer(c.args[0]!, 0, 65535, 'weight');
  }
  return { address, port, weight };
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

/** advert_int: RFC 5798 §5.2.7 carries centiseconds in 12 bits, so 0.01 to 40.95 s. */
function centiseconds(t: Token, warn: Warn): number {
  const s = seconds(t, 0.01, 40.95, 'advert_int');
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
