/**
 * The VRRP speaker: the configured instances (virtual routers) with the real clock, their
 * links and the virtual addresses. It turns the state machines' actions into frames and
 * rtnetlink requests, checks received adverts (RFC 5798 §7.1) and counts what it drops,
 * tracks interfaces, and offers the controlled handover (release / claim) that step 2 of a
 * migration uses.
 */
import { EventEmitter } from 'node:events';
import {
  AUTH_AH,
  AUTH_NONE,
  AUTH_PASS,
  VRRP_MULTICAST_IPV4,
  addressesMatch,
  decodeAdvertisementFor,
  encodeAdvertisementFrame,
  virtualMac,
  type BadAdvertReason,
} from './advert.js';
import { ARPOP_REPLY, ARPOP_REQUEST, BROADCAST_MAC, ETHERTYPE_ARP, decodeArpFrame, encodeArpFrame, gratuitousArp } from '../packet/arp.js';
import { VirtualAddresses, type AddressTable, type VirtualAddress } from './addresses.js';
import { UdpBfdTransport, type BfdTransport } from './bfd-link.js';
import { BfdDiag } from './bfd-packet.js';
import { BfdPeers, type BfdPeer, type BfdStatus } from './bfd-peers.js';
import { inNetwork } from '../packet/ipv4.js';
import type { BfdStateChange, BfdTimers } from './bfd-session.js';
import { vmacName, type VrrpConfig, type VrrpInstanceConfig } from '../config/vrrp.js';
import { macvlanLinks, type VirtualMacLinks } from '../kernel/macvlan.js';
import { PcapLink, interfaceFacts, linkIsUp, type InterfaceFacts, type Link } from '../kernel/pcap-link.js';
import { OWNER_PRIORITY, VirtualRouter, type Action, type Clock, type TimerHandle, type VrrpState } from './state-machine.js';
import { SyncGroup } from './sync-group.js';

export interface SpeakerLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface SpeakerOptions {
  addresses: AddressTable;
  clock?: Clock;
  openLink?: (ifname: string) => Link;
  interfaceFacts?: (ifname: string) => InterfaceFacts;
  linkIsUp?: (ifname: string) => boolean;
  logger?: SpeakerLogger;
  /** How often tracked interfaces are checked, ms. */
  trackIntervalMs?: number;
  /** BFD's network side (UDP and the GTSM rule); a memory one in unit tests. */
  bfdTransport?: () => BfdTransport;
  /** The macvlan interfaces of useVmac instances; a memory one in unit tests. */
  virtualMacs?: VirtualMacLinks;
}

/**
 * BFD's second signal (see bfdSaysDown): the master's adverts must have stopped, i.e. none for
 * this many of its advert intervals. One interval plus half a one of slack, so that an advert
 * a little late under load is not taken for a missing one; at the lab's 0.1 s adverts and
 * 50 ms × 3 BFD this costs nothing, since BFD's own detection (≤ 150 ms) decides.
 */
export const BFD_ADVERTS_MISSING_AFTER = 1.5;

/**
 * Timers whose verdict waits for the packets already received: a timer fires in the event
 * loop's timers phase, before the poll phase reads the sockets. After the process was not
 * scheduled for a while (a loaded box), the Detection Time and Master_Down timers would
 * expire first and the BFD packets and adverts waiting in the sockets be read only after —
 * a live master taken for dead. Fired from setImmediate instead, they run after that poll;
 * a packet read there re-arms (cancels) them.
 */
export const realClock: Clock = {
  now: () => performance.now(),
  setTimer(ms, fire) {
    let immediate: NodeJS.Immediate | undefined;
    const t = setTimeout(() => {
      immediate = setImmediate(fire);
    }, ms);
    return {
      cancel: () => {
        clearTimeout(t);
        if (immediate) clearImmediate(immediate);
      },
    };
  },
};

