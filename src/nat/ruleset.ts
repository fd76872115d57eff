/**
 * The appliance's nftables ruleset as a JSON batch (`nft -j -f -`), generated purely from the
 * configuration and the mode table.
 *
 * One table, `ip vipshift`. A VIP's mode lives only in set and map elements, so a mode change
 * (a migration step) is a few `add element` / `delete element` commands in one atomic batch and
 * never touches a rule:
 *   vips_normal       VIP address . protocol . port          normal VIPs (reject of unknown accesses)
 *   vip_dnat          VIP address . protocol . port → goto   normal VIPs (DNAT of new connections)
 *   vips_migrating    VIP address . protocol . port → mark   packets for a migrating VIP
 *   replies_migrating server . protocol . port → mark        dnat: its server's packets towards clients
 *   inside_migrating  inside address . protocol → mark       fullnat: packets to its inside address
 * A VIP in none of them is not ours: its packets are not translated.
 *
 * A VIP's pool lives in elements too (pool.ts, scheduler.ts): its chain picks a slot for each
 * new connection (numgen or jhash into the packet mark, which nothing reads after the hold),
 * looks up the slot's target in `slots_<vip>` [slot → target index], and DNATs to
 * `pool_<vip>` [target → address] : `ports_<vip>` [target . VIP port → port] (nft 1.0.6's JSON
 * has no map with a concatenated value, hence two maps). A backend's state change rewrites
 * only the slots that change hands; a pool with no backend up
 * and no sorry server puts the VIP's keys in `vips_unavailable`, whose new connections the
 * reject chain answers with a reset, counted per VIP. The slot tables are there whatever the
 * VIP's mode, so a VIP taken over or migrated in starts with its pool. Adding or removing a
 * VIP adds or deletes its named objects (counters, chains, maps) and elements: nothing is
 * looked up by a rule handle.
 *
 * Hooks, in the order a packet meets them:
 *   hold         raw prerouting, before conntrack (−200): marks held packets with
 *                HOLD_MARK | VIP id; then queues them (nft `queue`), drops them (policy drop),
 *                or leaves the queueing to one iptables-nft rule at −300 (kernels without
 *                the nft queue expression; see iptables.ts).
 *   reject       filter prerouting −150: with nf_conntrack_tcp_loose=0 a non-SYN TCP packet
 *                without an entry is `ct state invalid`: answered with a TCP reset and
 *                counted per VIP — the patent's "unknown access → error to the sender".
 *                This rule is permanent and uses ct, which keeps conntrack running in the
 *                namespace even with no VIP (docs/architecture.md, kernel facts).
 *   nat_prerouting  dnat −100: new connections of a normal VIP jump to its chain: counted
 *                (new connections per VIP), `ct mark set <id>` and DNAT (to its server, or
 *                to the pool by its scheduler). A nat chain sees only a connection's first
 *                packet (ct state new); entries imported by a migration never pass it.
 *   forward      filter 0: traffic counters per VIP by ct mark (both directions).
 *   nat_postrouting srcnat 100: fullnat SNAT to the inside address and port range: by ct mark
 *                through `snat_chains` to the VIP's own chain.
 */
import type { NftBatch, NftCommand } from '../kernel/nft.js';
import { snatPortRange, type ApplianceConfig, type VipConfig } from '../config/appliance.js';
import { poolTable, type PoolTable } from './pool.js';
import { SLOTS } from './scheduler.js';

export type VipMode = 'normal' | 'migrating';
/** The mode table: VIP name → mode. A VIP not in it is not ours. */
export type ModeTable = ReadonlyMap<string, VipMode>;

/**
 * How held packets are held: the nft `queue` expression, one iptables-nft NFQUEUE rule
 * matching HOLD_MARK (kernels without the nft expression), or drop (hold policy drop).
 */
export type HoldMethod = 'nft-queue' | 'iptables-queue' | 'drop';

export interface RulesetOptions {
  hold: HoldMethod;
  queueNumber: number;
  table?: string;
}

