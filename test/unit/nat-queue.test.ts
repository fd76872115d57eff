import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { NetlinkParseError, parseMessages } from '../../src/netlink/message.js';
import {
  AF_INET,
  NFQA_CFG_F_FAIL_OPEN,
  NFQNL_CFG_CMD_BIND,
  NFQNL_COPY_META,
  NF_ACCEPT,
  NF_DROP,
  VERDICT_MESSAGE_LEN,
  decodeConfig,
  decodePacket,
  decodeVerdict,
  encodeConfig,
  encodePacket,
  encodeVerdict,
  encodeVerdicts,
  type QueuedPacket,
} from '../../src/netlink/queue.js';
import { HoldBook } from '../../src/nat/hold.js';
import { HOLD_MARK } from '../../src/nat/ruleset.js';

const one = (buf: Buffer) => {
  const msgs = parseMessages(buf);
  expect(msgs).toHaveLength(1);
  return msgs[0]!;
};

describe('nfnetlink_queue codec', () => {
  it('round-trips a configuration', () => {
    const c = {
      queue: 7,
      command: { command: NFQNL_CFG_CMD_BIND, pf: AF_INET },
      params: { copyMode: NFQNL_COPY_META, copyRange: 0xfffe },
      maxLength: 5000,
      flags: { mask: NFQA_CFG_F_FAIL_OPEN, value: 0 },
    };
    const buf = encodeConfig(c, 42);
    expect(one(buf).seq).toBe(42);
    expect(one(buf).type).toBe((3 << 8) | 2);
    expect(decodeConfig(one(buf))).toEqual(c);
  });

  it('round-trips queued packets, with and without optional attributes', () => {
    const packets: QueuedPacket[] = [
      { queue: 0, family: AF_INET, id: 1, hwProtocol: 0x0800, hook: 0 },
      { queue: 65535, family: AF_INET, id: 0xffffffff, hwProtocol: 0x0800, hook: 0, mark: (HOLD_MARK | 4) >>> 0, indev: 3 },
      { queue: 3, family: AF_INET, id: 77, hwProtocol: 0x0800, hook: 0, payload: Buffer.from('450000280001', 'hex'), capLength: 1500 },
    ];
    for (const p of packets) expect(decodePacket(one(encodePacket(p)))).toEqual(p);
  });

  it('round-trips verdicts, single, batch and many in one buffer, in order', () => {
    expect(decodeVerdict(one(encodeVerdict({ queue: 2, id: 9, verdict: NF_ACCEPT })))).toEqual({ queue: 2, id: 9, verdict: NF_ACCEPT });
    expect(decodeVerdict(one(encodeVerdict({ queue: 2, id: 9, verdict: NF_DROP, batch: true })))).toEqual({ queue: 2, id: 9, verdict: NF_DROP, batch: true });
    const buf = encodeVerdicts(1, [5, 3, 8], NF_ACCEPT);
    expect(buf.length).toBe(3 * VERDICT_MESSAGE_LEN);
    expect(parseMessages(buf).map((m) => decodeVerdict(m).id)).toEqual([5, 3, 8]);
  });

  it('refuses malformed packet messages with a parse error, never anything else (fuzz)', () => {
    const base = encodePacket({ queue: 1, family: AF_INET, id: 5, hwProtocol: 0x0800, hook: 0, mark: HOLD_MARK | 1 });
    let refused = 0;
    for (let i = 0; i < 20000; i++) {
      const buf = Buffer.from(base);
      // Mutate a few bytes, or truncate, or use random bytes behind a plausible header.
      const kind = i % 3;
      if (kind === 0) for (let k = 0; k < 3; k++) buf[Math.floor(Math.random() * buf.length)] = Math.floor(Math.random() * 256);
      const input = kind === 1 ? buf.subarray(0, Math.floor(Math.random() * buf.length)) : kind === 2 ? Buffer.concat([buf.subarray(0, 20), randomBytes(Math.floor(Math.random() * 40))]) : buf;
      if (kind === 2) input.writeUInt32LE(input.length, 0);
      try {
        for (const m of parseMessages(input)) decodePacket(m);
      } catch (e) {
        expect(e).toBeInstanceOf(NetlinkParseError);
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(1000);
  });
});

describe('hold bookkeeping', () => {
  const vips = [{ name: 'vip1', id: 1 }, { name: 'vip2', id: 2 }];
  const mark = (id: number) => (HOLD_MARK | id) >>> 0;

  it('holds in arrival order and releases with one batch verdict when the VIP is alone in the queue', () => {
    const book = new HoldBook(vips, 10);
    book.hold('vip1');
    for (const id of [10, 11, 12]) expect(book.arrive({ id, mark: mark(1) })).toBeUndefined();
    expect(book.counters('vip1')).toEqual({ held: 3, released: 0, overflowed: 0, dropped: 0 });
    expect(book.release('vip1')).toEqual({ verdict: NF_ACCEPT, ids: [10, 11, 12], batchUpTo: 12 });
    expect(book.counters('vip1')).toEqual({ held: 0, released: 3, overflowed: 0, dropped: 0 });
    // After the release, late arrivals pass at once.
    expect(book.arrive({ id: 13, mark: mark(1) })).toBe(NF_ACCEPT);
    expect(book.counters('vip1').released).toBe(4);
  });

  it('names its own ids when other VIPs are held in the same queue', () => {
    const book = new HoldBook(vips, 10);
    book.hold('vip1');
    book.hold('vip2');
    book.arrive({ id: 1, mark: mark(1) });
    book.arrive({ id: 2, mark: mark(2) });
    book.arrive({ id: 3, mark: mark(1) });
    expect(book.release('vip1')).toEqual({ verdict: NF_ACCEPT, ids: [1, 3] });
    // vip2 is now alone: a batch verdict up to its last id only covers its own packets.
    expect(book.discard('vip2')).toEqual({ verdict: NF_DROP, ids: [2], batchUpTo: 2 });
    expect(book.counters('vip2')).toEqual({ held: 0, released: 0, overflowed: 0, dropped: 1 });
    expect(book.arrive({ id: 4, mark: mark(2) })).toBe(NF_DROP);
  });

  it('drops and counts packets beyond the queue length', () => {
    const book = new HoldBook(vips, 2);
    book.hold('vip2');
    const verdicts = [1, 2, 3, 4].map((id) => book.arrive({ id, mark: mark(2) }));
    expect(verdicts).toEqual([undefined, undefined, NF_DROP, NF_DROP]);
    expect(book.counters('vip2')).toEqual({ held: 2, released: 0, overflowed: 2, dropped: 0 });
  });

  it('drops packets whose mark names no VIP, and counts them', () => {
    const book = new HoldBook(vips, 2);
    expect(book.arrive({ id: 1 })).toBe(NF_DROP);
    expect(book.arrive({ id: 2, mark: mark(99) })).toBe(NF_DROP);
    expect(book.arrive({ id: 3, mark: 1 })).toBe(NF_DROP);
    expect(book.unattributed).toBe(3);
  });
});
