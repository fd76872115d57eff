import { describe, expect, it } from 'vitest';
import {
  AttributeWriter,
  NLMSG_ERROR,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NetlinkParseError,
  attributeMap,
  encodeMessage,
  parseAck,
  parseAttributes,
  parseMessages,
} from '../../src/netlink/message.js';

describe('netlink messages', () => {
  it('round-trips a message with nested attributes', () => {
    const payload = new AttributeWriter(8)
      .u32be(1, 0xdeadbeef)
      .nest(2, (w) => w.u16be(3, 80).u8(4, 6))
      .string(5, 'vip1')
      .toBuffer();
    const msg = encodeMessage(0x0100, 0x05, 42, payload);
    expect(msg.length % 4).toBe(0);
    const [parsed] = parseMessages(Buffer.concat([msg, encodeMessage(3, 0, 43, Buffer.alloc(4))])).slice(0, 1);
    expect(parsed).toMatchObject({ type: 0x0100, flags: 0x05, seq: 42 });
    const attrs = parseAttributes(parsed!.payload);
    expect(attrs.map((a) => [a.type, a.nested])).toEqual([
      [1, false],
      [2, true],
      [5, false],
    ]);
    expect(attrs[0]!.value.readUInt32BE(0)).toBe(0xdeadbeef);
    const inner = attributeMap(attrs[1]!.value);
    expect(inner.get(3)!.readUInt16BE(0)).toBe(80);
    expect(inner.get(4)![0]).toBe(6);
    expect(attrs[2]!.value.toString()).toBe('vip1\0');
  });

  it('refuses lengths that run past the datagram', () => {
    const msg = encodeMessage(16, 0, 1, Buffer.alloc(8));
    msg.writeUInt32LE(64, 0);
    expect(() => parseMessages(msg)).toThrow(NetlinkParseError);
    const attr = Buffer.from([0x20, 0, 1, 0, 0, 0, 0, 0]);
    expect(() => parseAttributes(attr)).toThrow(NetlinkParseError);
  });

  it('reads an extended ack with the kernel message', () => {
    const ext = new AttributeWriter().string(1, 'missing CTA_TUPLE_ORIG').toBuffer();
    const payload = Buffer.alloc(4 + 16 + ext.length);
    payload.writeInt32LE(-22, 0);
    payload.writeUInt32LE(36, 4);
    payload.writeUInt16LE(0x0100, 8);
    payload.writeUInt32LE(7, 12);
    ext.copy(payload, 20);
    const ack = parseAck({ length: 0, type: NLMSG_ERROR, flags: NLM_F_CAPPED | NLM_F_ACK_TLVS, seq: 7, pid: 0, payload });
    expect(ack).toEqual({ errno: 22, seq: 7, requestType: 0x0100, extAckMessage: 'missing CTA_TUPLE_ORIG' });
  });
});
