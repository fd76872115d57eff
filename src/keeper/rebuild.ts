/**
 * Patent variant 1: in `dnat` mode the server sees each connection's real client address and
 * port, so when the keeper has no copy of an entry it can rebuild it from its own TCP socket
 * table (sockdiag.ts). What the server cannot see comes from the keeper's configuration: the
 * VIP's address (the client's destination; dnat keeps the port) and its id (the ct mark).
 *
 * A socket belongs to dnat VIP v when its local address and port are those a backend of v
 * serves one of v's ports on (the same port, or the backend's own), and its peer can be a
 * client of an appliance (`NotClients`). A backend port that serves several VIP ports does not
 * say which one the client asked for: such sockets are not rebuilt.
 */
import { IP_CT_TCP_FLAG_SACK_PERM, IP_CT_TCP_FLAG_WINDOW_SCALE, IPPROTO_TCP, IPS_ASSURED, IPS_CONFIRMED, IPS_DST_NAT, IPS_DST_NAT_DONE, IPS_SEEN_REPLY, IPS_SRC_NAT_DONE, TCP_CONNTRACK_ESTABLISHED } from '../netlink/ctnetlink.js';
import { RECORD_SIZE, writeRecord } from '../netlink/entry-record.js';
import { TCPI_OPT_SACK, TCPI_OPT_WSCALE, TCP_ESTABLISHED, type DiagSocket } from '../netlink/sockdiag.js';
import type { VipConfig } from '../config/appliance.js';
import { inNetwork } from '../packet/ipv4.js';

/** nf_conntrack_tcp_timeout_established's default (5 days): a rebuilt entry lives like a fresh one. */
export const REBUILD_TIMEOUT = 432_000;

/** The status a dump shows for a live dnat entry; the kernel keeps only what userspace may set. */
export const REBUILD_STATUS = IPS_SEEN_REPLY | IPS_ASSURED | IPS_CONFIRMED | IPS_DST_NAT | IPS_SRC_NAT_DONE | IPS_DST_NAT_DONE;

export class RebuildError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RebuildError';
  }
}

/**
 * Peers whose connections are not a dnat VIP's. An inside address: fullnat connections arrive
 * from one, their client hidden behind the SNAT. An address on one of the server's own
 * networks: the appliances' health checks come from there, and a dnat client there could not
 * be one, since the server would answer it directly, not through an appliance.
 */
export interface NotClients {
  insideAddresses: ReadonlySet<string>;
  /** The server's networks as CIDR ("198.18.0.101/24"). */
  networks: readonly string[];
}

/** What identifies a dnat connection of one VIP on its server: the client's end and the port. */
export const connectionKey = (client: string, clientPort: number, port: number): string => `${client}:${clientPort}:${port}`;

/** Why VIP `vip` cannot be rebuilt from this server's sockets, or undefined if it can. */
export function cannotRebuild(vip: VipConfig): string | undefined {
  if (vip.mode !== 'dnat') return `VIP ${vip.name} is ${vip.mode}: only dnat connections show their client to the server`;
  if (vip.protocol !== 'tcp') return `VIP ${vip.name} is ${vip.protocol}: the socket table rebuild reads TCP sockets`;
  return undefined;
}

/**
 * Entry records of `vip`'s connections among `sockets` (a dump of this server's ESTABLISHED TCP
 * sockets on the VIP's ports). `notClients`: the peers left out. `skip`: connectionKey()s
 * already covered by copies.
 */
export function rebuildRecords(
  vip: VipConfig,
  sockets: readonly DiagSocket[],
  notClients: NotClients,
  skip: ReadonlySet<string> = new Set(),
  timeout = REBUILD_TIMEOUT,
): Buffer {
  const why = cannotRebuild(vip);
  if (why) throw new RebuildError(why);
  // backend address:port → the VIP port it serves (null: several, ambiguous).
  const served = new Map<string, number | null>();
  for (const b of vip.backends) {
    for (const port of vip.ports) {
      const key = `${b.address}:${b.port ?? port}`;
      const seen = served.get(key);
      served.set(key, seen === undefined || seen === port ? port : null);
    }
  }
  const vipPort = (s: DiagSocket): number | null | undefined => served.get(`${s.src}:${s.sport}`);
  const mine = sockets.filter((s) => {
    const port = vipPort(s);
    return (
      s.state === TCP_ESTABLISHED &&
      typeof port === 'number' &&
      !notClients.insideAddresses.has(s.dst) &&
      !notClients.networks.some((n) => inNetwork(s.dst, n)) &&
      !skip.has(connectionKey(s.dst, s.dport, port))
    );
  });
  const out = Buffer.alloc(mine.length * RECORD_SIZE);
  mine.forEach((s, i) => {
    const info = s.tcpInfo;
    const wscale = info !== undefined && (info.options & TCPI_OPT_WSCALE) !== 0;
    const flags = (wscale ? IP_CT_TCP_FLAG_WINDOW_SCALE : 0) | (info && info.options & TCPI_OPT_SACK ? IP_CT_TCP_FLAG_SACK_PERM : 0);
    writeRecord(out, i * RECORD_SIZE, {
      client: { address: s.dst, port: s.dport },
      vip: { address: vip.address, port: vipPort(s)! },
      server: { address: s.src, port: s.sport },
      proto: IPPROTO_TCP,
      tcpState: TCP_CONNTRACK_ESTABLISHED,
      // Original direction = the client's: it announced the scale the server applies to its windows.
      tcpWindow: { wscaleOriginal: wscale ? info.sndWscale : 0, wscaleReply: wscale ? info.rcvWscale : 0, flagsOriginal: flags, flagsReply: flags },
      status: REBUILD_STATUS,
      timeout,
      mark: vip.id,
    });
  });
  return out;
}
