/**
 * One BFD session in asynchronous mode (RFC 5880 §6.2, §6.8): the three-way handshake
 * Down → Init → Up, the Detection Time, slow transmission (≥ 1 s) while not Up (§6.8.3), the
 * Poll/Final sequence when our transmit interval changes (§6.5), and transmit jitter
 * (§6.8.7). Plain code: the clock, the random source and `send` are injected; the state
 * variables keep the RFC's bfd.* names. Demand mode and the Echo function are not offered
 * (we send D = 0 and Required Min Echo RX Interval = 0); authentication is not used.
 */
import { BfdDiag, type BfdControlPacket, type BfdState } from './bfd-packet.js';
import type { Clock, TimerHandle } from './state-machine.js';

/** The timers an operator configures, in milliseconds (the wire carries microseconds). */
export interface BfdTimers {
  /** bfd.DesiredMinTxInterval once Up. */
  minTxMs: number;
  /** bfd.RequiredMinRxInterval. */
  minRxMs: number;
  /** bfd.DetectMult. */
  multiplier: number;
}

export interface BfdSessionParams extends BfdTimers {
  /** bfd.LocalDiscr: nonzero, unique among this system's sessions. */
  localDiscriminator: number;
  /** §6.1 Passive role: send nothing until the remote system has been heard. */
  passive?: boolean;
  /** Uniform in [0, 1): the transmit jitter. */
  random?: () => number;
}

export interface BfdStateChange {
  from: BfdState;
  to: BfdState;
  /** bfd.LocalDiag after the change: why the session went down. */
  diag: number;
}

export interface BfdSessionStatus {
  state: BfdState;
  remoteState: BfdState;
  localDiscriminator: number;
  remoteDiscriminator: number;
  /** bfd.LocalDiag. */
  diag: number;
  /** Transmit interval in use (before jitter), ms. */
  txIntervalMs: number;
  /** Detection Time in use, ms (0 until the remote system has been heard). */
  detectionTimeMs: number;
  pollActive: boolean;
  packetsSent: number;
  packetsReceived: number;
  /** Times the session came Up, and went Down from Up. */
  ups: number;
  downs: number;
}

/** §6.8.3: while not Up, bfd.DesiredMinTxInterval is at least one second. */
const SLOW_TX_US = 1_000_000;

export class BfdSession {
  // RFC 5880 §6.8.1 state variables (intervals in microseconds, as on the wire).
  private sessionState: BfdState = 'Down';
  private remoteSessionState: BfdState = 'Down';
  private remoteDiscr = 0;
  private localDiag: number = BfdDiag.NoDiagnostic;
  private desiredMinTxInterval = SLOW_TX_US;
  private readonly requiredMinRxInterval: number;
  /** §6.8.1: initialised to 1 µs, "to allow the first packet to be sent". */
  private remoteMinRxInterval = 1;
  /** From the last packet received: what the Detection Time is computed from (§6.8.4). */
  private remoteDetectMult = 0;
  private remoteDesiredMinTx = 0;
  private pollActive = false;

  private txTimer: TimerHandle | undefined;
  private txDue = 0;
  private lastSentAt: number | undefined;
  private detectTimer: TimerHandle | undefined;
  private running = false;
  private readonly random: () => number;
  private counts = { packetsSent: 0, packetsReceived: 0, ups: 0, downs: 0 };

  constructor(
    readonly params: BfdSessionParams,
    private readonly clock: Clock,
    private readonly send: (packet: BfdControlPacket) => void,
    private readonly changed: (change: BfdStateChange) => void = () => undefined,
  ) {
    if (params.localDiscriminator === 0) throw new Error('BFD: bfd.LocalDiscr must be nonzero (RFC 5880 §6.8.1)');
    this.requiredMinRxInterval = Math.round(params.minRxMs * 1000);
    this.random = params.random ?? Math.random;
  }

  get state(): BfdState {
    return this.sessionState;
  }

  /** Starts transmitting (an Active session) from Down. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.sessionState = 'Down';
    this.scheduleTx();
  }

  /**
   * Stop: tell the remote system (AdminDown, Diag 7, §6.8.16) so that it does not read our
   * silence as a failure, then go quiet.
   */
  stop(): void {
    if (!this.running) return;
    const from = this.sessionState;
    this.sessionState = 'AdminDown';
    this.localDiag = BfdDiag.AdministrativelyDown;
    if (this.remoteDiscr !== 0 || !this.params.passive) this.transmit(false);
    this.running = false;
    this.txTimer?.cancel();
    this.detectTimer?.cancel();
    this.txTimer = this.detectTimer = undefined;
    if (from !== 'AdminDown') this.changed({ from, to: 'AdminDown', diag: this.localDiag });
  }

