/**
 * NETLINK_SOCK_DIAG for TCP over IPv4 (linux/sock_diag.h, linux/inet_diag.h, linux/tcp.h): the
 * server's own socket table, which the keeper reads to rebuild access-table entries when it has
 * no copy (the patent's variant 1). Pure codec first, then one small I/O class.
 *
 * Request: nlmsghdr (SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP) + struct inet_diag_req_v2
 * (56 bytes) + optionally INET_DIAG_REQ_BYTECODE, a filter program the kernel runs on every
 * socket, so a server with many sockets only reports those on the VIP's ports.
 * Answer: one SOCK_DIAG_BY_FAMILY message per socket, struct inet_diag_msg (72 bytes) and
 * attributes (INET_DIAG_INFO: struct tcp_info, when idiag_ext asked for it), then NLMSG_DONE.
 * Ports and addresses inside inet_diag_sockid are big-endian; the other integers host order.
 */
import { endianness } from 'node:os';
import { AF_INET, IPPROTO_TCP } from './ctnetlink.js';
import { bytesToIpv4, ipv4ToBytes } from '../packet/ipv4.js';
import {
  AttributeWriter,
  NETLINK_SOCK_DIAG,
  NLMSG_HDRLEN,
  NLM_F_DUMP,
  NLM_F_REQUEST,
  NetlinkParseError,
  encodeMessage,
  parseAttributes,
  type NetlinkMessage,
} from './message.js';
import { NetlinkSocket, type SocketOptions } from './socket.js';

// linux/sock_diag.h
export const SOCK_DIAG_BY_FAMILY = 20;

// linux/inet_diag.h
export const INET_DIAG_REQ_BYTECODE = 1;
export const INET_DIAG_MEMINFO = 1;
export const INET_DIAG_INFO = 2;
export const INET_DIAG_CONG = 4;
export const INET_DIAG_MARK = 15;
/** idiag_ext bit asking for an extension: 1 << (INET_DIAG_x - 1). */
export const inetDiagExt = (attr: number): number => 1 << (attr - 1);

// enum of struct inet_diag_bc_op.code
export const INET_DIAG_BC_NOP = 0;
export const INET_DIAG_BC_JMP = 1;
export const INET_DIAG_BC_S_EQ = 11;
export const INET_DIAG_BC_D_EQ = 12;

export const INET_DIAG_SOCKID_LEN = 48;
export const INET_DIAG_REQ_V2_LEN = 8 + INET_DIAG_SOCKID_LEN;
export const INET_DIAG_MSG_LEN = 4 + INET_DIAG_SOCKID_LEN + 20;
/** The cookie of "no socket in particular": INET_DIAG_NOCOOKIE (~0U) in both words. */
const INET_DIAG_NOCOOKIE = 'ffffffffffffffff';

// include/net/tcp_states.h
export const TCP_ESTABLISHED = 1;
export const TCP_SYN_SENT = 2;
export const TCP_SYN_RECV = 3;
export const TCP_FIN_WAIT1 = 4;
export const TCP_FIN_WAIT2 = 5;
export const TCP_TIME_WAIT = 6;
export const TCP_CLOSE = 7;
export const TCP_CLOSE_WAIT = 8;
export const TCP_LAST_ACK = 9;
export const TCP_LISTEN = 10;
export const TCP_CLOSING = 11;
export const TCP_NEW_SYN_RECV = 12;
/** idiag_states bit of a state. */
export const tcpStateBit = (state: number): number => 1 << state;

// linux/tcp.h: tcpi_options
export const TCPI_OPT_TIMESTAMPS = 1;
export const TCPI_OPT_SACK = 2;
export const TCPI_OPT_WSCALE = 4;
export const TCPI_OPT_ECN = 8;

/** The head of struct tcp_info that a rebuild can use. */
export interface TcpInfo {
  state: number;
  /** TCPI_OPT_* negotiated on the connection. */
  options: number;
  /** The peer's window scale (tcpi_snd_wscale: it scales the windows the peer announces). */
  sndWscale: number;
  /** Our window scale (tcpi_rcv_wscale). */
  rcvWscale: number;
  /** Smoothed round-trip time, microseconds. */
  rttUs: number;
}

/** One socket of a dump: struct inet_diag_msg, IPv4. */
export interface DiagSocket {
  family: number;
  state: number;
  timer: number;
  retrans: number;
  /** Local end: the server. */
  src: string;
  sport: number;
  /** Remote end: the peer (the client in dnat). */
  dst: string;
  dport: number;
  interface: number;
  /** The kernel's socket cookie, 64 bits as hex. */
  cookie: string;
  expires: number;
  rqueue: number;
  wqueue: number;
  uid: number;
  inode: number;
  tcpInfo?: TcpInfo;
  mark?: number;
}

export interface InetDiagRequest {
  family: number;
  protocol: number;
  /** idiag_ext: which extensions to report (inetDiagExt(INET_DIAG_INFO)...). */
  ext: number;
  /** idiag_states: bit mask of TCP states (tcpStateBit(TCP_ESTABLISHED)...). */
  states: number;
  /** Only sockets whose local port is one of these (kernel bytecode filter). Empty or absent: all. */
  localPorts?: number[];
}

