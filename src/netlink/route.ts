/**
 * rtnetlink addresses (linux/rtnetlink.h, linux/if_addr.h, linux/if_link.h): a pure
 * codec for RTM_NEWADDR / RTM_DELADDR / RTM_GETADDR and RTM_GETLINK by name, and the
 * small I/O class `Addresses` the VRRP speaker and the migration use to move VIPs.
 * IPv4 only: VIPs and inside addresses are IPv4.
 */
import { constants as osConstants } from 'node:os';
import {
  AttributeWriter,
  NETLINK_ROUTE,
  NLMSG_HDRLEN,
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_EXCL,
  NLM_F_REQUEST,
  NetlinkParseError,
  attributeMap,
  encodeMessage,
  type NetlinkMessage,
  AF_INET,
} from './message.js';
export { AF_INET } from './message.js';
import { bytesToIpv4, ipv4ToBytes } from '../packet/ipv4.js';
import { NetlinkError, NetlinkSocket } from './socket.js';

export const RTM_NEWLINK = 16;
export const RTM_GETLINK = 18;
export const RTM_NEWADDR = 20;
export const RTM_DELADDR = 21;
export const RTM_GETADDR = 22;

export const RT_SCOPE_UNIVERSE = 0;

// enum ifa_attributes (linux/if_addr.h)
export const IFA_ADDRESS = 1;
export const IFA_LOCAL = 2;
export const IFA_LABEL = 3;
export const IFA_BROADCAST = 4;

// enum ifla (linux/if_link.h)
export const IFLA_IFNAME = 3;

const IFADDRMSG_LEN = 8;
const IFINFOMSG_LEN = 16;

/** An IPv4 address with its prefix, as `ip addr` shows it: "203.0.113.10/24". */
export interface Cidr {
  address: string;
  prefixLength: number;
}

export function parseCidr(text: string): Cidr {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})(?:\/(\d{1,2}))?$/.exec(text.trim());
  const prefixLength = m?.[2] === undefined ? 32 : Number(m[2]);
  if (!m || prefixLength > 32 || m[1]!.split('.').some((o) => Number(o) > 255)) {
    throw new Error(`not an IPv4 address with prefix: "${text}"`);
  }
  return { address: m[1]!, prefixLength };
}

/** An address on an interface, as RTM_NEWADDR carries it. */
export interface InterfaceAddress extends Cidr {
  ifindex: number;
  label?: string;
  scope: number;
}

function ifaddrmsg(prefixLength: number, ifindex: number): Buffer {
  const b = Buffer.alloc(IFADDRMSG_LEN);
  b[0] = AF_INET;
  b[1] = prefixLength;
  b[3] = RT_SCOPE_UNIVERSE;
  b.writeUInt32LE(ifindex, 4);
  return b;
}

/** RTM_NEWADDR (create, fail if it exists: EEXIST) or RTM_DELADDR for one IPv4 address. */
export function encodeAddressRequest(
  type: typeof RTM_NEWADDR | typeof RTM_DELADDR,
  ifindex: number,
  cidr: Cidr,
  seq: number,
  label?: string,
): Buffer {
  const addr = ipv4ToBytes(cidr.address);
  const w = new AttributeWriter(64).raw(ifaddrmsg(cidr.prefixLength, ifindex)).bytes(IFA_LOCAL, addr).bytes(IFA_ADDRESS, addr);
  if (label !== undefined) {
    // IFNAMSIZ is 16 with the NUL; the kernel refuses longer labels.
    if (Buffer.byteLength(label) > 15) throw new Error(`address label "${label}" is longer than 15 bytes`);
    w.string(IFA_LABEL, label);
  }
  const flags = NLM_F_REQUEST | NLM_F_ACK | (type === RTM_NEWADDR ? NLM_F_CREATE | NLM_F_EXCL : 0);
  return encodeMessage(type, flags, seq, w.toBuffer());
}

/** RTM_GETADDR dump of every IPv4 address (the kernel does not filter by interface). */
export function encodeAddressDump(seq: number): Buffer {
  return encodeMessage(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, ifaddrmsg(0, 0));
}

/** RTM_GETLINK for one interface by name; the kernel answers RTM_NEWLINK or ENODEV. */
export function encodeLinkByName(ifname: string, seq: number): Buffer {
  if (ifname.length === 0 || Buffer.byteLength(ifname) > 15) throw new Error(`not an interface name: "${ifname}"`);
  const w = new AttributeWriter(48).raw(Buffer.alloc(IFINFOMSG_LEN)).string(IFLA_IFNAME, ifname);
  return encodeMessage(RTM_GETLINK, NLM_F_REQUEST | NLM_F_ACK, seq, w.toBuffer());
}

