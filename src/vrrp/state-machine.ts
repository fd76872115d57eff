/**
 * One virtual router's protocol state (RFC 5798 §6): Initialize, Backup, Master, plus Fault
 * for a tracked interface that is down (keepalived's FAULT). Plain code: the clock and the
 * timers are injected, and the machine outputs actions (send an advert, add or remove the
 * addresses, send gratuitous ARPs) for the speaker to carry out. Times are in milliseconds
 * internally; the advert interval is kept in centiseconds as on the wire (§5.2.7).
 */
import { ipv4ToNumber } from '../packet/ipv4.js';

export type VrrpState = 'initialize' | 'backup' | 'master' | 'fault';

export interface TimerHandle {
  cancel(): void;
}

/** The clock and one-shot timers: real ones in the speaker, a fake one in tests. */
export interface Clock {
  now(): number;
  setTimer(ms: number, fire: () => void): TimerHandle;
}

export type Action =
  | { type: 'send-advert'; priority: number }
  | { type: 'add-addresses' }
  | { type: 'remove-addresses' }
  | { type: 'send-garp' }
  | { type: 'transition'; from: VrrpState; to: VrrpState; reason: string };

export interface VirtualRouterParams {
  vrid: number;
  /** 1..255; 255 is the address owner (§5.2.4). */
  priority: number;
  /** Advertisement_Interval, centiseconds (1..4095). */
  advertInterval: number;
  preempt: boolean;
  /** keepalived's preempt_delay: how long a lower-priority master is tolerated, ms. */
  preemptDelay: number;
  /** This router's primary IPv4 address on the interface (the advert's source). */
  primaryAddress: string;
  /**
   * 2: RFC 3768's timers (Skew_Time in seconds, whatever the interval; no interval learned
   * from the master, whose adverts must carry ours). 3 when absent.
   */
  version?: 2 | 3;
}

/** The fields of a received (already §7.1-checked) advertisement that §6.4 uses. */
export interface AdvertSeen {
  priority: number;
  /** Max Adver Int, centiseconds. */
  maxAdverInt: number;
  source: string;
  /** When it arrived (clock time), if known better than "now": the capture timestamp. */
  receivedAt?: number;
}

export const OWNER_PRIORITY = 255;
export const RELEASE_PRIORITY = 0;
/**
 * The priority a router runs at from release() until claim(): the lowest a master may send
 * (§5.2.4), so a router that becomes Master again after handing its addresses over (a
 * Master_Down_Timer or BFD firing while the new master's process was slow) loses the split
 * brain to the appliance it handed over to, instead of winning it on its configured priority.
 */
export const YIELDED_PRIORITY = 1;

export class VirtualRouter {
  private current: VrrpState = 'initialize';
  /** Master_Adver_Interval, centiseconds: learned from the master's adverts in Backup. */
  private masterAdverInterval: number;
  private masterDownTimer: TimerHandle | undefined;
  private adverTimer: TimerHandle | undefined;
  /** When the current run of lower-priority adverts began (preempt_delay). */
  private lowerPrioritySince: number | undefined;
  /** After release(): stay Backup under any master until claim() or the master goes silent. */
  private released = false;
  /** After release(), until claim(): run at YIELDED_PRIORITY, even as Master again. */
  private yielded = false;
  /** When gratuitous ARPs last answered a lower-priority master (rate limit). */
  private lowerMasterGarpAt: number | undefined;
  /** The answer's repetitions (see reassertAddresses). */
  private reassertTimers: TimerHandle[] = [];
  readonly transitions: Record<VrrpState, number> = { initialize: 0, backup: 0, master: 0, fault: 0 };
  /** Who the last accepted advert came from, while Backup. */
  masterAddress: string | undefined;
  /** When that advert arrived (clock time): BFD's second signal that the master is gone. */
  lastAdvertAt: number | undefined;

  constructor(
    readonly params: VirtualRouterParams,
    private readonly clock: Clock,
    private readonly output: (action: Action) => void,
  ) {
    this.masterAdverInterval = params.advertInterval;
  }

  get state(): VrrpState {
    return this.current;
  }

  get priority(): number {
    return this.yielded ? YIELDED_PRIORITY : this.params.priority;
  }

  /** Whether this router handed its addresses over and has not claimed them back since. */
  get hasYielded(): boolean {
    return this.yielded;
  }

