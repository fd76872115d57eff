/**
 * VRRP advertisement codec for IPv4: VRRPv3 (RFC 5798 §5) and VRRPv2 (RFC 3768 §5, keepalived's
 * default), with the IPv4 header and Ethernet frame around it, because vipshift sends and
 * receives adverts at the link layer (libpcap). Both versions share one decoded shape: the
 * interval is in centiseconds either way (a v2 interval is whole seconds on the wire).
 * Pure functions on Buffers; decoding never throws: a bad frame yields a typed reason.
 */
import { internetChecksum } from '../packet/checksum.js';
import { ETHERNET_HEADER_LENGTH, ETHERTYPE_IPV4, bytesToMac, encodeEthernetHeader } from '../packet/ethernet.js';
import { IPV4_HEADER_LENGTH, bytesToIpv4, encodeIpv4Header, ipv4ToBytes } from '../packet/ipv4.js';

export const VRRP_PROTOCOL = 112;
export type VrrpVersion = 2 | 3;
export const VRRP_VERSION: VrrpVersion = 3;
/** RFC 4302: keepalived's `auth_type AH` wraps a VRRPv2 packet in an IPsec AH header. */
export const IPPROTO_AH = 51;
export const VRRP_TYPE_ADVERTISEMENT = 1;
/** RFC 5798 §5.1.1.2: the IPv4 multicast address assigned by IANA for VRRP. */
export const VRRP_MULTICAST_IPV4 = '224.0.0.18';
export const VRRP_MULTICAST_MAC = '01:00:5e:00:00:12';
export const VRRP_TTL = 255;
/** Version/Type, VRID, Priority, Count, Rsvd/Max Adver Int, Checksum. */
export const VRRP_FIXED_LENGTH = 8;
/** The 12-bit Max Adver Int field, in centiseconds (§5.2.7). */
export const MAX_ADVER_INT_CENTISECONDS = 0x0fff;
/** RFC 3768 §5.3.7: the 8-bit Adver Int field of VRRPv2, in whole seconds. */
export const V2_MAX_ADVER_INT_SECONDS = 255;
/** RFC 3768 §5.3.10 (RFC 2338 §5.3.10): the Authentication Data that ends every v2 packet. */
export const V2_AUTH_DATA_LENGTH = 8;
/** RFC 3768 §5.3.6 Auth Type: 0 is what RFC 3768 allows; keepalived can still send 1 and 2 (RFC 2338). */
export const AUTH_NONE = 0;
export const AUTH_PASS = 1;
export const AUTH_AH = 2;

export interface Advertisement {
  /** 3 when absent. */
  version?: VrrpVersion;
  vrid: number;
  priority: number;
  /** Max Adver Int, centiseconds (v3: 1..4095; v2: Adver Int × 100, 100..25500). */
  maxAdverInt: number;
  /** The IPvX Address(es) field, dotted quads. */
  addresses: string[];
}

/** An advert as seen on the wire, with the IP and link fields §7.1 and §6.4 need. */
export interface ReceivedAdvertisement extends Advertisement {
  version: VrrpVersion;
  /** VRRPv2 only: the Auth Type field (AUTH_AH also when the packet came inside AH). */
  authType?: number;
  source: string;
  destination: string;
  ttl: number;
  sourceMac: string;
}

/** Why a received frame was dropped (RFC 5798 §7.1 and the framing around it). */
export type BadAdvertReason =
  | 'truncated' // shorter than Ethernet + IPv4 + the fixed VRRP fields
  | 'not-ipv4' // EtherType or IP version is not IPv4
  | 'ip-header' // IHL or total length inconsistent with the frame
  | 'not-vrrp' // IP protocol is not 112 (nor AH around VRRP)
  | 'fragment' // a fragment: an advert always fits one packet
  | 'ttl' // §7.1: TTL must be 255
  | 'version' // §7.1: version must be 3 (2 or 3 for the decoder; the instance's own for the speaker)
  | 'type' // §5.2.2: only type 1 (ADVERTISEMENT) exists
  | 'length' // §7.1: the packet must hold Count IPvX Addr addresses
  | 'checksum' // §7.1, §5.2.8
  | 'interval' // an interval of 0; VRRPv2: not the locally configured Adver Int (RFC 3768 §7.1)
  | 'vrid' // §7.1: VRID not configured on the receiving interface
  | 'owner' // §7.1: the local router is the address owner (priority 255)
  | 'peer' // unicast mode: the source is not one of the configured unicast peers
  | 'destination'; // neither 224.0.0.18 nor this router's own address

export type DecodeResult =
  | { ok: true; advert: ReceivedAdvertisement }
  | { ok: false; reason: BadAdvertReason };






/** RFC 5798 §7.3: the virtual router MAC address 00-00-5E-00-01-{VRID}. */
export function virtualMac(vrid: number): string {
  return `00:00:5e:00:01:${vrid.toString(16).padStart(2, '0')}`;
}