export const TABLE = 'vipshift';
/** The bit that says "held"; the low 16 bits carry the VIP id, so the hold knows whose packet it is. */
export const HOLD_MARK = 0x40000000;
export const VIP_ID_MASK = 0xffff;
/** Where the hold chain sits: before conntrack (−200), and before iptables-nft's raw (−300) that queues. */
export const HOLD_PRIORITY_MARK_ONLY = -310;
export const HOLD_PRIORITY = -300;
export const REJECT_PRIORITY = -150;

export const holdMark = (vip: VipConfig): number => (HOLD_MARK | vip.id) >>> 0;
export const vipChain = (vip: VipConfig): string => `vip_${vip.name}`;
export const trafficCounter = (vip: VipConfig): string => `traffic_${vip.name}`;
export const rejectedCounter = (vip: VipConfig): string => `rejected_${vip.name}`;
/** Connections NATed as new: counted in the VIP's chain, which only a connection's first packet reaches. */
export const newConnectionsCounter = (vip: VipConfig): string => `new_${vip.name}`;
export const heldDroppedCounter = (vip: VipConfig): string => `held_dropped_${vip.name}`;
/** New connections reset because no backend was up. */
export const unavailableCounter = (vip: VipConfig): string => `unavailable_${vip.name}`;
export const slotsMap = (vip: VipConfig): string => `slots_${vip.name}`;
export const poolMap = (vip: VipConfig): string => `pool_${vip.name}`;
export const portsMap = (vip: VipConfig): string => `ports_${vip.name}`;
export const snatChain = (vip: VipConfig): string => `snat_${vip.name}`;


export type Expr = unknown;

export const payload = (protocol: string, field: string): Expr => ({ payload: { protocol, field } });
export const meta = (key: string): Expr => ({ meta: { key } });
export const concat = (...items: Expr[]): Expr => ({ concat: items });
export const match = (left: Expr, right: Expr, op = '=='): Expr => ({ match: { op, left, right } });

/** Keys the sets and maps are looked up by. */
export const VIP_KEY = concat(payload('ip', 'daddr'), meta('l4proto'), payload('th', 'dport'));
const REPLY_KEY = concat(payload('ip', 'saddr'), meta('l4proto'), payload('th', 'sport'));
const INSIDE_KEY = concat(payload('ip', 'daddr'), meta('l4proto'));
const SERVICE_TYPE = ['ipv4_addr', 'inet_proto', 'inet_service'];

/** The key field types nft knows the element-written sets by, and what a map's elements map to. */
export type ModeSetField = 'ipv4_addr' | 'inet_proto' | 'inet_service' | 'mark';
export interface ModeSet {
  type: readonly ModeSetField[];
  map?: 'mark' | 'verdict' | 'ipv4_addr' | 'inet_service';
}
/** The sets and maps a mode change writes elements into (declared once, here). */
export const MODE_SETS: Readonly<Record<string, ModeSet>> = {
  vips_normal: { type: ['ipv4_addr', 'inet_proto', 'inet_service'] },
  vip_dnat: { type: ['ipv4_addr', 'inet_proto', 'inet_service'], map: 'verdict' },
  vips_migrating: { type: ['ipv4_addr', 'inet_proto', 'inet_service'], map: 'mark' },
  replies_migrating: { type: ['ipv4_addr', 'inet_proto', 'inet_service'], map: 'mark' },
  inside_migrating: { type: ['ipv4_addr', 'inet_proto'], map: 'mark' },
};
/** The maps a VIP's pool lives in (its own three, declared in vipObjects) and the set of VIPs with none up. */
const POOL_SETS: readonly [prefix: string, set: ModeSet][] = [
  ['slots_', { type: ['mark'], map: 'mark' }],
  ['pool_', { type: ['mark'], map: 'ipv4_addr' }],
  ['ports_', { type: ['mark', 'inet_service'], map: 'inet_service' }],
];
const UNAVAILABLE_SET: ModeSet = { type: ['ipv4_addr', 'inet_proto', 'inet_service'] };

/**
 * The declaration of a set or map whose elements a mode change or a pool change writes
 * (nft-elements.ts sends those straight to the kernel); undefined for any other.
 */
export function elementSet(name: string): ModeSet | undefined {
  if (Object.hasOwn(MODE_SETS, name)) return MODE_SETS[name];
  if (name === 'vips_unavailable') return UNAVAILABLE_SET;
  return POOL_SETS.find(([prefix]) => name.startsWith(prefix) && name.length > prefix.length)?.[1];
}

