import { describe, expect, it } from 'vitest';
import {
  AF_INET,
  AF_UNSPEC,
  CTA_MARK,
  CTA_MARK_MASK,
  CTA_NAT_DST,
  CTA_NAT_SRC,
  CTA_TUPLE_ORIG,
  CTA_TUPLE_REPLY,
  IPCTNL_MSG_CT_DELETE,
  IPCTNL_MSG_CT_GET,
  IPCTNL_MSG_CT_NEW,
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPS_ASSURED,
  IPS_CONFIRMED,
  IPS_DST_NAT,
  IPS_SEEN_REPLY,
  IPS_SRC_NAT,
  TCP_CONNTRACK_ESTABLISHED,
  ctnlType,
  decodeEntry,
  encodeCreate,
  encodeDelete,
  encodeDeleteByMark,
  encodeDump,
  encodeFlush,
  encodeGet,
  eventType,
  inverse,
  statusNames,
  type ConntrackCreate,
} from '../../src/netlink/ctnetlink.js';
import {
  NLMSG_DONE,
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_EXCL,
  NetlinkParseError,
  attributeMap,
  parseMessages,
  type NetlinkMessage,
} from '../../src/netlink/message.js';
import { KERNEL_DESTROY_EVENT, KERNEL_DUMP } from './netlink-samples.js';
import { prng } from '../support/prng.js';

const entryMessages = (buf: Buffer): NetlinkMessage[] => parseMessages(buf).filter((m) => m.type !== NLMSG_DONE);