/** §5.2.8: the IPv4 pseudo-header (RFC 768 style) that the VRRPv3 checksum covers. */
function pseudoHeader(source: Buffer, destination: Buffer, vrrpLength: number): Buffer {
  const ph = Buffer.alloc(12);
  source.copy(ph, 0);
  destination.copy(ph, 4);
  ph[9] = VRRP_PROTOCOL;
  ph.writeUInt16BE(vrrpLength, 10);
  return ph;
}

function checkAdvert(a: Advertisement): void {
  const int = (v: number, lo: number, hi: number, what: string): void => {
    if (!Number.isInteger(v) || v < lo || v > hi) throw new Error(`${what} ${v} out of ${lo}..${hi}`);
  };
  int(a.vrid, 1, 255, 'Virtual Rtr ID');
  int(a.priority, 0, 255, 'Priority');
  if ((a.version ?? VRRP_VERSION) === 2) {
    int(a.maxAdverInt / 100, 1, V2_MAX_ADVER_INT_SECONDS, 'Adver Int (seconds, VRRPv2)');
  } else {
    int(a.maxAdverInt, 1, MAX_ADVER_INT_CENTISECONDS, 'Max Adver Int (centiseconds)');
  }
  int(a.addresses.length, 1, 255, 'Count IPvX Addr');
}

/**
 * RFC 3768 §5.1: Version/Type, VRID, Priority, Count IP Addrs, Auth Type, Adver Int (seconds),
 * Checksum, the addresses, 8 bytes of Authentication Data. Auth Type 0 and zero data, as
 * keepalived sends without an `authentication` block; the checksum covers the VRRP message
 * alone (§5.3.8: no pseudo-header in v2).
 */
function encodeV2(a: Advertisement): Buffer {
  const buf = Buffer.alloc(VRRP_FIXED_LENGTH + 4 * a.addresses.length + V2_AUTH_DATA_LENGTH);
  buf[0] = (2 << 4) | VRRP_TYPE_ADVERTISEMENT;
  buf[1] = a.vrid;
  buf[2] = a.priority;
  buf[3] = a.addresses.length;
  buf[4] = AUTH_NONE;
  buf[5] = a.maxAdverInt / 100;
  a.addresses.forEach((addr, i) => ipv4ToBytes(addr).copy(buf, VRRP_FIXED_LENGTH + 4 * i));
  buf.writeUInt16BE(internetChecksum(buf), 6);
  return buf;
}

/** The VRRP packet alone (§5.1), checksummed for the given IP source and destination. */
export function encodeAdvertisement(a: Advertisement, source: string, destination: string): Buffer {
  checkAdvert(a);
  if (a.version === 2) return encodeV2(a);
  const buf = Buffer.alloc(VRRP_FIXED_LENGTH + 4 * a.addresses.length);
  buf[0] = (VRRP_VERSION << 4) | VRRP_TYPE_ADVERTISEMENT;
  buf[1] = a.vrid;
  buf[2] = a.priority;
  buf[3] = a.addresses.length;
  buf.writeUInt16BE(a.maxAdverInt & MAX_ADVER_INT_CENTISECONDS, 4); // the 4 reserved bits are 0
  a.addresses.forEach((addr, i) => ipv4ToBytes(addr).copy(buf, VRRP_FIXED_LENGTH + 4 * i));
  const sum = internetChecksum(pseudoHeader(ipv4ToBytes(source), ipv4ToBytes(destination), buf.length), buf);
  buf.writeUInt16BE(sum, 6);
  return buf;
}



export interface FrameAddressing {
  /** The IPv4 source: the primary address of the sending interface (§5.1.1.1). */
  source: string;
  /** 224.0.0.18, or a unicast peer. */
  destination?: string;
  /** Defaults to the virtual MAC of the VRID (§7.3). */
  sourceMac?: string;
  /** Defaults to the multicast MAC of 224.0.0.18; a unicast peer's MAC otherwise. */
  destinationMac?: string;
}

/** A complete Ethernet frame carrying the advert, ready for pcap inject. */
export function encodeAdvertisementFrame(a: Advertisement, at: FrameAddressing): Buffer {
  const destination = at.destination ?? VRRP_MULTICAST_IPV4;
  const vrrp = encodeAdvertisement(a, at.source, destination);
  return Buffer.concat([
    encodeEthernetHeader(at.destinationMac ?? VRRP_MULTICAST_MAC, at.sourceMac ?? virtualMac(a.vrid), ETHERTYPE_IPV4),
    encodeIpv4Header(at.source, destination, VRRP_PROTOCOL, vrrp.length, VRRP_TTL),
    vrrp,
  ]);
}

/**
 * Decode an Ethernet frame and apply the checks of RFC 5798 §7.1 that need no configuration
 * (the VRID and owner checks are the speaker's, with `decodeAdvertisementFor`).
 */
