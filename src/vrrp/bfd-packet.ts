/**
 * The BFD Control packet (RFC 5880 §4.1), mandatory section only: 24 bytes, no
 * authentication. Pure functions on Buffers; decoding never throws: a packet that fails the
 * reception checks of §6.8.6 yields the reason it was discarded, for the receive path to count.
 *
 *   0: Vers (3 bits) | Diag (5)        1: Sta (2) | P | F | C | A | D | M
 *   2: Detect Mult                     3: Length
 *   4: My Discriminator                8: Your Discriminator
 *  12: Desired Min TX Interval        16: Required Min RX Interval
 *  20: Required Min Echo RX Interval  (intervals in microseconds)
 */

/** §4.1 Vers: the protocol version this codec speaks. */
export const BFD_VERSION = 1;
/** Length of the mandatory section; an authentication section would follow it. */
export const BFD_CONTROL_LENGTH = 24;
/** RFC 5881 §4: single-hop BFD Control packets go to this UDP port. */
export const BFD_CONTROL_PORT = 3784;
/** RFC 5881 §4: the source port range of a single-hop session. */
export const BFD_SOURCE_PORT_MIN = 49152;
export const BFD_SOURCE_PORT_MAX = 65535;
/** RFC 5881 §5: sent with TTL 255 and, without authentication, accepted only with TTL 255 (GTSM, RFC 5082). */
export const BFD_TTL = 255;

/** §4.1 Sta: the session state values. */
export type BfdState = 'AdminDown' | 'Down' | 'Init' | 'Up';
const STATES: readonly BfdState[] = ['AdminDown', 'Down', 'Init', 'Up'];

/** §4.1 Diag codes. */
export const BfdDiag = {
  NoDiagnostic: 0,
  ControlDetectionTimeExpired: 1,
  EchoFunctionFailed: 2,
  NeighborSignaledSessionDown: 3,
  ForwardingPlaneReset: 4,
  PathDown: 5,
  ConcatenatedPathDown: 6,
  AdministrativelyDown: 7,
  ReverseConcatenatedPathDown: 8,
} as const;

export interface BfdControlPacket {
  /** Diag, 0..31. */
  diag: number;
  state: BfdState;
  /** P: Poll. */
  poll: boolean;
  /** F: Final. */
  final: boolean;
  /** C: Control Plane Independent. */
  controlPlaneIndependent: boolean;
  /** D: Demand. */
  demand: boolean;
  /** Detect Mult, 1..255. */
  detectMult: number;
  myDiscriminator: number;
  yourDiscriminator: number;
  /** Desired Min TX Interval, µs. */
  desiredMinTxInterval: number;
  /** Required Min RX Interval, µs. */
  requiredMinRxInterval: number;
  /** Required Min Echo RX Interval, µs (0: this system does not take Echo packets). */
  requiredMinEchoRxInterval: number;
}

/** Why a received packet was discarded (§6.8.6's checks, in their order). */
export type BadBfdReason =
  | 'short'
  | 'version'
  | 'length'
  | 'detect-mult'
  | 'multipoint'
  | 'my-discriminator'
  | 'your-discriminator'
  | 'authentication';

export type BfdDecodeResult = { ok: true; packet: BfdControlPacket } | { ok: false; reason: BadBfdReason };

/** Encodes the mandatory section; the A and M bits are always 0 (no authentication, RFC 5880 §4.1 M MUST be 0). */
export function encodeBfdControl(p: BfdControlPacket): Buffer {
  const b = Buffer.alloc(BFD_CONTROL_LENGTH);
  b[0] = (BFD_VERSION << 5) | (p.diag & 0x1f);
  b[1] =
    (STATES.indexOf(p.state) << 6) |
    (p.poll ? 0x20 : 0) |
    (p.final ? 0x10 : 0) |
    (p.controlPlaneIndependent ? 0x08 : 0) |
    (p.demand ? 0x02 : 0);
  b[2] = p.detectMult;
  b[3] = BFD_CONTROL_LENGTH;
  b.writeUInt32BE(p.myDiscriminator >>> 0, 4);
  b.writeUInt32BE(p.yourDiscriminator >>> 0, 8);
  b.writeUInt32BE(p.desiredMinTxInterval >>> 0, 12);
  b.writeUInt32BE(p.requiredMinRxInterval >>> 0, 16);
  b.writeUInt32BE(p.requiredMinEchoRxInterval >>> 0, 20);
  return b;
}

/**
 * Decodes and checks a UDP payload as §6.8.6 says a receiver must, except the checks that
 * need the sessions (a nonzero Your Discriminator that names none): those are the caller's.
 * We use no authentication, so a packet with the A bit is discarded (§6.8.6: "If the A bit
 * is set and no authentication is in use").
 */
export function decodeBfdControl(payload: Buffer): BfdDecodeResult {
  if (payload.length < BFD_CONTROL_LENGTH) return { ok: false, reason: 'short' };
  if (payload[0]! >> 5 !== BFD_VERSION) return { ok: false, reason: 'version' };
  const flags = payload[1]!;
  const authenticated = (flags & 0x04) !== 0;
  const length = payload[3]!;
  // §6.8.6: at least 24 (26 with an authentication section), and not beyond the payload.
  if (length < (authenticated ? BFD_CONTROL_LENGTH + 2 : BFD_CONTROL_LENGTH) || length > payload.length) {
    return { ok: false, reason: 'length' };
  }
  const detectMult = payload[2]!;
  if (detectMult === 0) return { ok: false, reason: 'detect-mult' };
  if (flags & 0x01) return { ok: false, reason: 'multipoint' };
  const myDiscriminator = payload.readUInt32BE(4);
  if (myDiscriminator === 0) return { ok: false, reason: 'my-discriminator' };
  const yourDiscriminator = payload.readUInt32BE(8);
  const state = STATES[flags >> 6] as BfdState;
  if (yourDiscriminator === 0 && state !== 'Down' && state !== 'AdminDown') return { ok: false, reason: 'your-discriminator' };
  if (authenticated) return { ok: false, reason: 'authentication' };
  return {
    ok: true,
    packet: {
      diag: payload[0]! & 0x1f,
      state,
      poll: (flags & 0x20) !== 0,
      final: (flags & 0x10) !== 0,
      controlPlaneIndependent: (flags & 0x08) !== 0,
      demand: (flags & 0x02) !== 0,
      detectMult,
      myDiscriminator,
      yourDiscriminator,
      desiredMinTxInterval: payload.readUInt32BE(12),
      requiredMinRxInterval: payload.readUInt32BE(16),
      requiredMinEchoRxInterval: payload.readUInt32BE(20),
    },
  };
}