  /** A packet that passed decodeBfdControl's checks and was demultiplexed to this session (§6.8.6). */
  receive(p: BfdControlPacket): void {
    if (!this.running) return;
    // §6.8.6: a nonzero Your Discriminator that is not ours means the packet is not for us.
    if (p.yourDiscriminator !== 0 && p.yourDiscriminator !== this.params.localDiscriminator) return;
    this.counts.packetsReceived++;
    const unheard = this.remoteDiscr === 0;
    this.remoteDiscr = p.myDiscriminator;
    this.remoteSessionState = p.state;
    const remoteMinRxBefore = this.remoteMinRxInterval;
    this.remoteMinRxInterval = p.requiredMinRxInterval;
    this.remoteDetectMult = p.detectMult;
    this.remoteDesiredMinTx = p.desiredMinTxInterval;
    if (p.final) this.pollActive = false;
    this.armDetection();
    if (this.sessionState === 'AdminDown') return;

    if (p.state === 'AdminDown') {
      if (this.sessionState !== 'Down') this.enter('Down', BfdDiag.NeighborSignaledSessionDown);
    } else if (this.sessionState === 'Down') {
      if (p.state === 'Down') this.enter('Init', this.localDiag);
      else if (p.state === 'Init') this.enter('Up', BfdDiag.NoDiagnostic);
    } else if (this.sessionState === 'Init') {
      if (p.state === 'Init' || p.state === 'Up') this.enter('Up', BfdDiag.NoDiagnostic);
    } else if (p.state === 'Down') {
      this.enter('Down', BfdDiag.NeighborSignaledSessionDown);
    }

    // §6.8.7: a Poll is answered with a Final at once, whatever the transmit timer says.
    if (p.poll) this.transmit(true);
    // A remote system that now accepts packets faster may have shortened our interval; a
    // Passive system heard from for the first time starts sending.
    else if (this.remoteMinRxInterval < remoteMinRxBefore || unheard) this.scheduleTx();
  }

  status(): BfdSessionStatus {
    return {
      state: this.sessionState,
      remoteState: this.remoteSessionState,
      localDiscriminator: this.params.localDiscriminator,
      remoteDiscriminator: this.remoteDiscr,
      diag: this.localDiag,
      txIntervalMs: this.txInterval() / 1000,
      detectionTimeMs: this.detectionTime() / 1000,
      pollActive: this.pollActive,
      ...this.counts,
    };
  }

  /** §6.8.7: the larger of bfd.DesiredMinTxInterval and bfd.RemoteMinRxInterval. */
  private txInterval(): number {
    return Math.max(this.desiredMinTxInterval, this.remoteMinRxInterval);
  }

  /** §6.8.4 (asynchronous mode): remote Detect Mult × max(bfd.RequiredMinRxInterval, remote Desired Min TX). */
  private detectionTime(): number {
    if (this.remoteDetectMult === 0) return 0;
    return this.remoteDetectMult * Math.max(this.requiredMinRxInterval, this.remoteDesiredMinTx);
  }

  private enter(to: BfdState, diag: number): void {
    const from = this.sessionState;
    this.sessionState = to;
    this.localDiag = diag;
    if (to === 'Up') this.counts.ups++;
    if (from === 'Up' && to !== 'Up') this.counts.downs++;
    // §6.8.3: fast only while Up; every change of bfd.DesiredMinTxInterval starts a Poll
    // Sequence, so the remote system learns it and adjusts its Detection Time (§6.5). The
    // interval only ever grows when leaving Up, so no slower packet is owed to a remote
    // system that still times us at the fast rate (§6.8.3's rule for increases while Up).
    const desired = to === 'Up' ? Math.round(this.params.minTxMs * 1000) : Math.max(SLOW_TX_US, Math.round(this.params.minTxMs * 1000));
    if (desired !== this.desiredMinTxInterval) {
      this.desiredMinTxInterval = desired;
      this.pollActive = true;
    }
    this.scheduleTx();
    this.changed({ from, to, diag });
  }

  private armDetection(): void {
    this.detectTimer?.cancel();
    const ms = this.detectionTime() / 1000;
    this.detectTimer = this.clock.setTimer(ms, () => {
      this.detectTimer = undefined;
      // §6.8.1: a Detection Time without a valid packet forgets the remote discriminator.
      this.remoteDiscr = 0;
      if (this.sessionState === 'Init' || this.sessionState === 'Up') this.enter('Down', BfdDiag.ControlDetectionTimeExpired);
    });
  }

  /**
   * Arms the periodic transmission: the interval less 0–25 % jitter (at most 90 % with a
   * Detect Mult of 1), §6.8.7. Re-arming never brings a packet closer to the previous one
   * than the (new) interval allows.
   */
  private scheduleTx(): void {
    if (!this.running) return;
    // A Passive system that has not heard the remote (or no longer knows it: its detection
    // time ran out) sends nothing: no timer, until receive() hears the remote again.
    if (this.params.passive && this.remoteDiscr === 0) {
      this.txTimer?.cancel();
      this.txTimer = undefined;
      return;
    }
    const factor = this.params.multiplier === 1 ? 0.75 + 0.15 * this.random() : 0.75 + 0.25 * this.random();
    const now = this.clock.now();
    const due = (this.lastSentAt ?? now) + (this.txInterval() / 1000) * factor;
    if (this.txTimer && this.txDue <= due) return;
    this.txTimer?.cancel();
    this.txDue = Math.max(now, due);
    this.txTimer = this.clock.setTimer(this.txDue - now, () => {
      this.txTimer = undefined;
      this.transmit(false);
      this.scheduleTx();
    });
  }

  private transmit(final: boolean): void {
    // §6.8.7: a Passive system waits to be heard from; nobody is sent to while the remote
    // system asks for no packets at all (Required Min RX 0).
    if (this.params.passive && this.remoteDiscr === 0) return;
    if (this.remoteMinRxInterval === 0 && !final) return;
    this.counts.packetsSent++;
    if (!final) this.lastSentAt = this.clock.now();
    this.send({
      diag: this.localDiag,
      state: this.sessionState,
      // §6.8.7: never P and F together; the Poll rides on the next periodic packet.
      poll: this.pollActive && !final,
      final,
      controlPlaneIndependent: false,
      demand: false,
      detectMult: this.params.multiplier,
      myDiscriminator: this.params.localDiscriminator,
      yourDiscriminator: this.remoteDiscr,
      desiredMinTxInterval: this.desiredMinTxInterval,
      requiredMinRxInterval: this.requiredMinRxInterval,
      requiredMinEchoRxInterval: 0,
    });
  }
}
