/**
 * The ruleset's SYN flood section (config `flood:`): its own sets, counters and chains in the
 * appliance's table, added to the same atomic batch as the rest (engine.ts) and touching the
 * rest only through the mode sets it reads (`vips_normal`, `vip_dnat`) and one rule it puts
 * first in the reject chain.
 *
 * SYNPROXY above a rate. Every VIP port has a SYN rate meter (`syn_rate`); past
 * `aboveRate` a second (and as many again in a burst) the VIP port enters `synproxy_active`
 * for `holdSeconds`, renewed while the rate stays over. Its SYNs then skip conntrack
 * (`notrack`, before it: −250) and the kernel's SYNPROXY answers them with a SYN cookie
 * (input hook: the VIP address is the appliance's own), so a spoofed SYN creates no entry at
 * all. The client's ACK (no entry: `ct state invalid`) must reach SYNPROXY rather than the
 * reject chain's reset: hence the rule put first there. A valid cookie makes SYNPROXY open the
 * connection to the VIP itself, from the client's address, as a local packet: the `nat_output`
 * chain DNATs it through the VIP's own chain (ct mark, server, pool) exactly as nat_prerouting
 * does for a forwarded SYN; fullnat's SNAT is in postrouting and applies as it is. Below the
 * rate nothing changes: SYNs meet conntrack and the DNAT as before.
 *
 * Limits of new connections (`ct state new`, after the reject chain, before the DNAT; and in
 * output, for the connections SYNPROXY opens): per VIP port a rate (`vip_new_rate`), per client
 * address a number of connections at once (`ct count`, `source_conns`). Over either, the
 * packet is dropped (the entry is never confirmed) and counted per VIP.
 *
 * A migrating VIP (a migration's target during its hold, a standby taking over) is held before
 * (−300) and meets the rest of this section once it is `normal` here. Two rules put first in
 * the hold chain keep a flood out of the hold: a migrating VIP port whose address is already
 * here has its own SYN rate meter (`held_syn_rate`: the same `aboveRate`, a burst of a tenth
 * of a second), and a pure SYN to a port in
 * `synproxy_active` is not held but goes on to SYNPROXY, which answers it with a cookie
 * without any entry — so it needs none of the entries the hold waits for. Held, a flood's
 * SYNs were released into the table at activation, lengthening step 4 (docs/synflood.md). The
 * cookie ACK of a real client is held like any other packet and reaches SYNPROXY on release.
 *
 * SYNPROXY's ACK to the server (the third packet of the handshake it replays there) leaves
 * with the right TSecr, the server's SYN-ACK TSval, and then meets the kernel's own timestamp
 * shift for the connection (postrouting, priority INT_MAX - 1), which adds tsoff to it again.
 * Servers on Linux 6.15 and later (and 6.14.y) check that TSecr in SYN_RECV against the
 * SYN-ACKs they sent: they drop the ACK (TcpExtTSEcrRejected) and answer it with an ACK. When
 * their 1 ms clock ticked in between, that answer's TSval is newer than any SYN-ACK, the client
 * echoes it in every segment, and the server drops them all until its SYN-ACK retransmission a
 * second later widens the range: a ~1.5 s stall right after the connection opens, for 5–9 of
 * 200 connections in the lab. So the ACK is marked on its way out (sent by this appliance from
 * an address not its own: nothing else leaves so) and its TSecr set to 0 after the shift — "no
 * echo", which tcp_check_req does not check. Only that one packet of each connection is
 * touched; the client's own segments are shifted once, as they should be.
 */
import type { NftBatch, NftCommand } from '../kernel/nft.js';
import type { ApplianceConfig, VipConfig } from '../config/appliance.js';
import { REJECT_PRIORITY, VIP_KEY, match, meta, payload, vipKey, vipKeys, type Expr } from './ruleset.js';

/** Before conntrack (−200), after the hold (−300): held packets never get here. */
export const SYN_RAW_PRIORITY = -250;
/** After the reject chain (−150), before the DNAT (−100): only a connection's first packet is `ct state new` here. */
export const LIMITS_PRIORITY = -140;
/** After the kernel's SYNPROXY hook in postrouting (NF_IP_PRI_CONNTRACK_CONFIRM - 1 = INT_MAX - 1). */
export const AFTER_SYNPROXY_PRIORITY = 2147483647;
/** On SYNPROXY's ACK to the server, from output to postrouting (the hold uses HOLD_MARK and the VIP id bits). */
export const SYNPROXY_ACK_MARK = 0x20000000;

export const synproxiedCounter = (vip: VipConfig): string => `synproxied_${vip.name}`;
export const vipLimitedCounter = (vip: VipConfig): string => `limited_vip_${vip.name}`;
export const sourceLimitedCounter = (vip: VipConfig): string => `limited_source_${vip.name}`;

