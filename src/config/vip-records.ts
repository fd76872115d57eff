/**
 * Which entry records (src/netlink/entry-record.ts) belong to a VIP of the configuration: its
 * ct mark (the VIP's id), its address, protocol and one of its ports, one of its backends (or
 * its sorry server) on the port it serves, and in fullnat its inside address on a port of its snatPorts (in dnat,
 * no inside address at all). An appliance installs only such records, whoever sent them (a
 * migration's source, a keeper, a peer answering a takeover); a keeper stores only such
 * copies. Anything else would reach conntrack as an entry of our VIP that sends a client's
 * packets where the configuration never said they go.
 */
import { ipv4ToNumber } from '../packet/ipv4.js';
import { RECORD_SIZE, rec } from '../netlink/entry-record.js';
import { IPPROTO_TCP, IPPROTO_UDP } from '../netlink/ctnetlink.js';
import { snatPortRange, type VipConfig } from './appliance.js';

/** Why a record was refused: the first rule it breaks, in this order. */
export type RecordRefusal = 'mark' | 'address' | 'protocol' | 'port' | 'server' | 'inside';

export interface RecordCheck {
  /** The records that belong, in their order (the input itself when all do). */
  accepted: Buffer;
  refused: number;
  /** Refused records by reason. */
  reasons: Partial<Record<RecordRefusal, number>>;
}

/** In a server's port set: it serves each VIP port on the same port. */
const ANY_VIP_PORT = 0;

interface VipRule {
  address: number;
  protocol: number;
  ports: Set<number>;
  /** Server address → the ports it serves (ANY_VIP_PORT: the record's VIP port). */
  servers: Map<number, Set<number>>;
  /** fullnat: the inside address and the SNAT port range; dnat: none. */
  inside: { address: number; first: number; last: number } | undefined;
}

function ruleOf(vip: VipConfig): VipRule {
  const servers = new Map<number, Set<number>>();
  // A backend (or the sorry server) may name the port it serves; without one it serves the
  // VIP's ports unchanged. A backend draining or down still has live connections.
  for (const s of [...vip.backends, ...(vip.sorryServer ? [vip.sorryServer] : [])]) {
    const ports = servers.get(ipv4ToNumber(s.address)) ?? new Set<number>();
    if (s.port === undefined) ports.add(ANY_VIP_PORT);
    else ports.add(s.port);
    servers.set(ipv4ToNumber(s.address), ports);
  }
  let inside: VipRule['inside'];
  if (vip.mode === 'fullnat') {
    const [first, last] = snatPortRange(vip);
    inside = { address: ipv4ToNumber(vip.insideAddress), first, last };
  }
  return { address: ipv4ToNumber(vip.address), protocol: vip.protocol === 'udp' ? IPPROTO_UDP : IPPROTO_TCP, ports: new Set(vip.ports), servers, inside };
}

function refusal(records: Buffer, r: number, rule: VipRule): RecordRefusal | undefined {
  if (rec.vipAddress(records, r) !== rule.address) return 'address';
  if (rec.protocol(records, r) !== rule.protocol) return 'protocol';
  const vipPort = rec.vipPort(records, r);
  if (!rule.ports.has(vipPort)) return 'port';
  const served = rule.servers.get(rec.serverAddress(records, r));
  const serverPort = rec.serverPort(records, r);
  if (!served || !(served.has(serverPort) || (served.has(ANY_VIP_PORT) && serverPort === vipPort))) return 'server';
  const insideAddress = rec.insideAddress(records, r);
  const insidePort = rec.insidePort(records, r);
  if (!rule.inside) return insideAddress === 0 && insidePort === 0 ? undefined : 'inside';
  if (insideAddress !== rule.inside.address || insidePort < rule.inside.first || insidePort > rule.inside.last) return 'inside';
  return undefined;
}

/**
 * Splits `records` into those that belong to one of `vips` (the VIP whose id is the record's
 * ct mark) and the refused, counted by reason. One pass, no copy when every record belongs.
 */
export function checkRecords(records: Buffer, vips: readonly VipConfig[]): RecordCheck {
  const rules = new Map(vips.map((v) => [v.id, ruleOf(v)]));
  const n = Math.floor(records.length / RECORD_SIZE);
  const reasons: RecordCheck['reasons'] = {};
  let keep: Buffer[] | undefined;
  let refused = 0;
  let runStart = 0;
  for (let i = 0; i < n; i++) {
    const r = i * RECORD_SIZE;
    const rule = rules.get(rec.mark(records, r));
    const why = rule ? refusal(records, r, rule) : 'mark';
    if (why === undefined) continue;
    refused++;
    reasons[why] = (reasons[why] ?? 0) + 1;
    keep ??= [];
    if (r > runStart) keep.push(records.subarray(runStart, r));
    runStart = r + RECORD_SIZE;
  }
  if (!keep) return { accepted: records.subarray(0, n * RECORD_SIZE), refused, reasons };
  if (n * RECORD_SIZE > runStart) keep.push(records.subarray(runStart, n * RECORD_SIZE));
  return { accepted: Buffer.concat(keep), refused, reasons };
}