/** Wall-clock time with sub-millisecond resolution, comparable to capture timestamps. */
const wallClock = (): number => performance.timeOrigin + performance.now();

export interface InstanceStatus {
  name: string;
  interface: string;
  vrid: number;
  /** VRRP version: 2 (RFC 3768) or 3 (RFC 5798). */
  version: 2 | 3;
  /** useVmac: the macvlan interface with the virtual MAC holding the addresses. */
  virtualMacInterface?: string;
  state: VrrpState;
  priority: number;
  syncGroup?: string;
  /** The master we follow, while backup. */
  masterAddress?: string;
  /** Seconds. */
  advertInterval: number;
  /** Master_Adver_Interval in seconds (learned from the master while backup). */
  masterAdverInterval: number;
  /** Master_Down_Interval, ms. */
  masterDownInterval: number;
  addresses: string[];
  /**
   * RFC 5798 Accept_Mode. The speaker only reports it: refusing local delivery to the VIPs in
   * non-accept mode is a packet-filter rule, the NAT engine's (as keepalived does with nftables).
   */
  accept: boolean;
  advertsSent: number;
  advertsReceived: number;
  transitions: Record<VrrpState, number>;
}

export interface SpeakerCounters {
  advertsSent: number;
  advertsReceived: number;
  badAdverts: Partial<Record<BadAdvertReason, number>>;
  /** §7.1 MAY check: adverts whose address list differs from ours (processed, logged). */
  addressMismatches: number;
  /** VRRPv2 adverts with Auth Type PASS or AH: processed without checking it, logged once. */
  authenticationIgnored: number;
  garpsSent: number;
  transitions: Record<VrrpState, number>;
  /** Unicast adverts not sent because the peer's MAC is not known yet. */
  peersUnresolved: number;
  /** Failed address changes or frame injections. */
  errors: number;
}

export function emptySpeakerCounters(): SpeakerCounters {
  return {
    advertsSent: 0,
    advertsReceived: 0,
    badAdverts: {},
    addressMismatches: 0,
    authenticationIgnored: 0,
    garpsSent: 0,
    transitions: { initialize: 0, backup: 0, master: 0, fault: 0 },
    peersUnresolved: 0,
    errors: 0,
  };
}

/** Events: 'transition' (TransitionEvent), 'addresses' (AddressesEvent), 'garp' (GarpEvent). */
export interface TransitionEvent {
  instance: string;
  vrid: number;
  from: VrrpState;
  to: VrrpState;
  reason: string;
  at: number;
}
export interface AddressesEvent {
  instance: string;
  change: 'added' | 'removed';
  addresses: string[];
  at: number;
}
export interface GarpEvent {
  instance: string;
  address: string;
  interface: string;
  at: number;
}

interface Instance {
  config: VrrpInstanceConfig;
  router: VirtualRouter;
  group?: SyncGroup;
  /** IPv4 source of adverts: unicastSource or the interface's primary address. */
  source: string;
  /** The addresses as advertised (no prefix). */
  advertised: string[];
  /** useVmac: the macvlan interface with the virtual MAC that holds the addresses. */
  vmac?: string;
  vips: VirtualAddresses;
  advertsSent: number;
  advertsReceived: number;
}

/** A unicast peer's MAC is re-asked by ARP once it is this old... */
const NEIGHBOUR_REFRESH_MS = 30_000;
/** ...and forgotten (adverts to it wait for an answer) when nothing confirmed it for this long. */
const NEIGHBOUR_FORGET_MS = 120_000;