/** The key of one port of a VIP in the sets matched by `VIP_KEY`. */
export const vipKey = (vip: VipConfig, port: number): Expr => concat(vip.address, vip.protocol, port);

/** The packets a VIP's elements match: each port of its VIP address. */
export const vipKeys = (vip: VipConfig): Expr[] => vip.ports.map((port) => vipKey(vip, port));

/** Set and map elements that put a VIP in `mode`, by set name. */
export function modeElements(vip: VipConfig, mode: VipMode): Map<string, Expr[]> {
  const out = new Map<string, Expr[]>();
  if (mode === 'normal') {
    out.set('vips_normal', vipKeys(vip));
    out.set('vip_dnat', vipKeys(vip).map((key) => [key, { goto: { target: vipChain(vip) } }]));
  } else {
    const mark = holdMark(vip);
    out.set('vips_migrating', vipKeys(vip).map((key) => [key, mark]));
    if (vip.mode === 'dnat') {
      // Replies come from each backend's own port (port mapping); listed once each.
      const keys = new Map<string, Expr>();
      for (const b of vip.backends) for (const port of vip.ports) keys.set(`${b.address}:${b.port ?? port}`, concat(b.address, vip.protocol, b.port ?? port));
      out.set('replies_migrating', [...keys.values()].map((k) => [k, mark]));
    } else {
      out.set('inside_migrating', [[concat(vip.insideAddress, vip.protocol), mark]]);
    }
  }
  return out;
}

function elementCommands(verb: 'add' | 'delete', table: string, elements: Map<string, Expr[]>): NftCommand[] {
  return [...elements].filter(([, elem]) => elem.length > 0).map(([name, elem]) => ({ [verb]: { element: { family: 'ip', table, name, elem } } }));
}

/** The slot of a new connection, into the packet mark: the same hash of the client on every appliance. */
function slotExpr(vip: VipConfig): Expr {
  const scheduler = vip.scheduler ?? 'roundrobin';
  const mod = SLOTS[scheduler];
  return scheduler === 'roundrobin' ? { numgen: { mode: 'inc', mod, offset: 0 } } : { jhash: { mod, seed: vip.id, expr: payload('ip', 'saddr') } };
}

/** The pool's elements by map: slot → target, target → address, target . VIP port → port. */
function poolElements(vip: VipConfig, pool: PoolTable): Map<string, Expr[]> {
  return new Map([
    [slotsMap(vip), pool.slots.map((t, slot) => [slot, t])],
    [poolMap(vip), pool.targets.map((t, i) => [i, t.address])],
    [portsMap(vip), pool.targets.flatMap((t, i) => vip.ports.map((p) => [concat(i, p), t.port ?? p]))],
  ]);
}

export interface PoolChangeOptions {
  table?: string;
}

/**
 * The element commands that turn `from` into `to`: only the slots that change hands, the
 * targets that change, and the VIP's keys in or out of `vips_unavailable`. One atomic batch;
 * empty when nothing changes.
 */
export function buildPoolChange(vip: VipConfig, from: PoolTable, to: PoolTable, options: PoolChangeOptions = {}): NftBatch {
  const table = options.table ?? TABLE;
  const deletes = new Map<string, Expr[]>();
  const adds = new Map<string, Expr[]>();
  // Values are numbers and strings (a slot's target, an address, a port): compared as they are,
  // since a Maglev pool has 4,093 slots and a reload may change 100 pools.
  const diff = <T>(set: string, a: readonly T[], b: readonly T[], keyOf: (i: number) => Expr = (i) => i, valueOf: (v: T) => number | string = (v) => v as number) => {
    const dels: Expr[] = [];
    const ads: Expr[] = [];
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      const before = a[i] === undefined ? undefined : valueOf(a[i]!);
      const after = b[i] === undefined ? undefined : valueOf(b[i]!);
      if (before === after) continue;
      if (before !== undefined) dels.push(keyOf(i));
      if (after !== undefined) ads.push([keyOf(i), after]);
    }
    if (dels.length > 0) deletes.set(set, [...(deletes.get(set) ?? []), ...dels]);
    if (ads.length > 0) adds.set(set, [...(adds.get(set) ?? []), ...ads]);
  };
  diff(slotsMap(vip), from.slots, to.slots);
  diff(poolMap(vip), from.targets, to.targets, undefined, (t) => t.address);
  for (const p of vip.ports) diff(portsMap(vip), from.targets, to.targets, (i) => concat(i, p), (t) => t.port ?? p);
  if (from.unavailable !== to.unavailable) (to.unavailable ? adds : deletes).set('vips_unavailable', vipKeys(vip));
  // Deletes first: a slot or a target that changes is deleted and added again in the same transaction.
  return { nftables: [...elementCommands('delete', table, deletes), ...elementCommands('add', table, adds)] };
}