  /**
   * Skew_Time, ms. RFC 5798 §6.1: ((256 − Priority) × Master_Adver_Interval) / 256;
   * RFC 3768 §6.1 (VRRPv2): (256 − Priority) / 256 seconds.
   */
  get skewTime(): number {
    const scale = this.params.version === 2 ? 100 : this.masterAdverInterval;
    return (((256 - this.priority) * scale) / 256) * 10;
  }

  /** Master_Down_Interval, ms (§6.1): 3 × Master_Adver_Interval (v2: Advertisement_Interval) + Skew_Time. */
  get masterDownInterval(): number {
    return 3 * this.masterAdverInterval * 10 + this.skewTime;
  }

  get learnedMasterAdverInterval(): number {
    return this.masterAdverInterval;
  }

  /** §6.4.1: the Startup event. */
  startup(): void {
    if (this.current !== 'initialize') return;
    if (this.priority === OWNER_PRIORITY) {
      this.enterMaster('startup as address owner');
    } else {
      this.masterAdverInterval = this.params.advertInterval;
      this.enterBackup('startup');
    }
  }

  /** §6.4.2/§6.4.3: the Shutdown event; a Master announces priority 0 on its way out. */
  shutdown(): void {
    if (this.current === 'master') {
      this.cancelTimers();
      this.output({ type: 'send-advert', priority: RELEASE_PRIORITY });
      this.output({ type: 'remove-addresses' });
    }
    this.cancelTimers();
    this.setState('initialize', 'shutdown');
  }

  /** An advert that passed §7.1, for this VRID. */
  receive(advert: AdvertSeen): void {
    if (this.current === 'backup') this.receiveInBackup(advert);
    else if (this.current === 'master') this.receiveInMaster(advert);
  }

  /**
   * Controlled handover: announce priority 0 so the backup takes over after Skew_Time (§6.4.2),
   * drop the addresses, and stay Backup under the new master, even one of lower priority,
   * until claim() (or until that master goes silent: failover still works).
   */
  release(): void {
    this.released = true;
    this.yielded = true;
    if (this.current === 'master') {
      this.cancelTimers();
      this.output({ type: 'send-advert', priority: RELEASE_PRIORITY });
      this.masterAdverInterval = this.params.advertInterval;
      this.enterBackup('released');
    }
  }

  /** Controlled handover: become Master now, whatever the priorities (the other side released). */
  claim(): void {
    this.released = false;
    this.yielded = false;
    if (this.current === 'backup') this.enterMaster('claimed');
  }

  /** Interface tracking: a tracked link went down (→ Fault) or came back (→ Startup). */
  fault(reason: string): void {
    if (this.current === 'fault') return;
    if (this.current === 'master') this.output({ type: 'remove-addresses' });
    this.cancelTimers();
    this.setState('fault', reason);
  }

  recover(reason: string): void {
    if (this.current !== 'fault') return;
    this.setState('initialize', reason);
    this.startup();
  }

  /**
   * Another detector (BFD) established that the master is gone: act as if Master_Down_Timer
   * had fired (§6.4.2), only sooner.
   */
  masterDown(reason: string): void {
    if (this.current === 'backup') this.enterMaster(reason);
  }

  /** Sync groups move members together: another member became Master. */
  followMaster(reason: string): void {
    if (this.current === 'backup') this.enterMaster(reason);
  }

  /** Sync groups: another member left Master for Backup. */
  followBackup(reason: string): void {
    if (this.current === 'master') {
      this.cancelTimers();
      this.enterBackup(reason);
    }
  }

  private receiveInBackup(advert: AdvertSeen): void {
    // Timers run from the advert's arrival, not from when this code got to it.
    const late = Math.max(0, this.clock.now() - (advert.receivedAt ?? this.clock.now()));
    if (advert.priority === RELEASE_PRIORITY) {
      // §6.4.2: the master is leaving; take over after Skew_Time.
      this.armMasterDown(this.skewTime - late);
      return;
    }
    const lower = advert.priority < this.priority;
    if (!lower || !this.params.preempt || this.released || this.withinPreemptDelay()) {
      if (!lower) this.lowerPrioritySince = undefined;
      this.masterAdverInterval = advert.maxAdverInt;
      this.masterAddress = advert.source;
      this.lastAdvertAt = this.clock.now() - late;
      this.armMasterDown(this.masterDownInterval - late);
    }
    // Otherwise discard: Master_Down_Timer fires and this router preempts (§6.4.2).
  }