export class Speaker extends EventEmitter {
  private readonly instances = new Map<string, Instance>();
  private readonly groups = new Map<string, SyncGroup>();
  /** Instances waiting out their startupDelaySeconds in Initialize. */
  private readonly startupTimers = new Map<Instance, TimerHandle>();
  private readonly links = new Map<string, Link>();
  /** The macvlan interfaces this speaker created (deleted again by stop()). */
  private readonly vmacs: string[] = [];
  private readonly facts = new Map<string, InterfaceFacts>();
  /**
   * Unicast peers' MACs, learned from ARP and from their adverts, with when: only configured
   * peers are learned, so an on-link host sending ARP from a million addresses adds nothing;
   * an entry is re-asked after NEIGHBOUR_REFRESH_MS and forgotten after NEIGHBOUR_FORGET_MS
   * without an answer (a peer replaced by another box, another MAC).
   */
  private readonly neighbours = new Map<string, { mac: string; at: number; asked: number }>();
  private readonly unicastPeers = new Set<string>();
  private readonly clock: Clock;
  private readonly log: SpeakerLogger | undefined;
  private trackTimer: TimerHandle | undefined;
  private bfd: BfdPeers | undefined;
  /** Backups whose master BFD reported down while its adverts still looked current: re-checked once. */
  private readonly bfdRechecks = new Map<Instance, TimerHandle>();
  private running = false;
  private readonly totals: SpeakerCounters = emptySpeakerCounters();

  constructor(
    readonly config: VrrpConfig,
    private readonly options: SpeakerOptions,
  ) {
    super();
    this.clock = options.clock ?? realClock;
    this.log = options.logger;
    for (const inst of config.instances) for (const peer of inst.unicastPeers) this.unicastPeers.add(peer);
  }

  /** Open the links, learn the interfaces' addresses, and start every instance (§6.4.1). */
  start(): void {
    if (this.running || this.instances.size > 0) throw new Error('the VRRP speaker starts once');
    const facts = this.options.interfaceFacts ?? interfaceFacts;
    const openLink = this.options.openLink ?? ((ifname: string) => new PcapLink(ifname));
    const virtualMacs = this.options.virtualMacs ?? macvlanLinks;
    for (const c of this.config.instances) {
      const vmac = vmacName(c);
      // With a virtual MAC, the addresses of the instance's interface go on its macvlan (as
      // keepalived's use_vmac); an address with another `dev` stays there.
      const onBase = (dev: string | undefined) => dev === undefined || dev === c.interface;
      const vips: VirtualAddress[] = c.addresses.map((a) => ({
        cidr: a.address,
        ifname: onBase(a.dev) ? (vmac ?? c.interface) : (a.dev as string),
        address: a.address.split('/')[0] as string,
      }));
      for (const ifname of [c.interface, ...vips.map((v) => v.ifname).filter((n) => n !== vmac)]) {
        if (!this.facts.has(ifname)) this.facts.set(ifname, facts(ifname));
      }
      const advertised = vips.map((v) => v.address);
      const primary = this.facts.get(c.interface)?.addresses.find((a) => !advertised.includes(a));
      const source = c.unicastSource ?? primary;
      if (!source) throw new Error(`vrrp instance ${c.name}: interface ${c.interface} has no IPv4 address to send adverts from`);
      let inst: Instance | undefined;
      const router = new VirtualRouter(
        {
          vrid: c.vrid,
          priority: c.priority,
          advertInterval: Math.round(c.advertIntervalSeconds * 100),
          preempt: c.preempt,
          preemptDelay: c.preemptDelaySeconds * 1000,
          primaryAddress: source,
          version: c.version,
        },
        this.clock,
        (action) => this.perform(inst as Instance, action),
      );
      const addresses = new VirtualAddresses(vips, this.options.addresses, this.clock, {
        changed: (change, failures) => this.addressesChanged(inst as Instance, change, failures),
        announce: (v) => this.announce(inst as Instance, v),
      }, { repeat: c.garpRepeat, intervalMs: c.garpIntervalSeconds * 1000 });
      inst = { config: c, router, source, advertised, vips: addresses, advertsSent: 0, advertsReceived: 0, ...(vmac ? { vmac } : {}) };
      this.instances.set(c.name, inst);
      if (vmac) {
        virtualMacs.create(c.interface, vmac, virtualMac(c.vrid));
        this.vmacs.push(vmac);
      }
    }
    for (const g of this.config.syncGroups) {
      const members = new Map(g.instances.map((n) => [n, (this.instances.get(n) as Instance).router]));
      const group = new SyncGroup(g.name, members);
      this.groups.set(g.name, group);
      for (const n of g.instances) (this.instances.get(n) as Instance).group = group;
    }
    for (const ifname of this.facts.keys()) {
      const link = openLink(ifname);
      link.onFrame((frame, at) => this.receive(ifname, frame, at));
      this.links.set(ifname, link);
    }
    this.running = true;
    this.startBfd();
    for (const inst of this.instances.values()) {
      // Addresses left behind by a crashed run would make a backup answer for them (keepalived
      // also removes its VIPs at start); an owner adds them back at once.
      inst.vips.remove();
      if (this.trackedDown(inst)) inst.router.fault(`tracked interface down at start`);
      else if (inst.config.startupDelaySeconds > 0) {
        const waiting = inst;
        this.startupTimers.set(
          waiting,
          this.clock.setTimer(inst.config.startupDelaySeconds * 1000, () => {
            this.startupTimers.delete(waiting);
            waiting.router.startup();
          }),
        );
      } else inst.router.startup();
    }
    if (this.config.instances.length > 0) this.armTracking();
  }

