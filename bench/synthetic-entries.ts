/**
 * Idle ESTABLISHED entries of a VIP as its own connections would leave them, for the
 * benchmarks that fill an appliance's access table (migration, drain, synflood): clients spread
 * over 198.51.100.20 and the `hosts - 1` addresses above it (away from the lab client's .10;
 * bench-synflood keeps them below its spoofed sources, .201 and .202) and their ports, half on port 7 and half
 * on 80, to the servers in turn, window tracking as a live entry carries; a fullnat VIP's
 * entries take a SNAT port each, from the range's top down.
 */
import { IPPROTO_TCP, IPS_ASSURED, IPS_SEEN_REPLY, IP_CT_TCP_FLAG_SACK_PERM, IP_CT_TCP_FLAG_WINDOW_SCALE, TCP_CONNTRACK_ESTABLISHED } from '../src/netlink/ctnetlink.js';
import { RECORD_SIZE, writeRecord } from '../src/netlink/entry-record.js';

/** IP_CT_TCP_FLAG_MAXACK_SET: the window tracker has seen an ACK (live entries carry it). */
const IP_CT_TCP_FLAG_MAXACK_SET = 0x20;

export function syntheticRecords(
  count: number,
  vip: { address: string; id: number; mode?: 'dnat' | 'fullnat'; insideAddress?: string },
  servers: readonly string[],
  timeout: number,
  hosts = 230, // 198.51.100.20 .. .249
): Buffer {
  const b = Buffer.alloc(count * RECORD_SIZE);
  const flags = IP_CT_TCP_FLAG_WINDOW_SCALE | IP_CT_TCP_FLAG_SACK_PERM | IP_CT_TCP_FLAG_MAXACK_SET;
  for (let i = 0; i < count; i++) {
    const port = i % 2 === 0 ? 7 : 80;
    writeRecord(b, i * RECORD_SIZE, {
      client: { address: `198.51.100.${20 + (i % hosts)}`, port: 1024 + Math.floor(i / hosts) },
      vip: { address: vip.address, port },
      server: { address: servers[i % servers.length]!, port },
      ...(vip.mode === 'fullnat' && vip.insideAddress ? { inside: { address: vip.insideAddress, port: 29999 - i } } : {}),
      proto: IPPROTO_TCP,
      tcpState: TCP_CONNTRACK_ESTABLISHED,
      tcpWindow: { wscaleOriginal: 7, wscaleReply: 7, flagsOriginal: flags, flagsReply: flags },
      status: IPS_SEEN_REPLY | IPS_ASSURED,
      // Idle for up to an hour of the established timeout.
      timeout: timeout - (i % 3600),
      mark: vip.id,
    });
  }
  return b;
}
