import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Conntrack, type ConntrackEvents } from '../../src/netlink/conntrack.js';
import {
  IPPROTO_TCP,
  IPS_ASSURED,
  IPS_DST_NAT,
  IPS_SEEN_REPLY,
  IPS_SEQ_ADJUST,
  IPS_SRC_NAT,
  TCP_CONNTRACK_ESTABLISHED,
  TCP_CONNTRACK_SYN_SENT,
  type ConntrackCreate,
  type ConntrackEntry,
} from '../../src/netlink/ctnetlink.js';
import { RECORD_SIZE, readRecord, rec, writeRecord, type EntryRecord } from '../../src/netlink/entry-record.js';
import { createNs, deleteNs, inNs, removeLeftovers, sh } from './netlink-netns.js';

const window = { wscaleOriginal: 7, wscaleReply: 7, flagsOriginal: 0x23, flagsReply: 0x23 };

function dnatEntry(sport: number, mark: number): ConntrackCreate {
  return {
    orig: { src: '198.51.100.10', dst: '203.0.113.10', sport, dport: 80, proto: IPPROTO_TCP },
    dnat: { address: '198.18.0.101', port: 80 },
    timeout: 300,
    mark,
    tcpState: TCP_CONNTRACK_ESTABLISHED,
    tcpWindow: window,
  };
}

function recordsOf(rs: EntryRecord[]): Buffer {
  const b = Buffer.alloc(rs.length * RECORD_SIZE);
  rs.forEach((r, i) => writeRecord(b, i * RECORD_SIZE, r));
  return b;
}

/** n fullnat records of one mark, distinct client ports. */
function fullnatRecords(n: number, mark: number, firstPort = 10000): Buffer {
  return recordsOf(
    Array.from({ length: n }, (_, i) => ({
      client: { address: '198.51.100.20', port: firstPort + i },
      vip: { address: '203.0.113.13', port: 7 },
      server: { address: '198.18.0.103', port: 7 },
      inside: { address: '198.18.0.13', port: firstPort + i }, // reply tuples must be unique too
      proto: IPPROTO_TCP,
      tcpState: TCP_CONNTRACK_ESTABLISHED,
      tcpWindow: window,
      status: IPS_SEEN_REPLY | IPS_ASSURED,
      timeout: 300,
      mark,
    })),
  );
}

