import { internetChecksum } from '../../src/packet/checksum.js';

/**
 * Recomputes the VRRP checksum of an Ethernet + IPv4 + VRRP frame after a test changed its
 * fields (RFC 5798 §5.2.8: over the IPv4 pseudo-header and the VRRP message).
 */
export function withVrrpChecksum(frame: Buffer): Buffer {
  const vrrp = frame.subarray(34, 14 + frame.readUInt16BE(16));
  vrrp.writeUInt16BE(0, 6);
  const pseudo = Buffer.alloc(12);
  frame.copy(pseudo, 0, 26, 34);
  pseudo[9] = 112;
  pseudo.writeUInt16BE(vrrp.length, 10);
  vrrp.writeUInt16BE(internetChecksum(pseudo, vrrp), 6);
  return frame;
}

/** The same for a VRRPv2 frame (RFC 3768 §5.3.8: over the VRRP message alone). */
export function withV2Checksum(frame: Buffer): Buffer {
  const vrrp = frame.subarray(34, 14 + frame.readUInt16BE(16));
  vrrp.writeUInt16BE(0, 6);
  vrrp.writeUInt16BE(internetChecksum(vrrp), 6);
  return frame;
}
