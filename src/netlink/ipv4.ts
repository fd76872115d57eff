/** IPv4 addresses as netlink carries them: 4 bytes in network order. */

export function ipv4ToBytes(address: string): Buffer {
  const parts = address.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) {
    throw new Error(`not an IPv4 address: "${address}"`);
  }
  return Buffer.from(parts);
}

export function bytesToIpv4(b: Buffer, offset = 0): string {
  return `${b[offset]}.${b[offset + 1]}.${b[offset + 2]}.${b[offset + 3]}`;
}
