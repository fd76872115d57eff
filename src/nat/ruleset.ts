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
 * Hooks, in the order a packet meets them:
 *   hold         raw prerouting, before conntrack (−200): marks held packets with
 *                HOLD_MARK | VIP id; then queues them (nft `queue`), drops them (policy drop),
 *                or leaves the queueing to one iptables-nft rule at −300 (kernels without
 *                the nft queue expression; see iptables.ts).
 *   reject       filter prerouting −150: with nf_conntrack_tcp_loose=0 a non-SYN TCP packet
 *                without an entry is `ct state invalid`: answered with a TCP reset and
 *                counted per VIP — the patent's "unknown access → error to the sender".
 *                This rule is permanent and uses ct, which keeps conntrack running in the
 *                namespace even with no VIP (DESIGN.md §3 pitfall).
 *   nat_prerouting  dnat −100: new connections of a normal VIP jump to its chain: counted
 *                (new connections per VIP), `ct mark set <id>` and DNAT (to its server, or
 *                to the pool by its scheduler). A nat chain sees only a connection's first
 *                packet (ct state new); entries imported by a migration never pass it.
 *   forward      filter 0: traffic counters per VIP by ct mark (both directions).
 *   nat_postrouting srcnat 100: fullnat SNAT to the inside address and port range, by ct mark.
 */
import type { NftBatch, NftCommand } from '../kernel/nft.js';
import { snatPortRange, type ApplianceConfig, type VipConfig } from '../config/appliance.js';

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

/** The key field types nft knows the mode sets by, and what a map's elements map to. */
export type ModeSetField = 'ipv4_addr' | 'inet_proto' | 'inet_service';
export interface ModeSet {
  type: readonly ModeSetField[];
  map?: 'mark' | 'verdict';
}
/** The sets and maps a mode change writes elements into (declared once, here). */
export const MODE_SETS: Readonly<Record<string, ModeSet>> = {
  vips_normal: { type: ['ipv4_addr', 'inet_proto', 'inet_service'] },
  vip_dnat: { type: ['ipv4_addr', 'inet_proto', 'inet_service'], map: 'verdict' },
  vips_migrating: { type: ['ipv4_addr', 'inet_proto', 'inet_service'], map: 'mark' },
  replies_migrating: { type: ['ipv4_addr', 'inet_proto', 'inet_service'], map: 'mark' },
  inside_migrating: { type: ['ipv4_addr', 'inet_proto'], map: 'mark' },
};

/** The packets a VIP's elements match: each port of its VIP address. */
export const vipKeys = (vip: VipConfig): Expr[] => vip.ports.map((port) => concat(vip.address, vip.protocol, port));

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
      const replies = vip.servers.flatMap((s) => vip.ports.map((port) => [concat(s.address, vip.protocol, port), mark]));
      out.set('replies_migrating', replies);
    } else {
      out.set('inside_migrating', [[concat(vip.insideAddress, vip.protocol), mark]]);
    }
  }
  return out;
}

function elementCommands(verb: 'add' | 'delete', table: string, elements: Map<string, Expr[]>): NftCommand[] {
  return [...elements].filter(([, elem]) => elem.length > 0).map(([name, elem]) => ({ [verb]: { element: { family: 'ip', table, name, elem } } }));
}

/** The DNAT target of a VIP: its one server (dnat), or the pool by its scheduler (fullnat). */
function dnatTarget(vip: VipConfig): Expr {
  const [only] = vip.servers;
  if (vip.servers.length === 1 && only) return { dnat: { addr: only.address } };
  // Weights by repetition: a server of weight w takes w slots of the numgen/jhash range.
  const slots = vip.servers.flatMap((s) => Array.from({ length: s.weight }, () => s.address));
  const key =
    vip.scheduler === 'sourcehash'
      ? { jhash: { mod: slots.length, expr: payload('ip', 'saddr') } }
      : { numgen: { mode: 'inc', mod: slots.length, offset: 0 } };
  return { dnat: { addr: { map: { key, data: { set: slots.map((a, i) => [i, a]) } } } } };
}