interface VipObjectOptions {
  table: string;
  hold: HoldMethod;
}

/**
 * A VIP's named objects (counters, its chains, its pool maps) and the elements that hook them
 * into the table's shared maps, in the order they can be added; deleting goes in reverse.
 */
function vipObjects(vip: VipConfig, options: VipObjectOptions): { objects: NftCommand[]; elements: Map<string, Expr[]>; chains: string[]; named: [string, string][] } {
  const t = { family: 'ip', table: options.table };
  const add = (kind: string, body: Record<string, unknown>): NftCommand => ({ add: { [kind]: { ...t, ...body } } });
  const counters = [trafficCounter(vip), rejectedCounter(vip), newConnectionsCounter(vip), unavailableCounter(vip), ...(options.hold === 'drop' ? [heldDroppedCounter(vip)] : [])];
  const objects: NftCommand[] = counters.map((name) => add('counter', { name }));
  objects.push(
    add('map', { name: slotsMap(vip), type: 'mark', map: 'mark' }),
    add('map', { name: poolMap(vip), type: 'mark', map: 'ipv4_addr' }),
    add('map', { name: portsMap(vip), type: ['mark', 'inet_service'], map: 'inet_service' }),
  );
  const chains = [vipChain(vip)];
  objects.push(add('chain', { name: vipChain(vip) }));
  objects.push(
    add('rule', {
      chain: vipChain(vip),
      expr: [
        { counter: newConnectionsCounter(vip) },
        { mangle: { key: { ct: { key: 'mark' } }, value: vip.id } },
        // The port maps need a transport protocol: the VIP's.
        match(meta('l4proto'), vip.protocol),
        { mangle: { key: meta('mark'), value: slotExpr(vip) } },
        { mangle: { key: meta('mark'), value: { map: { key: meta('mark'), data: `@${slotsMap(vip)}` } } } },
        { dnat: { family: 'ip', addr: { map: { key: meta('mark'), data: `@${poolMap(vip)}` } }, port: { map: { key: concat(meta('mark'), payload('th', 'dport')), data: `@${portsMap(vip)}` } } } },
      ],
    }),
  );
  const elements = new Map<string, Expr[]>([
    ['traffic_counters', [[vip.id, trafficCounter(vip)]]],
    ['rejected_counters', vipKeys(vip).map((k) => [k, rejectedCounter(vip)])],
    ['unavailable_counters', vipKeys(vip).map((k) => [k, unavailableCounter(vip)])],
    ['inside_addresses', [vip.insideAddress]],
  ]);
  if (options.hold === 'drop') elements.set('held_dropped_counters', [[holdMark(vip), heldDroppedCounter(vip)]]);
  if (vip.mode === 'fullnat') {
    const [first, last] = snatPortRange(vip);
    chains.push(snatChain(vip));
    objects.push(add('chain', { name: snatChain(vip) }));
    objects.push(add('rule', { chain: snatChain(vip), expr: [match(meta('l4proto'), vip.protocol), { snat: { addr: vip.insideAddress, port: { range: [first, last] } } }] }));
    elements.set('snat_chains', [[vip.id, { goto: { target: snatChain(vip) } }]]);
  }
  const named: [string, string][] = [...counters.map((n): [string, string] => ['counter', n]), ['map', slotsMap(vip)], ['map', poolMap(vip)], ['map', portsMap(vip)]];
  return { objects, elements, chains, named };
}

