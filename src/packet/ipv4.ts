/** IPv4 addresses and headers: text <-> the 4 bytes in network order that packets and netlink carry. */
import { internetChecksum } from './checksum.js';

export const IPV4_HEADER_LENGTH = 20;

export function ipv4ToBytes(address: string): Buffer {
  const parts = address.split('.');
  const bytes = parts.map((p) => (/^\d{1,3}$/.test(p) ? Number(p) : NaN));
  if (bytes.length !== 4 || bytes.some((b) => !(b >= 0 && b <= 255))) {
    throw new Error(`not an IPv4 address: '${address}'`);
  }
  return Buffer.from(bytes);
}

/** The dotted text of an address held as an unsigned 32-bit number. */
export function ipv4FromNumber(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

export function bytesToIpv4(buf: Buffer, offset = 0): string {
  return `${buf[offset]}.${buf[offset + 1]}.${buf[offset + 2]}.${buf[offset + 3]}`;
}

/** IPv4 address as an unsigned 32-bit number, for the §6.4.3 "higher primary address" tie. */
export function ipv4ToNumber(address: string): number {
  return ipv4ToBytes(address).readUInt32BE(0);
}

/** Whether an IPv4 address lies in a network written as CIDR ("198.18.0.0/24", or an interface's "198.18.0.3/24"). */
export function inNetwork(address: string, cidr: string): boolean {
  const [network, bits] = cidr.split('/') as [string, string | undefined];
  const n = bits === undefined ? 32 : Number(bits);
  if (!Number.isInteger(n) || n < 0 || n > 32) throw new Error(`not a prefix length: '${cidr}'`);
  const mask = n === 0 ? 0 : (0xffffffff << (32 - n)) >>> 0;
  return ((ipv4ToNumber(address) & mask) >>> 0) === ((ipv4ToNumber(network) & mask) >>> 0);
}

let ipIdentification = 0;

/** An IPv4 header (no options) for a payload of the given protocol. */
export function encodeIpv4Header(
  source: string,
  destination: string,
  protocol: number,
  payloadLength: number,
  ttl: number,
): Buffer {
  const h = Buffer.alloc(IPV4_HEADER_LENGTH);
  h[0] = 0x45;
  h[1] = 0xc0; // DSCP CS6 "internetwork control", as routing protocols use
  h.writeUInt16BE(IPV4_HEADER_LENGTH + payloadLength, 2);
  ipIdentification = (ipIdentification + 1) & 0xffff;
  h.writeUInt16BE(ipIdentification, 4);
  h[8] = ttl;
  h[9] = protocol;
  ipv4ToBytes(source).copy(h, 12);
  ipv4ToBytes(destination).copy(h, 16);
  h.writeUInt16BE(internetChecksum(h), 10);
  return h;
}