export function decodeAdvertisementFrame(frame: Buffer): DecodeResult {
  const bad = (reason: BadAdvertReason): DecodeResult => ({ ok: false, reason });
  if (frame.length < ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH + VRRP_FIXED_LENGTH) return bad('truncated');
  if (frame.readUInt16BE(12) !== ETHERTYPE_IPV4) return bad('not-ipv4');
  const ip = ETHERNET_HEADER_LENGTH;
  const versionIhl = frame[ip] as number;
  if (versionIhl >> 4 !== 4) return bad('not-ipv4');
  const ihl = (versionIhl & 0x0f) * 4;
  const totalLength = frame.readUInt16BE(ip + 2);
  // Ethernet pads short frames, so the frame may be longer than the IP packet, never shorter.
  if (ihl < IPV4_HEADER_LENGTH || totalLength < ihl || ip + totalLength > frame.length) return bad('ip-header');
  const protocol = frame[ip + 9] as number;
  if (protocol !== VRRP_PROTOCOL && protocol !== IPPROTO_AH) return bad('not-vrrp');
  if ((frame.readUInt16BE(ip + 6) & 0x3fff) !== 0) return bad('fragment');
  const ttl = frame[ip + 8] as number;
  if (ttl !== VRRP_TTL) return bad('ttl');
  let vrrp = frame.subarray(ip + ihl, ip + totalLength);
  let inAh = false;
  if (protocol === IPPROTO_AH) {
    // RFC 4302 §2: Next Header, Payload Len (32-bit words minus 2), ... ; its ICV is not
    // verified (keepalived's AH is HMAC-MD5-96 with the password: accepted and warned).
    if (vrrp.length < 12) return bad('truncated');
    if (vrrp[0] !== VRRP_PROTOCOL) return bad('not-vrrp');
    const ahLength = ((vrrp[1] as number) + 2) * 4;
    if (ahLength > vrrp.length) return bad('length');
    vrrp = vrrp.subarray(ahLength);
    inAh = true;
  }
  if (vrrp.length < VRRP_FIXED_LENGTH) return bad('length');
  const version = ((vrrp[0] as number) >> 4) as VrrpVersion;
  if (version !== 3 && version !== 2) return bad('version');
  if (inAh && version !== 2) return bad('version');
  if (((vrrp[0] as number) & 0x0f) !== VRRP_TYPE_ADVERTISEMENT) return bad('type');
  const count = vrrp[3] as number;
  // §7.1 "contains the complete VRRP packet": exactly the fixed part plus Count addresses
  // (and v2's Authentication Data).
  const expected = VRRP_FIXED_LENGTH + 4 * count + (version === 2 ? V2_AUTH_DATA_LENGTH : 0);
  if (count === 0 || vrrp.length !== expected) return bad('length');
  const source = frame.subarray(ip + 12, ip + 16);
  const destination = frame.subarray(ip + 16, ip + 20);
  const sum = version === 2 ? internetChecksum(vrrp) : internetChecksum(pseudoHeader(source, destination, vrrp.length), vrrp);
  if (sum !== 0) return bad('checksum');
  const maxAdverInt = version === 2 ? (vrrp[5] as number) * 100 : vrrp.readUInt16BE(4) & MAX_ADVER_INT_CENTISECONDS;
  if (maxAdverInt === 0) return bad('interval');
  const vrid = vrrp[1] as number;
  if (vrid === 0) return bad('vrid');
  const addresses: string[] = [];
  for (let i = 0; i < count; i++) addresses.push(bytesToIpv4(vrrp, VRRP_FIXED_LENGTH + 4 * i));
  return {
    ok: true,
    advert: {
      version,
      ...(version === 2 ? { authType: inAh ? AUTH_AH : (vrrp[4] as number) } : {}),
      vrid,
      priority: vrrp[2] as number,
      maxAdverInt,
      addresses,
      source: bytesToIpv4(source, 0),
      destination: bytesToIpv4(destination, 0),
      ttl,
      sourceMac: bytesToMac(frame, 6),
    },
  };
}

/**
 * §7.1 in full for one interface: the frame checks, then "the VRID is configured on the
 * receiving interface and the local router is not the IPvX address owner".
 */
export function decodeAdvertisementFor(
  frame: Buffer,
  configured: (vrid: number) => { owner: boolean } | undefined,
): DecodeResult {
  const result = decodeAdvertisementFrame(frame);
  if (!result.ok) return result;
  const local = configured(result.advert.vrid);
  if (!local) return { ok: false, reason: 'vrid' };
  if (local.owner) return { ok: false, reason: 'owner' };
  return result;
}

/** §7.1 MAY: do the advertised addresses match ours? A mismatch is a misconfiguration, logged. */
export function addressesMatch(advertised: string[], configured: string[]): boolean {
  if (advertised.length !== configured.length) return false;
  const a = [...advertised].sort();
  const b = [...configured].sort();
  return a.every((x, i) => x === b[i]);
}