  /** Shut every instance down (a master announces priority 0 and drops its addresses). */
  async stop(): Promise<void> {
    const virtualMacs = this.options.virtualMacs ?? macvlanLinks;
    if (!this.running) {
      for (const link of this.links.values()) link.close(); // a start() that failed half-way
      this.links.clear();
      for (const name of this.vmacs.splice(0)) virtualMacs.remove(name);
      return;
    }
    this.trackTimer?.cancel();
    for (const t of this.startupTimers.values()) t.cancel();
    this.startupTimers.clear();
    for (const t of this.bfdRechecks.values()) t.cancel();
    this.bfdRechecks.clear();
    // BFD's AdminDown goes out at once; removing the GTSM table must not delay the priority-0 adverts.
    const bfdStopped = this.bfd?.stop();
    for (const inst of this.instances.values()) inst.router.shutdown();
    await Promise.all([...[...this.instances.values()].map((i) => i.vips.settled()), bfdStopped]);
    for (const link of this.links.values()) link.close();
    this.links.clear();
    for (const name of this.vmacs.splice(0)) virtualMacs.remove(name);
    this.running = false;
  }

  /** Controlled handover: priority-0 advert and addresses removed, for an instance or a sync group. */
  async release(name: string): Promise<void> {
    const members = this.resolve(name);
    const group = members[0]?.group;
    if (group) group.release();
    else members.forEach((i) => i.router.release());
    await Promise.all(members.map((i) => i.vips.settled()));
  }

  /**
   * Controlled handover: become master now (addresses, gratuitous ARP, adverts). Rejects when
   * an instance cannot be master (in fault, or not started).
   */
  async claim(name: string): Promise<void> {
    const members = this.resolve(name);
    // A claim ends a startup delay: the instance starts now, then becomes master.
    for (const m of members) {
      const timer = this.startupTimers.get(m);
      if (!timer) continue;
      timer.cancel();
      this.startupTimers.delete(m);
      m.router.startup();
    }
    const group = members[0]?.group;
    if (group) group.claim();
    else members.forEach((i) => i.router.claim());
    await Promise.all(members.map((i) => i.vips.settled()));
    const stuck = members.filter((i) => i.router.state !== 'master');
    if (stuck.length > 0) {
      throw new Error(`cannot claim ${name}: ${stuck.map((i) => `${i.config.name} is ${i.router.state}`).join(', ')}`);
    }
  }