/**
 * The filter program "local port is p1 or p2 or ...". An op is { code u8, yes u8, no u16 }:
 * the kernel goes `yes` bytes on when the test holds, `no` bytes on when it does not, and
 * accepts the socket if it lands exactly on the end. Its audit follows the `yes` chain, so an
 * "or" is written as iproute2's ss writes it: test (yes → next op, no → over the jump), then a
 * jump to the end that only a passed test reaches.
 */
export function localPortsBytecode(ports: number[]): Buffer {
  const TEST = 8; // S_EQ op + the op that carries the port in `no`
  const JUMP = 4;
  const out = Buffer.alloc(ports.length * (TEST + JUMP) - JUMP);
  let o = 0;
  ports.forEach((port, i) => {
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`local port ${port} is not in 0..65535`);
    const last = i === ports.length - 1;
    out[o] = INET_DIAG_BC_S_EQ;
    out[o + 1] = TEST;
    out.writeUInt16LE(TEST + JUMP, o + 2);
    out.writeUInt16LE(port, o + 6);
    o += TEST;
    if (!last) {
      const rest = out.length - o - JUMP;
      out[o] = INET_DIAG_BC_JMP;
      out[o + 1] = JUMP;
      out.writeUInt16LE(rest + JUMP, o + 2);
      o += JUMP;
    }
  });
  return out;
}

/** The local ports a localPortsBytecode() program accepts (for tests and logs). */
export function bytecodeLocalPorts(bc: Buffer): number[] {
  const ports: number[] = [];
  for (let o = 0; o + 8 <= bc.length; ) {
    if (bc[o] !== INET_DIAG_BC_S_EQ) throw new NetlinkParseError(`bytecode op ${bc[o]} is not INET_DIAG_BC_S_EQ`, o);
    ports.push(bc.readUInt16LE(o + 6));
    o += 8;
    if (o < bc.length) {
      if (bc[o] !== INET_DIAG_BC_JMP) throw new NetlinkParseError(`bytecode op ${bc[o]} is not INET_DIAG_BC_JMP`, o);
      o += 4;
    }
  }
  return ports;
}

function writeSockId(b: Buffer, o: number, s: { sport: number; dport: number; src: string; dst: string; interface: number; cookie: string }): void {
  b.writeUInt16BE(s.sport, o);
  b.writeUInt16BE(s.dport, o + 2);
  ipv4ToBytes(s.src).copy(b, o + 4);
  ipv4ToBytes(s.dst).copy(b, o + 20);
  b.writeUInt32LE(s.interface >>> 0, o + 36);
  const cookie = BigInt(`0x${s.cookie}`);
  b.writeUInt32LE(Number(cookie & 0xffffffffn), o + 40);
  b.writeUInt32LE(Number(cookie >> 32n), o + 44);
}

function readCookie(b: Buffer, o: number): string {
  return ((BigInt(b.readUInt32LE(o + 4)) << 32n) | BigInt(b.readUInt32LE(o))).toString(16);
}

/** A dump request of sockets. */
export function encodeInetDiagRequest(req: InetDiagRequest, seq: number): Buffer {
  const body = Buffer.alloc(INET_DIAG_REQ_V2_LEN);
  body[0] = req.family;
  body[1] = req.protocol;
  body[2] = req.ext;
  body.writeUInt32LE(req.states >>> 0, 4);
  writeSockId(body, 8, { sport: 0, dport: 0, src: '0.0.0.0', dst: '0.0.0.0', interface: 0, cookie: INET_DIAG_NOCOOKIE });
  const w = new AttributeWriter();
  w.raw(body);
  if (req.localPorts && req.localPorts.length > 0) w.bytes(INET_DIAG_REQ_BYTECODE, localPortsBytecode(req.localPorts));
  return encodeMessage(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, w.toBuffer());
}

export function decodeInetDiagRequest(msg: NetlinkMessage): InetDiagRequest {
  const p = msg.payload;
  if (msg.type !== SOCK_DIAG_BY_FAMILY) throw new NetlinkParseError(`message type ${msg.type} is not SOCK_DIAG_BY_FAMILY`, 4);
  if (p.length < INET_DIAG_REQ_V2_LEN) throw new NetlinkParseError(`inet_diag_req_v2 is ${p.length} bytes, expected ${INET_DIAG_REQ_V2_LEN}`, NLMSG_HDRLEN);
  const req: InetDiagRequest = { family: p[0]!, protocol: p[1]!, ext: p[2]!, states: p.readUInt32LE(4) };
  for (const a of parseAttributes(p, INET_DIAG_REQ_V2_LEN)) if (a.type === INET_DIAG_REQ_BYTECODE) req.localPorts = bytecodeLocalPorts(a.value);
  return req;
}

// tcp_info: u8 state, ca_state, retransmits, probes, backoff, options, wscales (two nibbles), ...; u32 rtt at 68.
const TCPI_OPTIONS = 5;
const TCPI_WSCALE = 6;
const TCPI_RTT = 68;
const TCP_INFO_MIN = TCPI_RTT + 4;
/** C bit-fields fill from the low bits on little-endian ABIs, from the high bits on big-endian ones. */
const SND_WSCALE_LOW_NIBBLE = endianness() === 'LE';

