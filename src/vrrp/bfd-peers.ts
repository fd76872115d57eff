/**
 * The speaker's BFD sessions: one per (VRRP interface, peer), shared by every instance on the
 * interface. A backup learns its master's address from the master's adverts (or from the
 * configured unicast peers) and opens an Active session to it; a master, which hears no
 * adverts from its backups, answers them from a Passive session created when their first
 * packet arrives (RFC 5880 §6.3 allows creating a session for an unknown Your Discriminator
 * 0 packet), but only from an address on one of the BFD interfaces' subnets.
 * Received packets are demultiplexed (§6.3) by Your Discriminator, else by source address;
 * malformed and unmatched ones are counted by reason and dropped.
 */
import { randomInt } from 'node:crypto';
import { decodeBfdControl, encodeBfdControl, type BadBfdReason, type BfdControlPacket } from './bfd-packet.js';
import type { BfdSender, BfdTransport } from './bfd-link.js';
import { BfdSession, type BfdSessionStatus, type BfdStateChange, type BfdTimers } from './bfd-session.js';
import type { Clock, TimerHandle } from './state-machine.js';

/** A bound on sessions that strangers on the link can make us create. */
const MAX_SESSIONS = 64;
/** How often the kernel's GTSM drop counter is read (it costs a run of `nft`). */
const GTSM_POLL_MS = 10_000;

export type BfdDropReason = BadBfdReason | 'no-session' | 'unknown-peer' | 'too-many-sessions';

export interface BfdPeerStatus extends BfdSessionStatus {
  interface: string;
  peer: string;
  local: string;
  passive: boolean;
}

export interface BfdStatus {
  /** False until GTSM is in place and the receive socket is open (or when that failed). */
  running: boolean;
  sessions: BfdPeerStatus[];
  counters: {
    /** Received packets dropped, by reason. */
    dropped: Partial<Record<BfdDropReason, number>>;
    /** Dropped by the kernel for a TTL other than 255 (GTSM), as of the last reading. */
    gtsmDropped?: number;
    /** Backups that took over because BFD and the adverts both said the master was gone. */
    takeovers: number;
    /** Sessions to a master that went Down while its adverts still came: no takeover. */
    suppressed: number;
  };
}

export interface BfdPeer {
  readonly ifname: string;
  readonly address: string;
  readonly session: BfdSession;
}

interface Peer extends BfdPeer {
  local: string;
  passive: boolean;
  sender: BfdSender;
}

export interface BfdPeersOptions {
  transport: BfdTransport;
  clock: Clock;
  /** The BFD timers of an interface, undefined when no instance there uses BFD. */
  timersOf(ifname: string): BfdTimers | undefined;
  /** The BFD interface whose subnet holds an address, if any. */
  interfaceOf(address: string): string | undefined;
  /** The address our packets on an interface come from (the adverts' source). */
  localOf(ifname: string): string | undefined;
  changed(peer: BfdPeer, change: BfdStateChange): void;
  log?: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void; error(obj: object, msg: string): void };
}

export class BfdPeers {
  private readonly peers = new Map<string, Peer>();
  private readonly byDiscriminator = new Map<number, Peer>();
  private running = false;
  private stopped = false;
  private gtsmTimer: TimerHandle | undefined;
  readonly counters: BfdStatus['counters'] = { dropped: {}, takeovers: 0, suppressed: 0 };

  constructor(private readonly options: BfdPeersOptions) {}

  /** GTSM, then the receive socket; `ready` runs once packets can be accepted. */
  start(ready: () => void): void {
    this.options.transport.start((payload, from) => this.receive(payload, from)).then(
      () => {
        if (this.stopped) return;
        this.running = true;
        this.options.log?.info({}, 'BFD running (RFC 5881, UDP 3784, TTL 255 enforced by nftables)');
        this.pollGtsm();
        ready();
      },
      (err: Error) => this.options.log?.error({ err: err.message }, 'BFD not started (GTSM rule or UDP 3784): VRRP runs without it'),
    );
  }

  /** The session to a peer on an interface, opened (Active) if new; undefined while BFD is not running. */
  learn(ifname: string, address: string, passive = false): BfdPeer | undefined {
    const key = `${ifname}|${address}`;
    const known = this.peers.get(key);
    if (known || !this.running) return known;
    const timers = this.options.timersOf(ifname);
    const local = this.options.localOf(ifname);
    if (!timers || !local || this.peers.size >= MAX_SESSIONS) return undefined;
    let localDiscriminator: number;
    do localDiscriminator = randomInt(1, 0xffffffff);
    while (this.byDiscriminator.has(localDiscriminator));
    const sender = this.options.transport.open(local, address);
    let peer: Peer | undefined;
    const session = new BfdSession(
      { ...timers, localDiscriminator, passive },
      this.options.clock,
      (packet: BfdControlPacket) => sender.send(encodeBfdControl(packet)),
      (change) => {
        this.options.log?.info({ interface: ifname, peer: address, from: change.from, to: change.to, diag: change.diag }, 'BFD session');
        this.options.changed(peer as Peer, change);
      },
    );
    peer = { ifname, address, local, passive, sender, session };
    this.peers.set(key, peer);
    this.byDiscriminator.set(localDiscriminator, peer);
    session.start();
    return peer;
  }

  status(): BfdStatus {
    return {
      running: this.running,
      sessions: [...this.peers.values()].map((p) => ({ interface: p.ifname, peer: p.address, local: p.local, passive: p.passive, ...p.session.status() })),
      counters: { ...this.counters, dropped: { ...this.counters.dropped } },
    };
  }

  /** Every session says AdminDown (so peers do not read our silence as a failure), then the sockets close. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.running = false;
    this.gtsmTimer?.cancel();
    for (const p of this.peers.values()) {
      p.session.stop();
      p.sender.close();
    }
    this.peers.clear();
    this.byDiscriminator.clear();
    await this.options.transport.close();
  }

  /** Never throws: whatever arrives is a session's packet or a counted drop. */
  private receive(payload: Buffer, from: string): void {
    if (!this.running) return;
    const r = decodeBfdControl(payload);
    if (!r.ok) return this.drop(r.reason, from);
    const packet = r.packet;
    let peer: Peer | undefined;
    if (packet.yourDiscriminator !== 0) {
      peer = this.byDiscriminator.get(packet.yourDiscriminator);
      // Single hop: the discriminator must also belong to the session with this neighbour.
      if (!peer || peer.address !== from) return this.drop('no-session', from);
    } else {
      peer = [...this.peers.values()].find((p) => p.address === from);
      if (!peer) {
        const ifname = this.options.interfaceOf(from);
        if (!ifname) return this.drop('unknown-peer', from);
        if (this.peers.size >= MAX_SESSIONS) return this.drop('too-many-sessions', from);
        peer = this.learn(ifname, from, true) as Peer | undefined;
        if (!peer) return this.drop('unknown-peer', from);
      }
    }
    peer.session.receive(packet);
  }

  /** Counted always; logged the first time per reason. */
  private drop(reason: BfdDropReason, from: string): void {
    const seen = this.counters.dropped[reason] ?? 0;
    this.counters.dropped[reason] = seen + 1;
    if (seen === 0) this.options.log?.warn({ reason, from }, 'BFD packet dropped (RFC 5880 §6.8.6); further ones with this reason are only counted');
  }

  private pollGtsm(): void {
    this.options.transport.gtsmDropped().then(
      (n) => {
        if (n !== undefined) this.counters.gtsmDropped = n;
      },
      () => undefined,
    );
    this.gtsmTimer = this.options.clock.setTimer(GTSM_POLL_MS, () => this.pollGtsm());
  }
}

