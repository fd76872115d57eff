import { describe, expect, it } from 'vitest';
import { NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NetlinkParseError, attributeMap, parseMessages } from '../../src/netlink/message.js';
import {
  AF_INET,
  IFA_ADDRESS,
  IFA_LABEL,
  IFA_LOCAL,
  IFLA_IFNAME,
  RTM_DELADDR,
  RTM_GETLINK,
  RTM_NEWADDR,
  RTM_NEWLINK,
  decodeAddress,
  decodeLink,
  encodeAddressRequest,
  encodeLinkByName,
  parseCidr,
} from '../../src/netlink/route.js';

describe('rtnetlink address codec', () => {
  it('encodes RTM_NEWADDR as ip addr add does, and decodes it back', () => {
    const buf = encodeAddressRequest(RTM_NEWADDR, 7, parseCidr('203.0.113.10/24'), 99, 'ext0:vip1');
    const [msg] = parseMessages(buf);
    expect(msg).toMatchObject({ type: RTM_NEWADDR, seq: 99 });
    expect(msg!.flags & (NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)).toBe(NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL);
    expect([...msg!.payload.subarray(0, 4)]).toEqual([AF_INET, 24, 0, 0]);
    expect(msg!.payload.readUInt32LE(4)).toBe(7);
    const attrs = attributeMap(msg!.payload.subarray(8));
    expect([...attrs.get(IFA_LOCAL)!]).toEqual([203, 0, 113, 10]);
    expect([...attrs.get(IFA_ADDRESS)!]).toEqual([203, 0, 113, 10]);
    expect(attrs.get(IFA_LABEL)!.toString()).toBe('ext0:vip1\0');
    expect(decodeAddress(msg!)).toEqual({ address: '203.0.113.10', prefixLength: 24, scope: 0, ifindex: 7, label: 'ext0:vip1' });
  });

  it('RTM_DELADDR asks for an ack but neither creates nor excludes', () => {
    const [msg] = parseMessages(encodeAddressRequest(RTM_DELADDR, 3, parseCidr('198.18.0.10'), 1));
    expect(msg!.type).toBe(RTM_DELADDR);
    expect(msg!.flags & (NLM_F_CREATE | NLM_F_EXCL)).toBe(0);
    expect(msg!.payload[1]).toBe(32);
  });

  it('resolves a link by name', () => {
    const [req] = parseMessages(encodeLinkByName('int0', 5));
    expect(req!.type).toBe(RTM_GETLINK);
    expect(attributeMap(req!.payload.subarray(16)).get(IFLA_IFNAME)!.toString()).toBe('int0\0');
    const reply = { ...req!, type: RTM_NEWLINK, payload: Buffer.from(req!.payload) };
    reply.payload.writeInt32LE(12, 4);
    expect(decodeLink(reply)).toEqual({ ifindex: 12, ifname: 'int0' });
  });

  it('refuses bad input with what is wrong', () => {
    expect(() => parseCidr('203.0.113.300/24')).toThrow(/203.0.113.300/);
    expect(() => parseCidr('203.0.113.1/33')).toThrow(/prefix/);
    expect(() => encodeLinkByName('a-name-longer-than-15', 1)).toThrow(/interface name/);
    const [msg] = parseMessages(encodeAddressRequest(RTM_NEWADDR, 1, parseCidr('203.0.113.1/24'), 1));
    expect(() => decodeAddress({ ...msg!, payload: msg!.payload.subarray(0, 6) })).toThrow(NetlinkParseError);
  });
});