/** The commands that add a VIP to a running table: its objects, elements, pool, and mode if any. */
export function buildVipAdd(vip: VipConfig, pool: PoolTable, mode: VipMode | undefined, options: VipObjectOptions): NftCommand[] {
  const { objects, elements } = vipObjects(vip, options);
  return [
    ...objects,
    ...elementCommands('add', options.table, elements),
    ...elementCommands('add', options.table, poolElements(vip, pool)),
    ...(pool.unavailable ? elementCommands('add', options.table, new Map([['vips_unavailable', vipKeys(vip)]])) : []),
    ...(mode ? elementCommands('add', options.table, modeElements(vip, mode)) : []),
  ];
}

/** The commands that take a VIP out of a running table (in `mode` now, with `pool` installed). */
export function buildVipDelete(vip: VipConfig, pool: PoolTable, mode: VipMode | undefined, options: VipObjectOptions): NftCommand[] {
  const { elements, chains, named } = vipObjects(vip, options);
  const t = { family: 'ip', table: options.table };
  return [
    ...(mode ? elementCommands('delete', options.table, modeElements(vip, mode)) : []),
    ...(pool.unavailable ? elementCommands('delete', options.table, new Map([['vips_unavailable', vipKeys(vip)]])) : []),
    ...elementCommands('delete', options.table, elements),
    ...chains.flatMap((name): NftCommand[] => [{ flush: { chain: { ...t, name } } }, { delete: { chain: { ...t, name } } }]),
    ...named.map(([kind, name]): NftCommand => ({ delete: { [kind]: { ...t, name } } })),
  ];
}

/**
 * The whole table, flushed and rebuilt in one atomic batch, with every VIP in its mode and
 * its pool (default: every backend up).
 */