  state(): InstanceStatus[] {
    return [...this.instances.values()].map((i) => ({
      name: i.config.name,
      interface: i.config.interface,
      vrid: i.config.vrid,
      version: i.config.version,
      ...(i.vmac ? { virtualMacInterface: i.vmac } : {}),
      state: i.router.state,
      priority: i.router.priority,
      ...(i.group ? { syncGroup: i.group.name } : {}),
      ...(i.router.state === 'backup' && i.router.masterAddress ? { masterAddress: i.router.masterAddress } : {}),
      advertInterval: i.config.advertIntervalSeconds,
      masterAdverInterval: i.router.learnedMasterAdverInterval / 100,
      masterDownInterval: i.router.masterDownInterval,
      addresses: i.vips.list.map((v) => v.cidr),
      accept: i.config.accept,
      advertsSent: i.advertsSent,
      advertsReceived: i.advertsReceived,
      transitions: { ...i.router.transitions },
    }));
  }

  /** BFD's sessions and counters; undefined when no instance uses BFD. */
  bfdStatus(): BfdStatus | undefined {
    return this.bfd?.status();
  }

  counters(): SpeakerCounters {
    return { ...this.totals, badAdverts: { ...this.totals.badAdverts }, transitions: { ...this.totals.transitions } };
  }

  private resolve(name: string): Instance[] {
    const group = this.groups.get(name);
    if (group) return [...group.members.keys()].map((n) => this.instances.get(n) as Instance);
    const inst = this.instances.get(name);
    if (!inst) throw new Error(`no VRRP instance or sync group named '${name}'`);
    return inst.group ? this.resolve(inst.group.name) : [inst];
  }

  /** A frame from a link. Never throws: bad adverts are counted by reason and dropped. */
  private receive(ifname: string, frame: Buffer, capturedAt: number): void {
    if (frame.length >= 14 && frame.readUInt16BE(12) === ETHERTYPE_ARP) {
      const arp = decodeArpFrame(frame);
      if (arp && (arp.operation === ARPOP_REPLY || arp.operation === ARPOP_REQUEST)) {
        this.learn(arp.senderProtocolAddress, arp.senderHardwareAddress);
      }
      return;
    }
    const result = decodeAdvertisementFor(frame, (vrid) => {
      const inst = this.instanceOn(ifname, vrid);
      return inst && { owner: inst.router.priority === OWNER_PRIORITY };
    });
    if (!result.ok) return this.bad(result.reason, ifname);
    const advert = result.advert;
    const inst = this.instanceOn(ifname, advert.vrid) as Instance;
    // A VRID speaks one version (keepalived drops the other one too).
    if (advert.version !== inst.config.version) return this.bad('version', ifname, advert.source);
    // RFC 3768 §7.1: a v2 advert must carry the locally configured Adver Int.
    if (advert.version === 2 && advert.maxAdverInt !== Math.round(inst.config.advertIntervalSeconds * 100)) return this.bad('interval', ifname, advert.source);
    const unicast = inst.config.unicastPeers.length > 0;
    if (unicast && !inst.config.unicastPeers.includes(advert.source)) return this.bad('peer', ifname, advert.source);
    if (advert.destination !== VRRP_MULTICAST_IPV4 && advert.destination !== inst.source) return this.bad('destination', ifname, advert.source);
    if (unicast) this.learn(advert.source, advert.sourceMac);
    if (!addressesMatch(advert.addresses, inst.advertised)) {
      if (this.totals.addressMismatches++ === 0) {
        this.log?.warn({ instance: inst.config.name, from: advert.source, advertised: advert.addresses }, 'advert lists other addresses than ours (RFC 5798 §7.1)');
      }
    }
    if (advert.authType !== undefined && advert.authType !== AUTH_NONE && this.totals.authenticationIgnored++ === 0) {
      // keepalived's auth_type PASS / AH (RFC 2338; removed by RFC 3768): accepted unverified.
      this.log?.warn(
        { instance: inst.config.name, from: advert.source, authType: advert.authType === AUTH_PASS ? 'PASS' : advert.authType === AUTH_AH ? 'AH' : advert.authType },
        'VRRPv2 advert with authentication: accepted without checking it (RFC 3768 removed it); a keepalived peer with `authentication` drops our type-0 adverts, remove the block there',
      );
    }
    inst.advertsReceived++;
    this.totals.advertsReceived++;
    // The capture timestamp (wall clock) on the speaker's clock; bounded, so that a stepped
    // wall clock can at worst shift one timer by one advert interval.
    const late = Math.min(Math.max(0, Date.now() - capturedAt), inst.config.advertIntervalSeconds * 1000);
    const receivedAt = this.clock.now() - late;
    inst.router.receive({ priority: advert.priority, maxAdverInt: advert.maxAdverInt, source: advert.source, receivedAt });
    if (inst.config.bfd) this.bfd?.learn(ifname, advert.source);
  }