export function decodeTcpInfo(b: Buffer): TcpInfo {
  if (b.length < TCP_INFO_MIN) throw new NetlinkParseError(`tcp_info is ${b.length} bytes, expected at least ${TCP_INFO_MIN}`, 0);
  const w = b[TCPI_WSCALE]!;
  return {
    state: b[0]!,
    options: b[TCPI_OPTIONS]!,
    sndWscale: SND_WSCALE_LOW_NIBBLE ? w & 0x0f : w >> 4,
    rcvWscale: SND_WSCALE_LOW_NIBBLE ? w >> 4 : w & 0x0f,
    rttUs: b.readUInt32LE(TCPI_RTT),
  };
}

export function encodeTcpInfo(t: TcpInfo): Buffer {
  const b = Buffer.alloc(TCP_INFO_MIN);
  b[0] = t.state;
  b[TCPI_OPTIONS] = t.options;
  b[TCPI_WSCALE] = SND_WSCALE_LOW_NIBBLE ? (t.sndWscale & 0x0f) | (t.rcvWscale << 4) : (t.sndWscale << 4) | (t.rcvWscale & 0x0f);
  b.writeUInt32LE(t.rttUs >>> 0, TCPI_RTT);
  return b;
}

/** One answer message of a dump (its payload); malformed → NetlinkParseError. */
export function decodeInetDiagMessage(payload: Buffer): DiagSocket {
  if (payload.length < INET_DIAG_MSG_LEN) throw new NetlinkParseError(`inet_diag_msg is ${payload.length} bytes, expected ${INET_DIAG_MSG_LEN}`, 0);
  const id = 4;
  const s: DiagSocket = {
    family: payload[0]!,
    state: payload[1]!,
    timer: payload[2]!,
    retrans: payload[3]!,
    sport: payload.readUInt16BE(id),
    dport: payload.readUInt16BE(id + 2),
    src: bytesToIpv4(payload, id + 4),
    dst: bytesToIpv4(payload, id + 20),
    interface: payload.readUInt32LE(id + 36),
    cookie: readCookie(payload, id + 40),
    expires: payload.readUInt32LE(52),
    rqueue: payload.readUInt32LE(56),
    wqueue: payload.readUInt32LE(60),
    uid: payload.readUInt32LE(64),
    inode: payload.readUInt32LE(68),
  };
  for (const a of parseAttributes(payload, INET_DIAG_MSG_LEN)) {
    if (a.type === INET_DIAG_INFO) s.tcpInfo = decodeTcpInfo(a.value);
    else if (a.type === INET_DIAG_MARK && a.value.length >= 4) s.mark = a.value.readUInt32LE(0);
  }
  return s;
}

/** The payload the kernel would send for `s` (tests, and fixtures of the rebuild). */
export function encodeInetDiagMessage(s: DiagSocket): Buffer {
  const head = Buffer.alloc(INET_DIAG_MSG_LEN);
  head[0] = s.family;
  head[1] = s.state;
  head[2] = s.timer;
  head[3] = s.retrans;
  writeSockId(head, 4, s);
  head.writeUInt32LE(s.expires >>> 0, 52);
  head.writeUInt32LE(s.rqueue >>> 0, 56);
  head.writeUInt32LE(s.wqueue >>> 0, 60);
  head.writeUInt32LE(s.uid >>> 0, 64);
  head.writeUInt32LE(s.inode >>> 0, 68);
  const w = new AttributeWriter();
  w.raw(head);
  if (s.tcpInfo) w.bytes(INET_DIAG_INFO, encodeTcpInfo(s.tcpInfo));
  if (s.mark !== undefined) w.u32(INET_DIAG_MARK, s.mark);
  return w.toBuffer();
}

/** Reads a host's TCP socket table over one NETLINK_SOCK_DIAG socket. */
export class SockDiag {
  private readonly socket: NetlinkSocket;

  /** `options.netns`: read the table of that network namespace. */
  constructor(options: SocketOptions = {}) {
    this.socket = new NetlinkSocket(NETLINK_SOCK_DIAG, options);
  }

  /** Sockets in `states` (default ESTABLISHED) whose local port is one of `localPorts`, with tcp_info. */
  async tcpSockets(localPorts: number[], states = tcpStateBit(TCP_ESTABLISHED)): Promise<DiagSocket[]> {
    if (localPorts.length === 0) return [];
    const seq = this.socket.reserveSeq();
    const request = encodeInetDiagRequest({ family: AF_INET, protocol: IPPROTO_TCP, ext: inetDiagExt(INET_DIAG_INFO), states, localPorts }, seq);
    const out: DiagSocket[] = [];
    await this.socket.dump('sock_diag TCP dump', request, seq, (msg) => {
      if (msg.type === SOCK_DIAG_BY_FAMILY) out.push(decodeInetDiagMessage(msg.payload));
    });
    return out;
  }

  close(): void {
    this.socket.close();
  }
}