const until = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('Conntrack (ctnetlink) in a namespace', () => {
  let ns: string;
  let ct: Conntrack;

  beforeAll(() => {
    removeLeftovers();
    ns = createNs('c');
    ct = new Conntrack({ netns: ns, batchRecords: 500 });
  });
  afterAll(() => {
    ct?.close();
    if (ns) deleteNs(ns);
  });

  it('creates dnat and fullnat entries that the kernel translates, as conntrack -L shows them', async () => {
    await ct.flush();
    const created = await ct.create([dnatEntry(40000, 1)]);
    expect(created).toEqual({ created: 1, existing: 0, failures: [] });
    const fromRecords = await ct.createFromRecords(fullnatRecords(1, 4, 50000));
    expect(fromRecords).toEqual({ created: 1, existing: 0, failures: [] });

    const listed = inNs(ns, 'conntrack', ['-L'], undefined);
    expect(listed).toMatch(/src=198\.51\.100\.10 dst=203\.0\.113\.10 sport=40000 dport=80 src=198\.18\.0\.101 dst=198\.51\.100\.10 sport=80 dport=40000 .*mark=1/);
    expect(listed).toMatch(/src=198\.51\.100\.20 dst=203\.0\.113\.13 sport=50000 dport=7 src=198\.18\.0\.103 dst=198\.18\.0\.13 sport=7 dport=50000 .*mark=4/);

    const all = await ct.dump();
    const dnat = all.find((e) => e.mark === 1)!;
    const fullnat = all.find((e) => e.mark === 4)!;
    expect(dnat.status & IPS_DST_NAT).toBe(IPS_DST_NAT);
    expect(dnat.status & IPS_SRC_NAT).toBe(0);
    expect(fullnat.status & (IPS_DST_NAT | IPS_SRC_NAT)).toBe(IPS_DST_NAT | IPS_SRC_NAT);
    expect(dnat.tcpState).toBe(TCP_CONNTRACK_ESTABLISHED);
    expect(dnat.tcpWindow).toEqual(window);
    expect(await ct.get(dnatEntry(40000, 1).orig)).toMatchObject({ reply: { src: '198.18.0.101', dport: 40000 } });

    // Creating again is a repeated step, not a failure.
    expect(await ct.create([dnatEntry(40000, 1)])).toEqual({ created: 0, existing: 1, failures: [] });
    expect(await ct.delete(dnatEntry(40000, 1).orig)).toBe(true);
    expect(await ct.delete(dnatEntry(40000, 1).orig)).toBe(false);
    expect(await ct.get(dnatEntry(40000, 1).orig)).toBeUndefined();
  });

  it("accepts a create with conntrack's seqadj and synproxy extensions (a connection SYNPROXY opened) and dumps them back as given", async () => {
    await ct.flush();
    const seqAdj = { original: { correctionPos: 0, offsetBefore: 0, offsetAfter: 0 }, reply: { correctionPos: 0, offsetBefore: 0x9abcdef0, offsetAfter: 0x9abcdef0 } };
    const synproxy = { isn: 0x12345678, its: 0x0badf00d, tsoff: 0xfffffff0 };
    const base = readRecord(fullnatRecords(1, 4, 51000));
    const input = recordsOf([
      { ...base, seqAdj, synproxy },
      { ...base, client: { ...base.client, port: 51001 }, inside: { address: '198.18.0.13', port: 51001 }, synproxy },
      { ...base, client: { ...base.client, port: 51002 }, inside: { address: '198.18.0.13', port: 51002 } },
    ]);
    expect(await ct.createFromRecords(input)).toEqual({ created: 3, existing: 0, failures: [] });
    const chunks: Buffer[] = [];
    await ct.dumpRecords(4, (c) => chunks.push(c));
    const back = Buffer.concat(chunks);
    const byPort = new Map<number, EntryRecord>();
    for (let o = 0; o < back.length; o += RECORD_SIZE) byPort.set(readRecord(back, o).client.port, readRecord(back, o));
    expect(byPort.get(51000)!.seqAdj).toEqual(seqAdj);
    expect(byPort.get(51000)!.status & IPS_SEQ_ADJUST).toBe(IPS_SEQ_ADJUST);
    expect(byPort.get(51000)!.synproxy).toEqual(synproxy);
    expect(byPort.get(51001)!.seqAdj).toBeUndefined();
    expect(byPort.get(51001)!.synproxy).toEqual(synproxy);
    // Every created entry has the extension, zeroed: read as none.
    expect(byPort.get(51002)!.seqAdj).toBeUndefined();
    expect(byPort.get(51002)!.synproxy).toBeUndefined();
    // The object decoder agrees.
    expect((await ct.get({ src: '198.51.100.20', dst: '203.0.113.13', sport: 51000, dport: 7, proto: IPPROTO_TCP }))!.seqAdj).toEqual(seqAdj);
  });

  it('reports a refused create by index and errno', async () => {
    await ct.flush();
    const bad = fullnatRecords(3, 4);
    bad[RECORD_SIZE + 25] = 42; // record 1: a TCP state beyond TCP_CONNTRACK_MAX
    const r = await ct.createFromRecords(bad);
    expect(r.created).toBe(2);
    expect(r.failures).toHaveLength(1);
    expect(r.failures[0]!.index).toBe(1);
    // The attribute policy refuses it: ERANGE on 6.x, EINVAL on older kernels.
    expect(['ERANGE', 'EINVAL']).toContain(r.failures[0]!.code);
  });

  it('dumps by mark only that mark, and deletes by mark leaving the others', async () => {
    await ct.flush();
    const r = await ct.createFromRecords(Buffer.concat([fullnatRecords(1200, 4), fullnatRecords(300, 5, 30000)]));
    expect(r).toEqual({ created: 1500, existing: 0, failures: [] });
    await ct.create([dnatEntry(40001, 1)]);

    const chunks: Buffer[] = [];
    const dumped = await ct.dumpRecords(4, (c) => chunks.push(c), 500);
    expect(dumped).toEqual({ records: 1200, skipped: 0 });
    expect(chunks.map((c) => c.length / RECORD_SIZE)).toEqual([500, 500, 200]);
    const records = Buffer.concat(chunks);
    const ports = new Set<number>();
    for (let o = 0; o < records.length; o += RECORD_SIZE) {
      const rec = readRecord(records, o);
      expect(rec.mark).toBe(4);
      expect(rec.inside?.address).toBe('198.18.0.13');
      ports.add(rec.client.port);
    }
    expect(ports.size).toBe(1200);
    expect((await ct.dump({ mark: 5 })).every((e: ConntrackEntry) => e.mark === 5)).toBe(true);
    expect([await ct.count(4), await ct.count(5), await ct.count(1), await ct.count()]).toEqual([1200, 300, 1, 1501]);
    // One dump, counted by mark, agrees with the filtered dumps.
    expect(Object.fromEntries(await ct.countByMark())).toEqual({ 4: 1200, 5: 300, 1: 1 });

    await ct.deleteByMark(4);
    expect([await ct.count(4), await ct.count(5), await ct.count(1)]).toEqual([0, 300, 1]);
    await ct.deleteByMark(4); // nothing left: still fine
    // Filtered by status too, inside the kernel: the entries of mark 5 never answered go, the others stay.
    const unanswered = fullnatRecords(20, 5, 31000);
    for (let o = 0; o < unanswered.length; o += RECORD_SIZE) {
      rec.setStatus(unanswered, o, IPS_DST_NAT | IPS_SRC_NAT);
      rec.setTcpState(unanswered, o, TCP_CONNTRACK_SYN_SENT);
    }
    expect((await ct.createFromRecords(unanswered)).created).toBe(20);
    expect(await ct.count(5)).toBe(320);
    await ct.deleteByMark(5, 0xffffffff, { value: 0, mask: IPS_SEEN_REPLY });
    expect([await ct.count(5), await ct.count(1)]).toEqual([300, 1]);
    // Re-created from the dumped records, they are whole again.
    expect(await ct.createFromRecords(records)).toEqual({ created: 1200, existing: 0, failures: [] });
    expect(await ct.count(4)).toBe(1200);
  });

  it('reports events, and an overrun on a tiny buffer without dying', async () => {
    await ct.flush();
    // With nf_conntrack_events=2 (the default) only entries created while a listener
    // exists report events: subscribe first.
    const events: ConntrackEvents = ct.subscribe();
    const seen: { type: string; mark: number }[] = [];
    for (const type of ['new', 'update', 'destroy'] as const) events.on(type, (e: ConntrackEntry) => seen.push({ type, mark: e.mark }));
    const tiny = ct.subscribe({ groups: ['new'], receiveBufferBytes: 4096 });
    let overruns = 0;
    tiny.on('overrun', () => overruns++);
    try {
      await ct.createFromRecords(fullnatRecords(3, 6));
      await until(100);
      expect(seen.filter((s) => s.type === 'new' && s.mark === 6)).toHaveLength(3);
      await ct.deleteByMark(6);
      await until(100);
      expect(seen.filter((s) => s.type === 'destroy' && s.mark === 6)).toHaveLength(3);

      await ct.createFromRecords(fullnatRecords(3000, 7));
      await until(200);
      expect(overruns).toBeGreaterThan(0);
      expect(tiny.overruns).toBe(overruns);
      // Still alive, and the owner can resynchronise by a dump.
      expect(await ct.count(7)).toBe(3000);
    } finally {
      events.close();
      tiny.close();
    }
  });
});