export function buildRuleset(config: ApplianceConfig, modes: ModeTable, options: RulesetOptions, pools: ReadonlyMap<string, PoolTable> = new Map()): NftBatch {
  const table = options.table ?? TABLE;
  const t = { family: 'ip', table };
  const add = (kind: string, body: Record<string, unknown>): NftCommand => ({ add: { [kind]: { ...t, ...body } } });
  const rule = (chain: string, expr: Expr[], comment?: string): NftCommand =>
    add('rule', { chain, expr, ...(comment ? { comment } : {}) });
  const cmds: NftCommand[] = [
    // add + delete + add: rebuilds whether or not the table exists, in one transaction.
    { add: { table: { family: 'ip', name: table } } },
    { delete: { table: { family: 'ip', name: table } } },
    { add: { table: { family: 'ip', name: table } } },
  ];

  cmds.push(
    add('map', { name: 'traffic_counters', type: 'mark', map: 'counter' }),
    add('map', { name: 'rejected_counters', type: SERVICE_TYPE, map: 'counter' }),
    add('map', { name: 'unavailable_counters', type: SERVICE_TYPE, map: 'counter' }),
    add('set', { name: 'vips_unavailable', type: SERVICE_TYPE }),
    add('map', { name: 'snat_chains', type: 'mark', map: 'verdict' }),
  );
  if (options.hold === 'drop') cmds.push(add('map', { name: 'held_dropped_counters', type: 'mark', map: 'counter' }));

  for (const [name, d] of Object.entries(MODE_SETS)) {
    cmds.push(d.map ? add('map', { name, type: [...d.type], map: d.map }) : add('set', { name, type: [...d.type] }));
  }
  cmds.push(add('set', { name: 'inside_addresses', type: 'ipv4_addr' }));

  // The hold: mark, then queue or drop (or leave the queueing to iptables-nft).
  const holdPriority = options.hold === 'iptables-queue' ? HOLD_PRIORITY_MARK_ONLY : HOLD_PRIORITY;
  cmds.push(add('chain', { name: 'hold', type: 'filter', hook: 'prerouting', prio: holdPriority, policy: 'accept' }));
  const setMark = (key: Expr, map: string): Expr => ({ mangle: { key: meta('mark'), value: { map: { key, data: `@${map}` } } } });
  cmds.push(
    rule('hold', [setMark(VIP_KEY, 'vips_migrating')], 'packets for a migrating VIP'),
    rule('hold', [setMark(INSIDE_KEY, 'inside_migrating')], 'fullnat: packets to a migrating VIP\'s inside address'),
    rule(
      'hold',
      // Not what the server sends to this appliance itself: its answers to the health checks
      // (a standby checks the backends of the VIPs it holds).
      [match(payload('ip', 'daddr'), '@inside_addresses', '!='), match({ fib: { result: 'type', flags: ['daddr'] } }, 'local', '!='), setMark(REPLY_KEY, 'replies_migrating')],
      'dnat: a migrating VIP\'s server towards its clients',
    ),
  );
  const held = match({ '&': [meta('mark'), HOLD_MARK] }, HOLD_MARK);
  if (options.hold === 'nft-queue') {
    cmds.push(rule('hold', [held, { queue: { num: options.queueNumber } }], 'held until released'));
  } else if (options.hold === 'drop') {
    cmds.push(rule('hold', [held, { counter: { map: { key: meta('mark'), data: '@held_dropped_counters' } } }, { drop: null }], 'hold policy drop'));
  }

  // Unknown accesses to normal VIPs; new connections of a normal VIP with no backend up.
  cmds.push(add('chain', { name: 'reject', type: 'filter', hook: 'prerouting', prio: REJECT_PRIORITY, policy: 'accept' }));
  cmds.push(
    rule(
      'reject',
      [
        match({ ct: { key: 'state' } }, 'invalid', 'in'),
        match(meta('l4proto'), 'tcp'),
        match(VIP_KEY, '@vips_normal'),
        { counter: { map: { key: VIP_KEY, data: '@rejected_counters' } } },
        { reject: { type: 'tcp reset' } },
      ],
      'unknown access to a normal VIP: reset (permanent: keeps conntrack on)',
    ),
  );
  const unavailable = (protocol: string, verdict: Expr): NftCommand =>
    rule(
      'reject',
      [
        match({ ct: { key: 'state' } }, 'new', 'in'),
        match(meta('l4proto'), protocol),
        match(VIP_KEY, '@vips_unavailable'),
        match(VIP_KEY, '@vips_normal'),
        { counter: { map: { key: VIP_KEY, data: '@unavailable_counters' } } },
        verdict,
      ],
      'a new connection to a normal VIP with no backend up',
    );
  cmds.push(unavailable('tcp', { reject: { type: 'tcp reset' } }), unavailable('udp', { reject: null }));

  cmds.push(add('chain', { name: 'nat_prerouting', type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept' }));
  cmds.push(rule('nat_prerouting', [{ vmap: { key: VIP_KEY, data: '@vip_dnat' } }]));

  cmds.push(add('chain', { name: 'forward', type: 'filter', hook: 'forward', prio: 0, policy: 'accept' }));
  cmds.push(rule('forward', [{ counter: { map: { key: { ct: { key: 'mark' } }, data: '@traffic_counters' } } }], 'traffic per VIP'));

  cmds.push(add('chain', { name: 'nat_postrouting', type: 'nat', hook: 'postrouting', prio: 100, policy: 'accept' }));
  cmds.push(rule('nat_postrouting', [{ vmap: { key: { ct: { key: 'mark' } }, data: '@snat_chains' } }], 'fullnat: SNAT by the VIP\'s chain'));

  for (const vip of config.vips) {
    cmds.push(...buildVipAdd(vip, pools.get(vip.name) ?? poolTable(vip), modes.get(vip.name), { table, hold: options.hold }));
  }
  return { nftables: cmds };
}

/**
 * The batch that moves one VIP from one mode to another: element changes only, in one
 * atomic transaction. Empty when nothing changes.
 */
export function buildModeChange(vip: VipConfig, from: VipMode | 'absent', to: VipMode | 'absent', options: Pick<RulesetOptions, 'table'> = {}): NftBatch {
  const table = options.table ?? TABLE;
  if (from === to) return { nftables: [] };
  return {
    nftables: [
      ...(from === 'absent' ? [] : elementCommands('delete', table, modeElements(vip, from))),
      ...(to === 'absent' ? [] : elementCommands('add', table, modeElements(vip, to))),
    ],
  };
}

/** The batch that removes the table (stop). */
export function buildTeardown(options: Pick<RulesetOptions, 'table'> = {}): NftBatch {
  const name = options.table ?? TABLE;
  return { nftables: [{ add: { table: { family: 'ip', name } } }, { delete: { table: { family: 'ip', name } } }] };
}