/** The ifindex and name of an RTM_NEWLINK message. */
export function decodeLink(msg: NetlinkMessage): { ifindex: number; ifname?: string } {
  if (msg.type !== RTM_NEWLINK) throw new NetlinkParseError(`expected RTM_NEWLINK, got type ${msg.type}`, 0);
  if (msg.payload.length < IFINFOMSG_LEN) throw new NetlinkParseError('ifinfomsg is truncated', NLMSG_HDRLEN);
  const attrs = attributeMap(msg.payload.subarray(IFINFOMSG_LEN));
  const name = attrs.get(IFLA_IFNAME);
  return {
    ifindex: msg.payload.readInt32LE(4),
    ...(name ? { ifname: name.toString('utf8').replace(/\0.*$/s, '') } : {}),
  };
}

/** An IPv4 RTM_NEWADDR message, or undefined for other families. */
export function decodeAddress(msg: NetlinkMessage): InterfaceAddress | undefined {
  if (msg.type !== RTM_NEWADDR) return undefined;
  if (msg.payload.length < IFADDRMSG_LEN) throw new NetlinkParseError('ifaddrmsg is truncated', NLMSG_HDRLEN);
  if (msg.payload[0] !== AF_INET) return undefined;
  const attrs = attributeMap(msg.payload.subarray(IFADDRMSG_LEN));
  // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links.
  const local = attrs.get(IFA_LOCAL) ?? attrs.get(IFA_ADDRESS);
  if (!local || local.length !== 4) throw new NetlinkParseError('RTM_NEWADDR without an IPv4 IFA_LOCAL', NLMSG_HDRLEN + IFADDRMSG_LEN);
  const label = attrs.get(IFA_LABEL);
  return {
    address: bytesToIpv4(local),
    prefixLength: msg.payload[1]!,
    scope: msg.payload[3]!,
    ifindex: msg.payload.readUInt32LE(4),
    ...(label ? { label: label.toString('utf8').replace(/\0.*$/s, '') } : {}),
  };
}

const { EEXIST, EADDRNOTAVAIL } = osConstants.errno;

/**
 * Adds and removes IPv4 addresses on interfaces. Idempotent: adding an address that
 * is there, or removing one that is not, succeeds (VRRP and migrations repeat steps).
 */
export class Addresses {
  private readonly socket: NetlinkSocket;

  constructor(options: { netns?: string } = {}) {
    this.socket = new NetlinkSocket(NETLINK_ROUTE, options.netns === undefined ? {} : { netns: options.netns });
  }

  async ifindex(ifname: string): Promise<number> {
    const seq = this.socket.reserveSeq();
    let ifindex: number | undefined;
    await this.socket.dump(`RTM_GETLINK ${ifname}`, encodeLinkByName(ifname, seq), seq, (msg) => {
      if (msg.type === RTM_NEWLINK) ifindex = decodeLink(msg).ifindex;
    });
    if (ifindex === undefined) throw new Error(`RTM_GETLINK ${ifname}: no RTM_NEWLINK in the answer`);
    return ifindex;
  }

  /** Adds `cidr` (e.g. "203.0.113.10/24") to `ifname`; true if it was added, false if it was there. */
  async add(ifname: string, cidr: string, label?: string): Promise<boolean> {
    const c = parseCidr(cidr);
    const seq = this.socket.reserveSeq();
    const msg = encodeAddressRequest(RTM_NEWADDR, await this.ifindex(ifname), c, seq, label);
    try {
      await this.socket.request(`RTM_NEWADDR ${cidr} dev ${ifname}`, msg, seq);
      return true;
    } catch (e) {
      if (e instanceof NetlinkError && e.errno === EEXIST) return false;
      throw e;
    }
  }

  /** Removes `cidr` from `ifname`; true if it was removed, false if it was not there. */
  async remove(ifname: string, cidr: string): Promise<boolean> {
    const c = parseCidr(cidr);
    const seq = this.socket.reserveSeq();
    const msg = encodeAddressRequest(RTM_DELADDR, await this.ifindex(ifname), c, seq);
    try {
      await this.socket.request(`RTM_DELADDR ${cidr} dev ${ifname}`, msg, seq);
      return true;
    } catch (e) {
      if (e instanceof NetlinkError && e.errno === EADDRNOTAVAIL) return false;
      throw e;
    }
  }

  /** The IPv4 addresses of `ifname`, in the kernel's order. */
  async list(ifname: string): Promise<InterfaceAddress[]> {
    const ifindex = await this.ifindex(ifname);
    return (await this.all()).filter((a) => a.ifindex === ifindex);
  }

  /** The IPv4 addresses of every interface (loopback's too), in the kernel's order. */
  async all(): Promise<InterfaceAddress[]> {
    const seq = this.socket.reserveSeq();
    const out: InterfaceAddress[] = [];
    await this.socket.dump('RTM_GETADDR', encodeAddressDump(seq), seq, (msg) => {
      const a = decodeAddress(msg);
      if (a) out.push(a);
    });
    return out;
  }

  close(): void {
    this.socket.close();
  }
}