/** The whole table, flushed and rebuilt in one atomic batch, with every VIP in its mode. */
export function buildRuleset(config: ApplianceConfig, modes: ModeTable, options: RulesetOptions): NftBatch {
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

  for (const vip of config.vips) {
    cmds.push(add('counter', { name: trafficCounter(vip) }), add('counter', { name: rejectedCounter(vip) }), add('counter', { name: newConnectionsCounter(vip) }));
    if (options.hold === 'drop') cmds.push(add('counter', { name: heldDroppedCounter(vip) }));
  }
  const counterMap = (name: string, type: string | string[], elem: Expr[]): NftCommand =>
    add('map', { name, type, map: 'counter', ...(elem.length ? { elem } : {}) });
  cmds.push(
    counterMap('traffic_counters', 'mark', config.vips.map((v) => [v.id, trafficCounter(v)])),
    counterMap('rejected_counters', SERVICE_TYPE, config.vips.flatMap((v) => vipKeys(v).map((k) => [k, rejectedCounter(v)]))),
  );
  if (options.hold === 'drop') {
    cmds.push(counterMap('held_dropped_counters', 'mark', config.vips.map((v) => [holdMark(v), heldDroppedCounter(v)])));
  }

  for (const [name, d] of Object.entries(MODE_SETS)) {
    cmds.push(d.map ? add('map', { name, type: [...d.type], map: d.map }) : add('set', { name, type: [...d.type] }));
  }
  const inside = config.vips.map((v) => v.insideAddress);
  cmds.push(add('set', { name: 'inside_addresses', type: 'ipv4_addr', ...(inside.length ? { elem: inside } : {}) }));

  // The hold: mark, then queue or drop (or leave the queueing to iptables-nft).
  const holdPriority = options.hold === 'iptables-queue' ? HOLD_PRIORITY_MARK_ONLY : HOLD_PRIORITY;
  cmds.push(add('chain', { name: 'hold', type: 'filter', hook: 'prerouting', prio: holdPriority, policy: 'accept' }));
  const setMark = (key: Expr, map: string): Expr => ({ mangle: { key: meta('mark'), value: { map: { key, data: `@${map}` } } } });
  cmds.push(
    rule('hold', [setMark(VIP_KEY, 'vips_migrating')], 'packets for a migrating VIP'),
    rule('hold', [setMark(INSIDE_KEY, 'inside_migrating')], 'fullnat: packets to a migrating VIP\'s inside address'),
    rule(
      'hold',
      [match(payload('ip', 'daddr'), '@inside_addresses', '!='), setMark(REPLY_KEY, 'replies_migrating')],
      'dnat: a migrating VIP\'s server towards its clients',
    ),
  );
  const held = match({ '&': [meta('mark'), HOLD_MARK] }, HOLD_MARK);
  if (options.hold === 'nft-queue') {
    cmds.push(rule('hold', [held, { queue: { num: options.queueNumber } }], 'held until released'));
  } else if (options.hold === 'drop') {
    cmds.push(rule('hold', [held, { counter: { map: { key: meta('mark'), data: '@held_dropped_counters' } } }, { drop: null }], 'hold policy drop'));
  }

  // Unknown accesses to normal VIPs.
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

  // DNAT of new connections, one chain per VIP.
  for (const vip of config.vips) {
    cmds.push(add('chain', { name: vipChain(vip) }));
    cmds.push(rule(vipChain(vip), [{ counter: newConnectionsCounter(vip) }, { mangle: { key: { ct: { key: 'mark' } }, value: vip.id } }, dnatTarget(vip)]));
  }
  cmds.push(add('chain', { name: 'nat_prerouting', type: 'nat', hook: 'prerouting', prio: -100, policy: 'accept' }));
  cmds.push(rule('nat_prerouting', [{ vmap: { key: VIP_KEY, data: '@vip_dnat' } }]));

  cmds.push(add('chain', { name: 'forward', type: 'filter', hook: 'forward', prio: 0, policy: 'accept' }));
  cmds.push(rule('forward', [{ counter: { map: { key: { ct: { key: 'mark' } }, data: '@traffic_counters' } } }], 'traffic per VIP'));

  cmds.push(add('chain', { name: 'nat_postrouting', type: 'nat', hook: 'postrouting', prio: 100, policy: 'accept' }));
  for (const vip of config.vips.filter((v) => v.mode === 'fullnat')) {
    const [first, last] = snatPortRange(vip);
    cmds.push(
      rule('nat_postrouting', [
        match({ ct: { key: 'mark' } }, vip.id),
        match(meta('l4proto'), vip.protocol),
        { snat: { addr: vip.insideAddress, port: { range: [first, last] } } },
      ]),
    );
  }

  for (const vip of config.vips) {
    const mode = modes.get(vip.name);
    if (mode) cmds.push(...elementCommands('add', table, modeElements(vip, mode)));
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