  private withinPreemptDelay(): boolean {
    if (this.params.preemptDelay <= 0) return false;
    const now = this.clock.now();
    this.lowerPrioritySince ??= now;
    return now - this.lowerPrioritySince < this.params.preemptDelay;
  }

  private receiveInMaster(advert: AdvertSeen): void {
    if (advert.priority === RELEASE_PRIORITY) {
      // §6.4.3: another master is leaving; assert ourselves at once.
      this.output({ type: 'send-advert', priority: this.priority });
      this.armAdverTimer();
      return;
    }
    const higher =
      advert.priority > this.priority ||
      (advert.priority === this.priority && ipv4ToNumber(advert.source) > ipv4ToNumber(this.params.primaryAddress));
    if (!higher) {
      this.reassertAddresses();
      return;
    }
    this.cancelTimers();
    this.masterAdverInterval = advert.maxAdverInt;
    this.masterAddress = advert.source;
    this.lastAdvertAt = advert.receivedAt ?? this.clock.now();
    this.output({ type: 'remove-addresses' });
    this.setState('backup', `higher priority master ${advert.source} (${advert.priority})`);
    this.armMasterDown(this.masterDownInterval);
  }

  /**
   * Another router is Master too, at a lower priority (a split brain it loses): its gratuitous
   * ARPs may have drawn the traffic away, so announce the addresses again, at most once per
   * Master_Down_Interval (keepalived's garp_lower_prio_repeat does the same). Its ARPs follow
   * its first advert (it adds its addresses in between) and it falls silent as soon as it hears
   * ours, so an answer to that advert alone can reach the network before them and lose: the
   * answer is repeated one Master_Adver_Interval and one Master_Down_Interval later. Without
   * the repetition the lab's router kept the loser's MAC after a BFD false positive under
   * load, and the loser, a standby, held the VIP's packets until every connection timed out.
   */
  private reassertAddresses(): void {
    const now = this.clock.now();
    if (this.lowerMasterGarpAt !== undefined && now - this.lowerMasterGarpAt < this.masterDownInterval) return;
    this.lowerMasterGarpAt = now;
    this.output({ type: 'send-garp' });
    for (const t of this.reassertTimers) t.cancel();
    this.reassertTimers = [this.masterAdverInterval * 10, this.masterDownInterval].map((ms) =>
      this.clock.setTimer(ms, () => {
        if (this.current === 'master') this.output({ type: 'send-garp' });
      }),
    );
  }

  private enterMaster(reason: string): void {
    this.cancelTimers();
    this.masterAddress = undefined;
    this.lastAdvertAt = undefined;
    this.lowerPrioritySince = undefined;
    this.released = false;
    this.setState('master', reason);
    this.output({ type: 'send-advert', priority: this.priority });
    this.output({ type: 'add-addresses' });
    this.output({ type: 'send-garp' });
    this.armAdverTimer();
  }

  private enterBackup(reason: string): void {
    const wasMaster = this.current === 'master';
    this.lowerPrioritySince = undefined;
    if (wasMaster) this.output({ type: 'remove-addresses' });
    this.setState('backup', reason);
    this.armMasterDown(this.masterDownInterval);
  }

  private armMasterDown(ms: number): void {
    this.masterDownTimer?.cancel();
    this.masterDownTimer = this.clock.setTimer(Math.max(0, ms), () => {
      this.masterDownTimer = undefined;
      if (this.current === 'backup') this.enterMaster('master down');
    });
  }

  private armAdverTimer(): void {
    this.adverTimer?.cancel();
    this.adverTimer = this.clock.setTimer(this.params.advertInterval * 10, () => {
      this.adverTimer = undefined;
      if (this.current !== 'master') return;
      this.output({ type: 'send-advert', priority: this.priority });
      this.armAdverTimer();
    });
  }

  private cancelTimers(): void {
    this.masterDownTimer?.cancel();
    this.masterDownTimer = undefined;
    this.adverTimer?.cancel();
    this.adverTimer = undefined;
    for (const t of this.reassertTimers) t.cancel();
    this.reassertTimers = [];
  }

  private setState(to: VrrpState, reason: string): void {
    const from = this.current;
    if (from === to) return;
    this.current = to;
    this.transitions[to]++;
    this.output({ type: 'transition', from, to, reason });
  }
}