describe('ctnetlink codec', () => {
  it('decodes a dump the kernel produced, NAT bindings and all', () => {
    const msgs = parseMessages(KERNEL_DUMP);
    expect(msgs.map((m) => m.type)).toEqual([ctnlType(IPCTNL_MSG_CT_NEW), ctnlType(IPCTNL_MSG_CT_NEW), NLMSG_DONE]);
    const [fullnat, dnat] = msgs.slice(0, 2).map((m) => decodeEntry(m)!);
    expect(fullnat).toMatchObject({
      orig: { src: '198.51.100.20', dst: '203.0.113.13', sport: 50000, dport: 7, proto: IPPROTO_TCP },
      reply: { src: '198.18.0.103', dst: '198.18.0.13', sport: 7, dport: 20000, proto: IPPROTO_TCP },
      mark: 4,
      tcpState: TCP_CONNTRACK_ESTABLISHED,
    });
    expect(fullnat!.timeout).toBeGreaterThan(100);
    expect(fullnat!.timeout).toBeLessThanOrEqual(120);
    expect(fullnat!.status & (IPS_SRC_NAT | IPS_DST_NAT | IPS_ASSURED | IPS_SEEN_REPLY | IPS_CONFIRMED)).toBe(
      IPS_SRC_NAT | IPS_DST_NAT | IPS_ASSURED | IPS_SEEN_REPLY | IPS_CONFIRMED,
    );
    expect(statusNames(dnat!.status)).toContain('DST_NAT');
    expect(statusNames(dnat!.status)).not.toContain('|SRC_NAT|');
    expect(dnat).toMatchObject({
      orig: { src: '198.51.100.10', dst: '203.0.113.10', sport: 40000, dport: 80 },
      reply: { src: '198.18.0.101', dst: '198.51.100.10', sport: 80, dport: 40000 },
      mark: 1,
    });
    expect(dnat!.id).toBeTypeOf('number');
    expect(dnat!.tcpWindow).toBeDefined();
    expect(msgs.slice(0, 2).map(eventType)).toEqual(['update', 'update']);
  });

  it('decodes a destroy event', () => {
    const [msg] = parseMessages(KERNEL_DESTROY_EVENT);
    expect(msg!.type).toBe(ctnlType(IPCTNL_MSG_CT_DELETE));
    expect(eventType(msg!)).toBe('destroy');
    const e = decodeEntry(msg!)!;
    expect(e.orig).toEqual({ src: '198.51.100.10', dst: '203.0.113.10', sport: 40000, dport: 80, proto: IPPROTO_TCP });
    expect(e.mark).toBe(1);
    expect(e.tcpWindow).toBeUndefined();
  });

  it('writes a NAT entry as conntrackd does: plain inverse reply tuple plus CTA_NAT_DST / CTA_NAT_SRC', () => {
    const entry: ConntrackCreate = {
      orig: { src: '198.51.100.10', dst: '203.0.113.13', sport: 40001, dport: 7, proto: IPPROTO_TCP },
      dnat: { address: '198.18.0.102', port: 7 },
      snat: { address: '198.18.0.13', port: 20001 },
      timeout: 300,
      mark: 4,
      tcpState: TCP_CONNTRACK_ESTABLISHED,
      tcpWindow: { wscaleOriginal: 7, wscaleReply: 6, flagsOriginal: 0x23, flagsReply: 0x21 },
    };
    const [msg] = parseMessages(encodeCreate(entry, 77));
    expect(msg).toMatchObject({ type: ctnlType(IPCTNL_MSG_CT_NEW), seq: 77 });
    expect(msg!.flags & (NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK)).toBe(NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK);
    expect(msg!.payload[0]).toBe(AF_INET);
    const attrs = attributeMap(msg!.payload.subarray(4));
    expect(attrs.has(CTA_NAT_DST) && attrs.has(CTA_NAT_SRC)).toBe(true);
    // The message carries the same attributes a dump does: decode it back.
    const back = decodeEntry(msg!)!;
    expect(back.orig).toEqual(entry.orig);
    expect(back.reply).toEqual(inverse(entry.orig));
    expect(back.status).toBe(IPS_SEEN_REPLY | IPS_ASSURED | IPS_CONFIRMED);
    expect(back).toMatchObject({ timeout: 300, mark: 4, tcpState: 3, tcpWindow: entry.tcpWindow });
    expect(parseMessages(encodeCreate(entry, 1, false))[0]!.flags & NLM_F_ACK).toBe(0);
  });

  it('creates UDP entries without TCP protoinfo', () => {
    const orig = { src: '198.51.100.10', dst: '203.0.113.11', sport: 5353, dport: 53, proto: IPPROTO_UDP };
    const e = decodeEntry(parseMessages(encodeCreate({ orig, dnat: { address: '198.18.0.102', port: 53 }, timeout: 30, mark: 2 }, 1))[0]!)!;
    expect(e.orig).toEqual(orig);
    expect(e.tcpState).toBeUndefined();
  });

  it('filters dumps and deletes by mark in the kernel, with no tuple', () => {
    const [dump] = parseMessages(encodeDump(5, { mark: 3 }));
    expect(dump).toMatchObject({ type: ctnlType(IPCTNL_MSG_CT_GET), seq: 5 });
    expect(dump!.flags & NLM_F_DUMP).toBe(NLM_F_DUMP);
    expect(dump!.payload[0]).toBe(AF_INET);
    let attrs = attributeMap(dump!.payload.subarray(4));
    expect(attrs.get(CTA_MARK)!.readUInt32BE(0)).toBe(3);
    expect(attrs.get(CTA_MARK_MASK)!.readUInt32BE(0)).toBe(0xffffffff);
    expect(attributeMap(parseMessages(encodeDump(6))[0]!.payload.subarray(4)).size).toBe(0);

    const [del] = parseMessages(encodeDeleteByMark(3, 7, 0xffff));
    expect(del).toMatchObject({ type: ctnlType(IPCTNL_MSG_CT_DELETE), seq: 7 });
    expect(del!.payload[0]).toBe(AF_UNSPEC);
    attrs = attributeMap(del!.payload.subarray(4));
    expect([...attrs.keys()].sort((a, b) => a - b)).toEqual([CTA_MARK, CTA_MARK_MASK]);
    expect(attrs.get(CTA_MARK_MASK)!.readUInt32BE(0)).toBe(0xffff);
    expect(parseMessages(encodeFlush(8))[0]!.payload.length).toBe(4);
  });

  it('gets and deletes by the original tuple', () => {
    const orig = { src: '198.51.100.10', dst: '203.0.113.10', sport: 40000, dport: 80, proto: IPPROTO_TCP };
    for (const [buf, type] of [[encodeGet(orig, 1), IPCTNL_MSG_CT_GET], [encodeDelete(orig, 1), IPCTNL_MSG_CT_DELETE]] as const) {
      const [msg] = parseMessages(buf);
      expect(msg!.type).toBe(ctnlType(type));
      const attrs = attributeMap(msg!.payload.subarray(4));
      expect(attrs.has(CTA_TUPLE_ORIG)).toBe(true);
      expect(attrs.has(CTA_TUPLE_REPLY)).toBe(false);
    }
  });

  it('refuses a truncated entry with NetlinkParseError', () => {
    const [msg] = entryMessages(KERNEL_DUMP);
    expect(() => decodeEntry({ ...msg!, payload: msg!.payload.subarray(0, 2) })).toThrow(NetlinkParseError);
    expect(() => decodeEntry({ ...msg!, payload: msg!.payload.subarray(0, 30) })).toThrow(NetlinkParseError);
    expect(() => decodeEntry({ ...msg!, type: 3 })).toThrow(NetlinkParseError);
  });

  it('fuzz: random and mutated bytes raise NetlinkParseError or decode, nothing else', () => {
    const rand = prng(20261125);
    const samples = [...entryMessages(KERNEL_DUMP), ...parseMessages(KERNEL_DESTROY_EVENT)];
    let decoded = 0;
    let refused = 0;
    const attempt = (msg: NetlinkMessage): void => {
      try {
        decodeEntry(msg);
        decoded++;
      } catch (e) {
        if (!(e instanceof NetlinkParseError)) throw new Error(`escaped ${String(e)} for payload ${msg.payload.toString('hex')}`);
        refused++;
      }
    };
    for (let i = 0; i < 20000; i++) {
      const base = samples[i % samples.length]!;
      const payload = Buffer.from(base.payload);
      const flips = 1 + Math.floor(rand() * 6);
      for (let f = 0; f < flips; f++) payload[Math.floor(rand() * payload.length)] = Math.floor(rand() * 256);
      const cut = rand() < 0.3 ? Math.floor(rand() * payload.length) : payload.length;
      attempt({ ...base, payload: payload.subarray(0, cut) });
    }
    for (let i = 0; i < 5000; i++) {
      const payload = Buffer.alloc(Math.floor(rand() * 300));
      for (let j = 0; j < payload.length; j++) payload[j] = Math.floor(rand() * 256);
      if (payload.length) payload[0] = AF_INET;
      attempt({ length: 16 + payload.length, type: ctnlType(IPCTNL_MSG_CT_NEW), flags: 0, seq: 0, pid: 0, payload });
    }
    expect(decoded).toBeGreaterThan(1000);
    expect(refused).toBeGreaterThan(1000);
  });
});
