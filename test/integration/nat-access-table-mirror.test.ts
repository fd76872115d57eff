import { spawn } from 'node:child_process';
import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AccessTableMirror, BARRIER_MARK } from '../../src/nat/access-table-mirror.js';
import { Conntrack } from '../../src/netlink/conntrack.js';
import { IPPROTO_TCP, IPPROTO_UDP, IPS_ASSURED, IPS_SEEN_REPLY, TCP_CONNTRACK_ESTABLISHED, TCP_CONNTRACK_SYN_RECV } from '../../src/netlink/ctnetlink.js';
import { RECORD_SIZE, readRecord, writeRecord, type EntryRecord, rec } from '../../src/netlink/entry-record.js';
import { createNs, deleteNs, inNs, removeLeftovers } from './netlink-netns.js';

const logger = pino({ level: 'silent' });
const VIP1 = 1;
const VIP4 = 4;

/** n records of a VIP, distinct client ports from `first`: dnat for VIP1, fullnat for VIP4. */
function records(mark: number, first: number, n: number, proto = IPPROTO_TCP): Buffer {
  const b = Buffer.alloc(n * RECORD_SIZE);
  for (let i = 0; i < n; i++) {
    const r: EntryRecord = {
      client: { address: `198.51.100.${10 + (i % 200)}`, port: first + Math.floor(i / 200) },
      vip: { address: mark === VIP1 ? '203.0.113.10' : '203.0.113.13', port: 7 },
      server: { address: '198.18.0.101', port: 7 },
      ...(mark === VIP4 ? { inside: { address: '198.18.0.13', port: 1024 + ((first + i) % 60000) } } : {}),
      proto,
      tcpState: proto === IPPROTO_TCP ? (i % 2 ? TCP_CONNTRACK_ESTABLISHED : TCP_CONNTRACK_SYN_RECV) : 0,
      tcpWindow: proto === IPPROTO_TCP ? { wscaleOriginal: 7, wscaleReply: 9, flagsOriginal: 0x23, flagsReply: 0x03 } : { wscaleOriginal: 0, wscaleReply: 0, flagsOriginal: 0, flagsReply: 0 },
      status: IPS_SEEN_REPLY | IPS_ASSURED,
      timeout: 600,
      mark,
    };
    writeRecord(b, i * RECORD_SIZE, r);
  }
  return b;
}

/**
 * The records of a buffer as sorted hex strings; timeouts blanked (the kernel's run down) and
 * status too (the kernel adds bits of its own, CONFIRMED and NAT done, to what a create asks for).
 */
function canonical(b: Buffer): string[] {
  const out: string[] = [];
  for (let o = 0; o < b.length; o += RECORD_SIZE) {
    const r = Buffer.from(b.subarray(o, o + RECORD_SIZE));
    rec.setTimeout(r, 0, 0);
    rec.setStatus(r, 0, 0);
    out.push(r.toString('hex'));
  }
  return out.sort();
}

async function dumped(ct: Conntrack, mark: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await ct.dumpRecords(mark, (c) => chunks.push(c));
  return Buffer.concat(chunks);
}

