/** Ethernet framing and MAC addresses. */

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERNET_HEADER_LENGTH = 14;

export function macToBytes(mac: string): Buffer {
  const parts = mac.split(/[:-]/);
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new Error(`not a MAC address: '${mac}'`);
  }
  return Buffer.from(parts.map((p) => parseInt(p, 16)));
}

export function bytesToMac(buf: Buffer, offset: number): string {
  const out: string[] = [];
  for (let i = 0; i < 6; i++) out.push((buf[offset + i] ?? 0).toString(16).padStart(2, '0'));
  return out.join(':');
}

export function encodeEthernetHeader(destinationMac: string, sourceMac: string, etherType: number): Buffer {
  const h = Buffer.alloc(ETHERNET_HEADER_LENGTH);
  macToBytes(destinationMac).copy(h, 0);
  macToBytes(sourceMac).copy(h, 6);
  h.writeUInt16BE(etherType, 12);
  return h;
}