  /** Counted always; logged the first time per reason (§7.1 SHOULD log), a flood stays quiet. */
  private bad(reason: BadAdvertReason, ifname: string, from?: string): void {
    const seen = this.totals.badAdverts[reason] ?? 0;
    this.totals.badAdverts[reason] = seen + 1;
    if (seen === 0) this.log?.warn({ interface: ifname, reason, ...(from ? { from } : {}) }, 'advert dropped (RFC 5798 §7.1); further ones with this reason are only counted');
  }

  private instanceOn(ifname: string, vrid: number): Instance | undefined {
    for (const inst of this.instances.values()) {
      if (inst.config.interface === ifname && inst.config.vrid === vrid) return inst;
    }
    return undefined;
  }

  private perform(inst: Instance, action: Action): void {
    switch (action.type) {
      case 'send-advert':
        return this.sendAdvert(inst, action.priority);
      case 'add-addresses':
        return inst.vips.add();
      case 'remove-addresses':
        return inst.vips.remove();
      case 'send-garp':
        return inst.vips.announce();
      case 'transition': {
        const event: TransitionEvent = { instance: inst.config.name, vrid: inst.config.vrid, from: action.from, to: action.to, reason: action.reason, at: wallClock() };
        this.totals.transitions[action.to]++;
        this.log?.info(event, 'transition');
        this.emit('transition', event);
        inst.group?.memberChanged(inst.config.name, action.from, action.to);
      }
    }
  }

  private addressesChanged(inst: Instance, change: 'added' | 'removed', failures: { cidr: string; error: string }[]): void {
    for (const f of failures) {
      this.totals.errors++;
      this.log?.error({ instance: inst.config.name, address: f.cidr, err: f.error }, `address not ${change}`);
    }
    const event: AddressesEvent = { instance: inst.config.name, change, addresses: inst.vips.list.map((v) => v.cidr), at: wallClock() };
    this.emit('addresses', event);
  }

  /**
   * One gratuitous ARP, announcing the MAC the kernel answers ARP for the address with: the
   * interface's own, or with useVmac the virtual MAC (RFC 5798 §8.1.2), sent on the base
   * interface (the macvlan would hand our link its copy of every advert a second time).
   */
  private announce(inst: Instance, v: VirtualAddress): boolean {
    const frame =
      inst.vmac && v.ifname === inst.vmac
        ? gratuitousArp(v.address, virtualMac(inst.config.vrid))
        : gratuitousArp(v.address, this.facts.get(v.ifname)?.mac as string);
    const sent = this.inject(inst.vmac && v.ifname === inst.vmac ? inst.config.interface : v.ifname, frame);
    if (sent) {
      this.totals.garpsSent++;
      const event: GarpEvent = { instance: inst.config.name, address: v.address, interface: v.ifname, at: wallClock() };
      this.emit('garp', event);
    }
    return sent;
  }