async function waitFor(ok: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await ok())) {
    if (Date.now() > until) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const records0 = (b: Buffer | undefined): EntryRecord[] => (b ? Array.from({ length: b.length / RECORD_SIZE }, (_, i) => readRecord(b, i * RECORD_SIZE)) : []);

/** Until the mirror has seen an overrun and rebuilt itself. */
async function rebuilt(mirror: AccessTableMirror, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(mirror.status().overruns > 0 && mirror.status().synced)) {
    if (Date.now() > until) throw new Error('the mirror did not resynchronise');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('the access table mirror, on the kernel', () => {
  let ns: string;
  let ct: Conntrack;
  const mirrors: AccessTableMirror[] = [];

  beforeAll(() => {
    removeLeftovers();
    ns = createNs('m');
    // As the appliance sets it (src/kernel/sysctl.ts): entries made before a mirror listened report their end too.
    inNs(ns, 'sysctl', ['-qw', 'net.netfilter.nf_conntrack_events=1']);
    ct = new Conntrack({ netns: ns, batchRecords: 500 });
  });
  afterAll(() => {
    for (const m of mirrors) m.close();
    ct?.close();
    if (ns) deleteNs(ns);
  });
  beforeEach(async () => {
    await ct.flush();
  });

  const mirrorOf = (options: { eventBufferBytes?: number } = {}): AccessTableMirror => {
    const m = new AccessTableMirror(ct, [VIP1, VIP4], logger, options);
    mirrors.push(m);
    return m;
  };

  it('starts from the table as it is, learns what the appliance creates, and hears deletes', async () => {
    await ct.createFromRecords(records(VIP1, 20000, 300));
    await ct.createFromRecords(records(99, 20000, 50)); // another mark: not a VIP of this appliance
    const mirror = mirrorOf();
    await mirror.start();
    expect(mirror.count(VIP1)).toBe(300);
    expect(mirror.count(VIP4)).toBe(0);

    for (const batch of [records(VIP4, 30000, 400), records(VIP1, 40000, 200, IPPROTO_UDP)]) {
      const r = await ct.createFromRecords(batch);
      mirror.added(batch, r.failures);
    }
    for (let i = 0; i < 100; i += 3) await ct.delete({ src: `198.51.100.${10 + i}`, dst: '203.0.113.10', sport: 20000, dport: 7, proto: IPPROTO_TCP });

    for (const mark of [VIP1, VIP4]) {
      const snap = await mirror.snapshot(mark);
      expect(snap, `snapshot of mark ${mark}`).toBeDefined();
      expect(canonical(snap!)).toEqual(canonical(await dumped(ct, mark)));
    }
    expect(mirror.count(VIP1)).toBe(300 - 34 + 200);
    expect(mirror.count(VIP4)).toBe(400);
    const status = mirror.status();
    expect(status.synced).toBe(true);
    expect(status.malformed).toBe(0);
    expect(status.barriers).toMatchObject({ passed: 2, failed: 0 });
  });

  it('follows a real TCP connection from its first update to its end', async () => {
    // Conntrack tracks the namespace's own traffic once a rule uses it; the rule marks it as VIP1's.
    inNs(ns, 'nft', ['-f', '-'], `table inet vtmirror {\n chain out {\n  type filter hook output priority 0;\n  tcp dport 7777 ct mark set ${VIP1}\n }\n}\n`);
    const mirror = mirrorOf();
    await mirror.start();
    // A TCP echo server and a client that stays connected, as node processes in the namespace.
    const server = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', "require('net').createServer((s) => s.pipe(s)).listen(7777, '127.0.0.1')"]);
    try {
      await waitFor(() => inNs(ns, 'ss', ['-ltn']).includes('127.0.0.1:7777'));
      const client = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', "const c = require('net').connect(7777, '127.0.0.1', () => c.write('ping'))"]);
      await waitFor(async () => ((await mirror.snapshot(VIP1))?.length ?? 0) === RECORD_SIZE);
      const [entry] = records0(await mirror.snapshot(VIP1));
      expect(entry).toMatchObject({ client: { address: '127.0.0.1' }, vip: { address: '127.0.0.1', port: 7777 }, tcpState: TCP_CONNTRACK_ESTABLISHED, mark: VIP1 });
      expect(canonical((await mirror.snapshot(VIP1))!)).toEqual(canonical(await dumped(ct, VIP1)));
      client.kill();
      await ct.flush(); // the entry's end, as a timeout or a flush reports it
      await waitFor(async () => (await mirror.snapshot(VIP1))?.length === 0);
    } finally {
      server.kill();
      inNs(ns, 'nft', ['delete', 'table', 'inet', 'vtmirror']);
    }
  });

  it('a snapshot taken right after a delete has lost the entry (the barrier waits for its event)', async () => {
    const mirror = mirrorOf();
    const batch = records(VIP4, 1000, 5000);
    await ct.createFromRecords(batch);
    await mirror.start();
    for (let round = 0; round < 5; round++) {
      await ct.delete({ src: `198.51.100.${10 + round}`, dst: '203.0.113.13', sport: 1000, dport: 7, proto: IPPROTO_TCP });
      const snap = await mirror.snapshot(VIP4);
      expect(snap!.length / RECORD_SIZE, `round ${round}`).toBe(5000 - round - 1);
    }
  });

  it('exports the timeout the kernel last reported (traffic refreshes it without an event)', async () => {
    await ct.createFromRecords(records(VIP1, 50000, 10));
    const mirror = mirrorOf();
    await mirror.start();
    await new Promise((r) => setTimeout(r, 1100));
    const snap = (await mirror.snapshot(VIP1))!;
    expect(snap.length).toBe(10 * RECORD_SIZE);
    for (let o = 0; o < snap.length; o += RECORD_SIZE) expect(rec.timeout(snap, o)).toBeGreaterThan(590);
  });

  it('leaves no sentinel behind', async () => {
    const mirror = mirrorOf();
    await mirror.start();
    await mirror.snapshot(VIP1);
    await new Promise((r) => setTimeout(r, 50));
    expect((await ct.countByMark()).get(BARRIER_MARK) ?? 0).toBe(0);
  });

  it('after an event overrun (ENOBUFS) refuses to vouch, then rebuilds itself from a dump', async () => {
    await ct.createFromRecords(records(VIP4, 10000, 20_000));
    const mirror = mirrorOf({ eventBufferBytes: 4096 });
    await mirror.start();
    // A bulk delete's destroy events overrun a 4 KiB event buffer.
    for (let i = 0; i < 200; i++) await ct.delete({ src: `198.51.100.${10 + i}`, dst: '203.0.113.13', sport: 10000, dport: 7, proto: IPPROTO_TCP });
    await ct.createFromRecords(records(VIP1, 60000, 100));
    await ct.deleteByMark(VIP1);
    await rebuilt(mirror);
    const status = mirror.status();
    expect(status.overruns).toBeGreaterThan(0);
    expect(status.resyncs).toBeGreaterThan(1);
    const snap = await mirror.snapshot(VIP4);
    expect(snap).toBeDefined();
    expect(canonical(snap!)).toEqual(canonical(await dumped(ct, VIP4)));
    expect(mirror.count(VIP4)).toBe(20_000 - 200);
  });
});