const SERVICE_TYPE = ['ipv4_addr', 'inet_proto', 'inet_service'];
const SET_SIZE = 65535;
const TCP_SYN_ONLY = match({ '&': [payload('tcp', 'flags'), ['fin', 'syn', 'rst', 'ack']] }, 'syn');
const TCP_ACK_ONLY = match({ '&': [payload('tcp', 'flags'), ['fin', 'syn', 'rst', 'ack']] }, 'ack');
const inSet = (set: string): Expr => match(VIP_KEY, `@${set}`);
/** The VIP address is on this appliance (a migration's target after step 2; a standby once master). */
const ADDRESS_HERE = match({ fib: { result: 'type', flags: ['daddr'] } }, 'local');
/** Sent by this appliance from an address that is not its own: SYNPROXY speaking for a client. */
const SOURCE_NOT_HERE = match({ fib: { result: 'type', flags: ['saddr'] } }, 'local', '!=');
const countPerVip = (map: string): Expr => ({ counter: { map: { key: VIP_KEY, data: `@${map}` } } });
const limitOver = (rate: number, burst = rate): Expr => ({ limit: { rate, burst, per: 'second', inv: true } });

/**
 * The meter of a held VIP port lets a tenth of a second's worth of SYNs at `aboveRate` into
 * the hold, not the normal meter's second: held, a flood's SYNs lengthen the hold they wait in
 * (the appliance reads each from the queue) and its release, and can fill the queue before the
 * live connections' packets (4,096 a VIP).
 */
export const HELD_SYN_BURST_SECONDS = 0.1;
export const heldSynBurst = (aboveRate: number): number => Math.max(1, Math.ceil(aboveRate * HELD_SYN_BURST_SECONDS));

/** The per-VIP counters the section's rules count in (by VIP port, through a map), by map. */
function counterMaps(config: ApplianceConfig): [map: string, name: (v: VipConfig) => string][] {
  const { synproxy, newConnectionsPerVip, connectionsPerSource } = config.flood;
  return [
    ...(synproxy.enabled ? [['synproxied_counters', synproxiedCounter] as [string, (v: VipConfig) => string]] : []),
    ...(newConnectionsPerVip > 0 ? [['vip_limited_counters', vipLimitedCounter] as [string, (v: VipConfig) => string]] : []),
    ...(connectionsPerSource > 0 ? [['source_limited_counters', sourceLimitedCounter] as [string, (v: VipConfig) => string]] : []),
  ];
}

/**
 * A VIP added to or removed from a running table: its counters of this section and their map
 * elements. Without them a rule's counter lookup misses and the rule stops there: a VIP added
 * at run time would get no SYNPROXY and no limit.
 */
export function floodVipCommands(config: ApplianceConfig, vip: VipConfig, table: string, verb: 'add' | 'delete'): NftCommand[] {
  const t = { family: 'ip', table };
  const counters: NftCommand[] = [];
  const elements: NftCommand[] = [];
  for (const [map, name] of counterMaps(config)) {
    counters.push({ [verb]: { counter: { ...t, name: name(vip) } } });
    elements.push({ [verb]: { element: { ...t, name: map, elem: vipKeys(vip).map((k) => (verb === 'add' ? [k, name(vip)] : k)) } } });
  }
  return verb === 'add' ? [...counters, ...elements] : [...elements, ...counters];
}

