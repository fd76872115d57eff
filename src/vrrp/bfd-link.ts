/**
 * The network side of single-hop BFD (RFC 5881): Control packets over UDP, to port 3784,
 * from a source port in 49152–65535 kept for the whole session, with TTL 255.
 *
 * GTSM (RFC 5881 §5, RFC 5082): without authentication a receiver must drop packets whose TTL
 * is not 255, which proves they were sent on the link. Node's dgram cannot read a received
 * packet's TTL (no IP_RECVTTL), so the kernel checks it: before the receive socket opens, the
 * speaker installs its own nftables table (`ip vipshift_bfd`, apart from the appliance's
 * `ip vipshift`, which is rebuilt whole) with one input rule that counts and drops UDP to
 * 3784 with a TTL other than 255. If that table cannot be installed, the receive socket is
 * never opened: no BFD packet is ever accepted unchecked, and VRRP works as without BFD.
 */
import dgram from 'node:dgram';
import { BFD_CONTROL_PORT, BFD_SOURCE_PORT_MAX, BFD_SOURCE_PORT_MIN, BFD_TTL } from './bfd-packet.js';
import { nft as nftRunner, type NftRunner } from '../kernel/nft.js';
import type { NftBatch } from '../kernel/nft.js';

export const GTSM_TABLE = 'vipshift_bfd';

/** The GTSM table: flushed and rebuilt in one transaction whether or not it exists. */
export function gtsmRuleset(table = GTSM_TABLE): NftBatch {
  const t = { family: 'ip', table };
  return {
    nftables: [
      { add: { table: { family: 'ip', name: table } } },
      { delete: { table: { family: 'ip', name: table } } },
      { add: { table: { family: 'ip', name: table } } },
      { add: { counter: { ...t, name: 'gtsm_dropped' } } },
      // Before the input filters of other tables: a drop here is final whatever they accept.
      { add: { chain: { ...t, name: 'input', type: 'filter', hook: 'input', prio: -150, policy: 'accept' } } },
      {
        add: {
          rule: {
            ...t,
            chain: 'input',
            comment: 'RFC 5881 §5: single-hop BFD only with TTL 255',
            expr: [
              { match: { op: '==', left: { payload: { protocol: 'udp', field: 'dport' } }, right: BFD_CONTROL_PORT } },
              { match: { op: '!=', left: { payload: { protocol: 'ip', field: 'ttl' } }, right: BFD_TTL } },
              { counter: 'gtsm_dropped' },
              { drop: null },
            ],
          },
        },
      },
    ],
  };
}

/** Sends one session's packets: its own socket, so its source port stays the same (RFC 5881 §4). */
export interface BfdSender {
  send(payload: Buffer): void;
  close(): void;
}

/** What the speaker needs of the network for BFD; a memory one in unit tests. */
export interface BfdTransport {
  /** Installs GTSM and opens the receive socket; packets go to `receive` after that. */
  start(receive: (payload: Buffer, from: string) => void): Promise<void>;
  open(local: string, peer: string): BfdSender;
  /** Packets the kernel dropped for their TTL (GTSM), when known. */
  gtsmDropped(): Promise<number | undefined>;
  close(): Promise<void>;
}

export class UdpBfdTransport implements BfdTransport {
  private socket: dgram.Socket | undefined;
  private readonly senders = new Set<dgram.Socket>();
  private gtsm = false;

  constructor(
    private readonly runner: NftRunner = nftRunner,
    private readonly onError: (what: string, err: Error) => void = () => undefined,
  ) {}

  async start(receive: (payload: Buffer, from: string) => void): Promise<void> {
    await this.runner.apply(gtsmRuleset());
    this.gtsm = true;
    const socket = dgram.createSocket({ type: 'udp4' });
    socket.on('message', (payload, rinfo) => receive(payload, rinfo.address));
    socket.on('error', (err) => this.onError('BFD receive socket', err));
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(BFD_CONTROL_PORT, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    this.socket = socket;
  }

  open(local: string, peer: string): BfdSender {
    const span = BFD_SOURCE_PORT_MAX - BFD_SOURCE_PORT_MIN + 1;
    let socket: dgram.Socket;
    let ready = false;
    const queued: Buffer[] = [];
    // A port another socket holds fails the bind: try the next random one.
    const bind = (tries: number) => {
      socket = dgram.createSocket({ type: 'udp4' });
      const bindFailed = (err: NodeJS.ErrnoException) => {
        socket.close();
        this.senders.delete(socket);
        if (err.code === 'EADDRINUSE' && tries > 1) bind(tries - 1);
        else this.onError(`BFD socket ${local} → ${peer}`, err);
      };
      socket.once('error', bindFailed);
      this.senders.add(socket);
      socket.bind({ address: local, port: BFD_SOURCE_PORT_MIN + Math.floor(Math.random() * span), exclusive: true }, () => {
        socket.off('error', bindFailed);
        socket.setTTL(BFD_TTL);
        socket.on('error', (err) => this.onError(`BFD send ${local} → ${peer}`, err));
        ready = true;
        for (const p of queued.splice(0)) socket.send(p, BFD_CONTROL_PORT, peer);
      });
    };
    bind(16);
    return {
      send: (payload) => {
        if (ready) socket.send(payload, BFD_CONTROL_PORT, peer);
        else if (queued.length < 4) queued.push(payload);
      },
      close: () => {
        this.senders.delete(socket);
        const last = socket;
        // A send still resolving its address would be lost by an immediate close (the AdminDown).
        setTimeout(() => {
          try {
            last.close();
          } catch {
            // already closed after a failed bind
          }
        }, 20);
      },
    };
  }

  async gtsmDropped(): Promise<number | undefined> {
    if (!this.gtsm) return undefined;
    const listing = await this.runner.list(['counter', 'ip', GTSM_TABLE, 'gtsm_dropped']);
    for (const item of listing.nftables) {
      const counter = item.counter as { packets?: number } | undefined;
      if (counter?.packets !== undefined) return counter.packets;
    }
    return undefined;
  }

  async close(): Promise<void> {
    this.socket?.close();
    this.socket = undefined;
    for (const s of this.senders) s.close();
    this.senders.clear();
    if (this.gtsm) {
      this.gtsm = false;
      await this.runner.apply({ nftables: [{ delete: { table: { family: 'ip', name: GTSM_TABLE } } }] }).catch((err: Error) => this.onError('removing the GTSM table', err));
    }
  }
}