/** A child process in a namespace whose stdout we can wait on, line by line. */
class Child {
  readonly proc: ChildProcessWithoutNullStreams;
  out = '';
  constructor(ns: string, script: string) {
    this.proc = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', script]);
    this.proc.stdout.on('data', (d: Buffer) => (this.out += d.toString()));
    this.proc.stderr.on('data', (d: Buffer) => (this.out += d.toString()));
  }
  async waitFor(text: string, ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.out.includes(text)) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for "${text}"; output so far: ${this.out}`);
      await until(20);
    }
  }
  kill(): void {
    if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
  }
}

const ECHO_SERVER = `require('net').createServer((s) => { s.on('error', () => {}); s.pipe(s); }).listen(7, '198.18.0.101', () => console.log('listening'));`;
const CLIENT = `
const s = require('net').connect({ host: '203.0.113.10', port: 7, localPort: 41000 });
s.on('connect', () => console.log('connected'));
s.on('data', (d) => process.stdout.write('echo:' + d));
s.on('error', (e) => console.log('error:' + e.code));
s.on('close', () => console.log('closed'));
process.stdin.on('data', (d) => s.write(d));`;

describe('a live connection through dnat survives its entry being deleted and re-created from a record', () => {
  let client: string, lb: string, server: string;
  const children: Child[] = [];

  beforeAll(() => {
    removeLeftovers();
    client = createNs('cl');
    lb = createNs('lb');
    server = createNs('sv');
    sh('ip', ['-n', lb, 'link', 'add', 'ext0', 'type', 'veth', 'peer', 'name', 'c0', 'netns', client]);
    sh('ip', ['-n', lb, 'link', 'add', 'int0', 'type', 'veth', 'peer', 'name', 's0', 'netns', server]);
    for (const [n, dev, addr] of [
      [client, 'c0', '198.51.100.10/24'],
      [lb, 'ext0', '198.51.100.1/24'],
      [lb, 'ext0', '203.0.113.10/32'],
      [lb, 'int0', '198.18.0.1/24'],
      [server, 's0', '198.18.0.101/24'],
    ] as const) {
      sh('ip', ['-n', n, 'addr', 'add', addr, 'dev', dev]);
      sh('ip', ['-n', n, 'link', 'set', dev, 'up']);
    }
    sh('ip', ['-n', client, 'route', 'add', 'default', 'via', '198.51.100.1']);
    sh('ip', ['-n', server, 'route', 'add', 'default', 'via', '198.18.0.1']);
    inNs(lb, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    inNs(lb, 'sysctl', ['-qw', 'net.netfilter.nf_conntrack_tcp_loose=0']);
    // The dnat rule only sees first packets; the filter rule uses ct so conntrack stays on
    // in this namespace whatever happens to NAT (docs/architecture.md, kernel facts), and drops what it cannot track.
    inNs(lb, 'nft', ['-f', '-'], `
table ip vtnet {
  chain pre {
    type nat hook prerouting priority dstnat;
    ip daddr 203.0.113.10 tcp dport 7 ct mark set 1 dnat to 198.18.0.101
  }
  chain ctfilter {
    type filter hook forward priority filter;
    ct state invalid counter drop
  }
}`);
  });
  afterAll(() => {
    for (const c of children) c.kill();
    for (const n of [client, lb, server]) if (n) deleteNs(n);
  });

  it('keeps echoing with no reset', async () => {
    const echo = new Child(server, ECHO_SERVER);
    children.push(echo);
    await echo.waitFor('listening');
    const tcp = new Child(client, CLIENT);
    children.push(tcp);
    await tcp.waitFor('connected');
    tcp.proc.stdin.write('one\n');
    await tcp.waitFor('echo:one');

    const ct = new Conntrack({ netns: lb });
    try {
      const chunks: Buffer[] = [];
      expect(await ct.dumpRecords(1, (c) => chunks.push(c))).toEqual({ records: 1, skipped: 0 });
      const record = chunks[0]!;
      expect(readRecord(record)).toMatchObject({
        client: { address: '198.51.100.10', port: 41000 },
        vip: { address: '203.0.113.10', port: 7 },
        server: { address: '198.18.0.101', port: 7 },
        tcpState: TCP_CONNTRACK_ESTABLISHED,
        mark: 1,
      });

      await ct.deleteByMark(1);
      expect(await ct.count(1)).toBe(0);
      expect(await ct.createFromRecords(record)).toEqual({ created: 1, existing: 0, failures: [] });

      tcp.proc.stdin.write('two\n');
      await tcp.waitFor('echo:two');
      tcp.proc.stdin.write('three\n');
      await tcp.waitFor('echo:three');
      expect(tcp.out).not.toMatch(/error:|closed/);
      const [entry] = await ct.dump({ mark: 1 });
      expect(entry!.status & IPS_DST_NAT).toBe(IPS_DST_NAT);
      expect(inNs(lb, 'nft', ['list', 'chain', 'ip', 'vtnet', 'ctfilter'])).toMatch(/counter packets 0 /);
    } finally {
      ct.close();
    }
  });
});