/** The flood section's commands for table `table` (after buildRuleset's, in the same batch). */
export function floodCommands(config: ApplianceConfig, table: string): NftCommand[] {
  const { synproxy, newConnectionsPerVip, connectionsPerSource } = config.flood;
  const t = { family: 'ip', table };
  const add = (kind: string, body: Record<string, unknown>): NftCommand => ({ add: { [kind]: { ...t, ...body } } });
  const rule = (chain: string, expr: Expr[], comment: string): NftCommand => add('rule', { chain, expr, comment });
  const insertRule = (chain: string, expr: Expr[], comment: string): NftCommand => ({ insert: { rule: { ...t, chain, expr, comment } } });
  const cmds: NftCommand[] = [];
  for (const [map, name] of counterMaps(config)) {
    for (const vip of config.vips) cmds.push(add('counter', { name: name(vip) }));
    const elem = config.vips.flatMap((v) => vipKeys(v).map((k) => [k, name(v)]));
    cmds.push(add('map', { name: map, type: SERVICE_TYPE, map: 'counter', ...(elem.length ? { elem } : {}) }));
  }

  if (synproxy.enabled) {
    cmds.push(
      add('set', { name: 'syn_rate', type: SERVICE_TYPE, size: SET_SIZE, }),
      add('set', { name: 'held_syn_rate', type: SERVICE_TYPE, size: SET_SIZE, }),
      add('set', { name: 'synproxy_active', type: SERVICE_TYPE, size: SET_SIZE, flags: ['timeout'] }),
      add('chain', { name: 'syn_raw', type: 'filter', hook: 'prerouting', prio: SYN_RAW_PRIORITY, policy: 'accept' }),
      rule(
        'syn_raw',
        [
          TCP_SYN_ONLY,
          inSet('vips_normal'),
          { set: { op: 'add', elem: VIP_KEY, set: '@syn_rate', stmt: [limitOver(synproxy.aboveRate)] } },
          { set: { op: 'update', elem: { elem: { val: VIP_KEY, timeout: synproxy.holdSeconds } }, set: '@synproxy_active' } },
        ],
        'SYNs over the rate: SYNPROXY on for the VIP port',
      ),
      rule('syn_raw', [TCP_SYN_ONLY, inSet('synproxy_active'), countPerVip('synproxied_counters'), { notrack: null }], 'SYNPROXY answers; no entry'),
      add('chain', { name: 'synproxy_in', type: 'filter', hook: 'input', prio: 0, policy: 'accept' }),
      rule(
        'synproxy_in',
        [
          match({ ct: { key: 'state' } }, ['invalid', 'untracked'], 'in'),
          match(meta('l4proto'), 'tcp'),
          inSet('synproxy_active'),
          {
            synproxy: {
              mss: synproxy.mss,
              wscale: synproxy.wscale,
              ...(synproxy.timestamp || synproxy.sackPerm ? { flags: [...(synproxy.timestamp ? ['timestamp'] : []), ...(synproxy.sackPerm ? ['sack-perm'] : [])] } : {}),
            },
          },
        ],
        'SYN cookie out, cookie ACK checked',
      ),
      rule('synproxy_in', [match({ ct: { key: 'state' } }, ['invalid', 'untracked'], 'in'), match(meta('l4proto'), 'tcp'), inSet('synproxy_active'), { drop: null }], 'anything else without an entry'),
      insertRule('reject', [match({ ct: { key: 'state' } }, 'invalid', 'in'), match(meta('l4proto'), 'tcp'), TCP_ACK_ONLY, inSet('synproxy_active'), { accept: null }], 'a cookie ACK goes to SYNPROXY, not to a reset'),
      // Inserted at the head of the hold chain: the second one ends up first.
      insertRule('hold', [TCP_SYN_ONLY, inSet('vips_migrating'), ADDRESS_HERE, inSet('synproxy_active'), { accept: null }], 'not held: SYNPROXY answers it (syn_raw, synproxy_in)'),
      insertRule(
        'hold',
        [
          TCP_SYN_ONLY,
          inSet('vips_migrating'),
          ADDRESS_HERE,
          { set: { op: 'add', elem: VIP_KEY, set: '@held_syn_rate', stmt: [limitOver(synproxy.aboveRate, heldSynBurst(synproxy.aboveRate))] } },
          { set: { op: 'update', elem: { elem: { val: VIP_KEY, timeout: synproxy.holdSeconds } }, set: '@synproxy_active' } },
        ],
        'SYNs over the rate at a held VIP port (a short burst): SYNPROXY on',
      ),
      // SYNPROXY's own SYN towards the VIP leaves as a local packet: DNAT it like a forwarded one.
      add('chain', { name: 'nat_output', type: 'nat', hook: 'output', prio: -100, policy: 'accept' }),
      rule('nat_output', [{ vmap: { key: VIP_KEY, data: '@vip_dnat' } }], 'connections SYNPROXY opens'),
    );
    if (synproxy.timestamp) {
      const marked = match({ '&': [meta('mark'), SYNPROXY_ACK_MARK] }, SYNPROXY_ACK_MARK);
      cmds.push(
        add('chain', { name: 'synproxy_ack_out', type: 'filter', hook: 'output', prio: 0, policy: 'accept' }),
        rule('synproxy_ack_out', [TCP_ACK_ONLY, SOURCE_NOT_HERE, { mangle: { key: meta('mark'), value: { '|': [meta('mark'), SYNPROXY_ACK_MARK] } } }], "SYNPROXY's ACK to the server"),
        add('chain', { name: 'synproxy_ack', type: 'filter', hook: 'postrouting', prio: AFTER_SYNPROXY_PRIORITY, policy: 'accept' }),
        rule('synproxy_ack', [marked, TCP_ACK_ONLY, { mangle: { key: { 'tcp option': { name: 'timestamp', field: 'tsecr' } }, value: 0 } }], 'its TSecr, shifted twice by the kernel: 0'),
      );
    }
  }

  // The appliance's own management traffic (agent API, pulls from peers, pushes to keepers)
  // takes no conntrack entry: a full table must not cut it off from the controller, its peers
  // and its keepers — the migration that would give room back goes over that link.
  const mgmt = config.api.listen.split(':')[0]!;
  if (mgmt !== '0.0.0.0') {
    cmds.push(
      add('chain', { name: 'mgmt_in', type: 'filter', hook: 'prerouting', prio: SYN_RAW_PRIORITY, policy: 'accept' }),
      rule('mgmt_in', [match(payload('ip', 'daddr'), mgmt), { notrack: null }], 'management traffic: no entry'),
      add('chain', { name: 'mgmt_out', type: 'filter', hook: 'output', prio: SYN_RAW_PRIORITY, policy: 'accept' }),
      rule('mgmt_out', [match(payload('ip', 'saddr'), mgmt), { notrack: null }], 'management traffic: no entry'),
    );
  }

  const limits: Expr[][] = [];
  if (newConnectionsPerVip > 0) {
    cmds.push(add('set', { name: 'vip_new_rate', type: SERVICE_TYPE, size: SET_SIZE, }));
    limits.push([{ set: { op: 'add', elem: VIP_KEY, set: '@vip_new_rate', stmt: [limitOver(newConnectionsPerVip)] } }, countPerVip('vip_limited_counters'), { drop: null }]);
  }
  if (connectionsPerSource > 0) {
    cmds.push(add('set', { name: 'source_conns', type: 'ipv4_addr', size: SET_SIZE, }));
    limits.push([
      { set: { op: 'add', elem: payload('ip', 'saddr'), set: '@source_conns', stmt: [{ 'ct count': { val: connectionsPerSource, inv: true } }] } },
      countPerVip('source_limited_counters'),
      { drop: null },
    ]);
  }
  if (limits.length > 0) {
    cmds.push(add('chain', { name: 'flood_limits' }));
    for (const expr of limits) cmds.push(rule('flood_limits', expr, 'over a limit of new connections'));
    const entry = [match({ ct: { key: 'state' } }, 'new', 'in'), inSet('vips_normal'), { jump: { target: 'flood_limits' } }];
    cmds.push(
      add('chain', { name: 'limits_in', type: 'filter', hook: 'prerouting', prio: LIMITS_PRIORITY, policy: 'accept' }),
      rule('limits_in', entry, 'new connections of normal VIPs'),
      add('chain', { name: 'limits_out', type: 'filter', hook: 'output', prio: REJECT_PRIORITY, policy: 'accept' }),
      rule('limits_out', entry, 'connections SYNPROXY opens (before nat_output)'),
    );
  }
  return cmds;
}

