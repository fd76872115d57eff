/**
 * ARP frames over Ethernet (RFC 826), in particular the gratuitous ARP a new master sends so
 * that hosts and switches learn where the virtual addresses live (RFC 5798 §6.4.1, RFC 5227
 * §3: an ARP announcement has sender and target protocol address both set to the address).
 * Pure codec; decoding returns undefined for anything that is not Ethernet/IPv4 ARP.
 */
import { ETHERNET_HEADER_LENGTH, bytesToMac, encodeEthernetHeader, macToBytes } from './ethernet.js';
import { bytesToIpv4, ipv4ToBytes } from './ipv4.js';

export const ETHERTYPE_ARP = 0x0806;
export const ARPHRD_ETHER = 1;
export const ARPOP_REQUEST = 1;
export const ARPOP_REPLY = 2;
export const BROADCAST_MAC = 'ff:ff:ff:ff:ff:ff';
const ARP_LENGTH = 28;

export interface ArpPacket {
  operation: number;
  senderHardwareAddress: string;
  senderProtocolAddress: string;
  targetHardwareAddress: string;
  targetProtocolAddress: string;
}

export interface ArpFrame extends ArpPacket {
  destinationMac: string;
  sourceMac: string;
}

export function encodeArpFrame(f: ArpFrame): Buffer {
  const arp = Buffer.alloc(ARP_LENGTH);
  arp.writeUInt16BE(ARPHRD_ETHER, 0); // ar_hrd
  arp.writeUInt16BE(0x0800, 2); // ar_pro: IPv4
  arp[4] = 6; // ar_hln
  arp[5] = 4; // ar_pln
  arp.writeUInt16BE(f.operation, 6); // ar_op
  macToBytes(f.senderHardwareAddress).copy(arp, 8);
  ipv4ToBytes(f.senderProtocolAddress).copy(arp, 14);
  macToBytes(f.targetHardwareAddress).copy(arp, 18);
  ipv4ToBytes(f.targetProtocolAddress).copy(arp, 24);
  return Buffer.concat([encodeEthernetHeader(f.destinationMac, f.sourceMac, ETHERTYPE_ARP), arp]);
}

/**
 * A gratuitous ARP for `address` owned by `mac`: a broadcast request with sender and target
 * protocol address both `address` (what keepalived and Linux's arping -U send; every
 * implementation updates its cache from it).
 */
export function gratuitousArp(address: string, mac: string): Buffer {
  return encodeArpFrame({
    destinationMac: BROADCAST_MAC,
    sourceMac: mac,
    operation: ARPOP_REQUEST,
    senderHardwareAddress: mac,
    senderProtocolAddress: address,
    targetHardwareAddress: BROADCAST_MAC,
    targetProtocolAddress: address,
  });
}

export function decodeArpFrame(frame: Buffer): ArpFrame | undefined {
  if (frame.length < ETHERNET_HEADER_LENGTH + ARP_LENGTH) return undefined;
  if (frame.readUInt16BE(12) !== ETHERTYPE_ARP) return undefined;
  const a = ETHERNET_HEADER_LENGTH;
  if (frame.readUInt16BE(a) !== ARPHRD_ETHER || frame.readUInt16BE(a + 2) !== 0x0800) return undefined;
  if (frame[a + 4] !== 6 || frame[a + 5] !== 4) return undefined;
  return {
    destinationMac: bytesToMac(frame, 0),
    sourceMac: bytesToMac(frame, 6),
    operation: frame.readUInt16BE(a + 6),
    senderHardwareAddress: bytesToMac(frame, a + 8),
    senderProtocolAddress: bytesToIpv4(frame, a + 14),
    targetHardwareAddress: bytesToMac(frame, a + 18),
    targetProtocolAddress: bytesToIpv4(frame, a + 24),
  };
}

/** RFC 5227 §3: an announcement (gratuitous ARP) claims its sender protocol address. */
export function isGratuitous(f: ArpPacket): boolean {
  return f.senderProtocolAddress === f.targetProtocolAddress;
}