  private sendAdvert(inst: Instance, priority: number): void {
    const c = inst.config;
    const advert = { version: c.version, vrid: c.vrid, priority, maxAdverInt: Math.round(c.advertIntervalSeconds * 100), addresses: inst.advertised };
    if (c.unicastPeers.length === 0) {
      if (this.inject(c.interface, encodeAdvertisementFrame(advert, { source: inst.source }))) this.countSent(inst);
      return;
    }
    const ownMac = this.facts.get(c.interface)?.mac as string;
    const now = this.clock.now();
    const ask = (peer: string) =>
      this.inject(c.interface, encodeArpFrame({
        destinationMac: BROADCAST_MAC,
        sourceMac: ownMac,
        operation: ARPOP_REQUEST,
        senderHardwareAddress: ownMac,
        senderProtocolAddress: inst.source,
        targetHardwareAddress: '00:00:00:00:00:00',
        targetProtocolAddress: peer,
      }));
    for (const peer of c.unicastPeers) {
      let known = this.neighbours.get(peer);
      if (known && now - known.at > NEIGHBOUR_FORGET_MS) {
        this.neighbours.delete(peer);
        known = undefined;
      }
      if (!known) {
        this.totals.peersUnresolved++;
        ask(peer);
        continue;
      }
      // Still used while it is re-asked (once a second): an answer keeps it, silence ends it.
      if (now - known.at > NEIGHBOUR_REFRESH_MS && now - known.asked > 1000) {
        known.asked = now;
        ask(peer);
      }
      const peerMac = known.mac;
      // Unicast adverts are ordinary IP unicast between the two routers: the interface's MAC
      // (the virtual one with useVmac, as keepalived sends them from its macvlan).
      const sourceMac = inst.vmac ? virtualMac(c.vrid) : ownMac;
      const frame = encodeAdvertisementFrame(advert, { source: inst.source, destination: peer, sourceMac, destinationMac: peerMac });
      if (this.inject(c.interface, frame)) this.countSent(inst);
    }
  }

  /** A configured unicast peer's MAC, seen now (anything else on the link is not learned). */
  private learn(address: string, mac: string): void {
    if (this.unicastPeers.has(address)) this.neighbours.set(address, { mac, at: this.clock.now(), asked: -Infinity });
  }

  /** How many neighbours the speaker remembers (bounded by the configured unicast peers). */
  neighbourCount(): number {
    return this.neighbours.size;
  }

  private countSent(inst: Instance): void {
    inst.advertsSent++;
    this.totals.advertsSent++;
  }

  private inject(ifname: string, frame: Buffer): boolean {
    const link = this.links.get(ifname);
    if (!link) return false;
    try {
      link.send(frame);
      return true;
    } catch (err) {
      this.totals.errors++;
      this.log?.error({ interface: ifname, err: String(err) }, 'frame not sent');
      return false;
    }
  }

  private startBfd(): void {
    const timers = new Map<string, BfdTimers>();
    for (const inst of this.instances.values()) if (inst.config.bfd) timers.set(inst.config.interface, inst.config.bfd);
    if (timers.size === 0) return;
    const withBfd = [...this.instances.values()].filter((i) => i.config.bfd);
    this.bfd = new BfdPeers({
      transport: (this.options.bfdTransport ?? (() => new UdpBfdTransport(undefined, (what, err) => this.log?.error({ err: err.message }, what))))(),
      clock: this.clock,
      timersOf: (ifname) => timers.get(ifname),
      interfaceOf: (address) =>
        [...timers.keys()].find((ifname) => (this.facts.get(ifname)?.networks ?? []).some((n) => inNetwork(address, n))),
      localOf: (ifname) => withBfd.find((i) => i.config.interface === ifname)?.source,
      changed: (peer, change) => this.bfdChanged(peer, change),
      ...(this.log ? { log: this.log } : {}),
    });
    // Configured unicast peers need no advert to be known.
    this.bfd.start(() => {
      for (const inst of withBfd) for (const peer of inst.config.unicastPeers) this.bfd?.learn(inst.config.interface, peer);
    });
  }