/** A VIP port SYNPROXY answers for (in `synproxy_active`), and the seconds it has left there. */
export interface SynproxyPort {
  port: number;
  seconds: number;
}

/**
 * The VIP's ports in `synproxy_active`, from `nft -j list set` of it (nft gives the seconds an
 * element has left as `expires`). What a migration's source hands its target with the pre-copy:
 * a flood that made the source answer with SYN cookies would otherwise reach the target's hold
 * until the target's own meter counted past the rate (held, a flood's SYNs lengthen the hold).
 */
export function synproxyPortsOf(listing: NftBatch, vip: VipConfig): SynproxyPort[] {
  const out: SynproxyPort[] = [];
  for (const item of listing.nftables) {
    const set = item.set as { name?: unknown; elem?: unknown } | undefined;
    const elems = set?.name === 'synproxy_active' ? set.elem : undefined;
    if (!Array.isArray(elems)) continue;
    for (const e of elems as unknown[]) {
      const elem = (e as { elem?: { val?: { concat?: unknown[] }; expires?: unknown } } | null)?.elem;
      const [address, protocol, port] = elem?.val?.concat ?? [];
      if (address !== vip.address || protocol !== vip.protocol || typeof port !== 'number' || !vip.ports.includes(port)) continue;
      out.push({ port, seconds: typeof elem?.expires === 'number' ? elem.expires : 0 });
    }
  }
  return out;
}

/**
 * Commands putting `ports` in `synproxy_active` here for the seconds they had left on the source
 * (at least one); a port that is not the VIP's is left out (they come from a peer).
 */
export function synproxyEngageCommands(vip: VipConfig, ports: readonly SynproxyPort[], table: string): NftCommand[] {
  const elem = ports
    .filter((p) => vip.ports.includes(p.port) && Number.isInteger(p.seconds))
    .map((p) => ({ elem: { val: vipKey(vip, p.port), timeout: Math.max(1, p.seconds) } }));
  return elem.length === 0 ? [] : [{ add: { element: { family: 'ip', table, name: 'synproxy_active', elem } } }];
}