  /**
   * Only a session that was Up and then stopped hearing the peer (Diag 1) says the peer may be
   * dead; a peer that signals Down or AdminDown is alive and talking. RFC 5882 §4.3: a client
   * protocol may use BFD's Down to declare its neighbour down.
   */
  private bfdChanged(peer: BfdPeer, change: BfdStateChange): void {
    if (change.from !== 'Up' || change.to !== 'Down' || change.diag !== BfdDiag.ControlDetectionTimeExpired) return;
    for (const inst of this.instances.values()) {
      if (inst.config.bfd && inst.config.interface === peer.ifname && inst.router.state === 'backup' && inst.router.masterAddress === peer.address) {
        this.bfdSaysDown(inst, peer);
      }
    }
  }

  /**
   * The two-signal rule: BFD's Down alone is not enough (a lost or filtered train of BFD
   * packets would make two masters); the master's adverts must also have stopped. If they
   * still look current, look again when the next one is overdue; a master that is really
   * gone has sent its last advert by then.
   */
  private bfdSaysDown(inst: Instance, peer: BfdPeer): void {
    const router = inst.router;
    const missingAfter = BFD_ADVERTS_MISSING_AFTER * router.learnedMasterAdverInterval * 10;
    const lastAdvertAt = router.lastAdvertAt;
    const age = lastAdvertAt === undefined ? Infinity : this.clock.now() - lastAdvertAt;
    const stillDown = () =>
      router.state === 'backup' && router.masterAddress === peer.address && router.lastAdvertAt === lastAdvertAt && peer.session.state !== 'Up';
    const takeOver = () => {
      const bfd = this.bfd as BfdPeers;
      bfd.counters.takeovers++;
      this.log?.warn(
        { instance: inst.config.name, master: peer.address, interface: peer.ifname, advertAgeMs: Math.round(this.clock.now() - (lastAdvertAt ?? 0)) },
        'master down by BFD (Control Detection Time Expired) and no advert since: taking over',
      );
      router.masterDown('master down (bfd)');
    };
    if (age >= missingAfter) return takeOver();
    this.bfdRechecks.get(inst)?.cancel();
    this.bfdRechecks.set(
      inst,
      this.clock.setTimer(missingAfter - age, () => {
        this.bfdRechecks.delete(inst);
        if (stillDown()) return takeOver();
        if (router.state !== 'backup' || router.lastAdvertAt === lastAdvertAt) return;
        // Adverts still come: the master is alive, only BFD is not getting through.
        (this.bfd as BfdPeers).counters.suppressed++;
        this.log?.warn({ instance: inst.config.name, master: peer.address, interface: peer.ifname }, 'BFD says the master is down but its adverts still arrive: not taking over');
      }),
    );
  }

  /**
   * keepalived tracks an instance's own interface and its track_interface list; in a sync
   * group, those of every member, so that the whole group goes to fault together (a group
   * half master, half fault would hold a VIP without its inside address).
   */
  private trackedDown(inst: Instance): string | undefined {
    const isUp = this.options.linkIsUp ?? linkIsUp;
    const members = inst.group ? [...inst.group.members.keys()].map((n) => this.instances.get(n) as Instance) : [inst];
    return members.flatMap((m) => [m.config.interface, ...m.config.trackInterfaces]).find((ifname) => !isUp(ifname));
  }

  private armTracking(): void {
    this.trackTimer = this.clock.setTimer(this.options.trackIntervalMs ?? 100, () => {
      for (const inst of this.instances.values()) {
        const down = this.trackedDown(inst);
        if (down && inst.router.state !== 'fault') inst.router.fault(`${down} down`);
        else if (!down && inst.router.state === 'fault') inst.router.recover('tracked interfaces up');
      }
      this.armTracking();
    });
  }
}
