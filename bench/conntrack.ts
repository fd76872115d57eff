/**
 * The access table's hot paths on the real kernel, in throwaway network namespaces:
 * 100,000 TCP entries of one ct mark created (acked and unacked), dumped to records,
 * deleted by mark, and moved namespace to namespace as a migration moves them.
 * Run: npx tsx bench/conntrack.ts [entries] — prints a table, writes bench/results/conntrack.json.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { Conntrack } from '../src/netlink/conntrack.js';
import { IPPROTO_TCP, IPS_ASSURED, IPS_SEEN_REPLY, TCP_CONNTRACK_ESTABLISHED, encodeCreate, encodeDump } from '../src/netlink/ctnetlink.js';
import { CreateEncoder, RecordCollector } from '../src/netlink/entry-record-ctnetlink.js';
import { RECORD_SIZE, writeRecord } from '../src/netlink/entry-record.js';
import { NETLINK_NETFILTER } from '../src/netlink/message.js';
import { NetlinkSocket } from '../src/netlink/socket.js';

const N = Number(process.argv[2] ?? 100_000);
const RUNS = 3;
const MARK = 10;

/** N fullnat-free dnat records: distinct client address/port pairs, one VIP and server. */
function makeRecords(n: number): Buffer {
  const b = Buffer.alloc(n * RECORD_SIZE);
  for (let i = 0; i < n; i++) {
    writeRecord(b, i * RECORD_SIZE, {
      client: { address: `198.51.${100 + (i >> 16)}.${(i >> 8) & 255}`, port: 1024 + (i & 255) },
      vip: { address: '203.0.113.10', port: 80 },
      server: { address: '198.18.0.101', port: 80 },
      proto: IPPROTO_TCP,
      tcpState: TCP_CONNTRACK_ESTABLISHED,
      tcpWindow: { wscaleOriginal: 7, wscaleReply: 7, flagsOriginal: 0x23, flagsReply: 0x23 },
      status: IPS_SEEN_REPLY | IPS_ASSURED,
      timeout: 600,
      mark: MARK,
    });
  }
  return b;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (t0: number): number => Math.round((performance.now() - t0) * 10) / 10;

async function main(): Promise<void> {
  const tag = randomBytes(3).toString('hex');
  const nsA = `vtnetbA${tag}`;
  const nsB = `vtnetbB${tag}`;
  for (const ns of [nsA, nsB]) execFileSync('ip', ['netns', 'add', ns]);
  const results: Record<string, number[]> = {};
  const note = (name: string, value: number): void => void (results[name] ??= []).push(value);
  const records = makeRecords(N);
  try {
    const unacked = new Conntrack({ netns: nsA, batchRecords: 1000, ackEach: false });
    const acked = new Conntrack({ netns: nsA, batchRecords: 1000, ackEach: true });
    const small = new Conntrack({ netns: nsA, batchRecords: 500, ackEach: false });
    const large = new Conntrack({ netns: nsA, batchRecords: 2000, ackEach: false });
    const target = new Conntrack({ netns: nsB, batchRecords: 1000, ackEach: false });
    const check = (r: { created: number; failures: unknown[] }): void => {
      if (r.created !== N || r.failures.length) throw new Error(`created ${r.created} of ${N}: ${JSON.stringify({ ...r, failures: r.failures.slice(0, 3) })}`);
    };

    for (let run = 0; run < RUNS; run++) {
      await unacked.deleteByMark(MARK);
      let t = performance.now();
      check(await acked.createFromRecords(records));
      note('create, NLM_F_ACK on each (batch 1000)', ms(t));
      t = performance.now();
      await unacked.deleteByMark(MARK);
      note('delete by mark (one message)', ms(t));
      if ((await unacked.count(MARK)) !== 0) throw new Error('delete by mark left entries');

      for (const [name, c] of [['create, ack on last only (batch 500)', small], ['create, ack on last only (batch 2000)', large], ['create, ack on last only (batch 1000)', unacked]] as const) {
        await unacked.deleteByMark(MARK);
        t = performance.now();
        check(await c.createFromRecords(records));
        note(name, ms(t));
      }

      t = performance.now();
      let dumped = 0;
      await unacked.dumpRecords(MARK, (chunk) => (dumped += chunk.length / RECORD_SIZE));
      note('dump by mark to records', ms(t));
      if (dumped !== N) throw new Error(`dumped ${dumped} of ${N}`);

      t = performance.now();
      if ((await unacked.dump({ mark: MARK })).length !== N) throw new Error('object dump lost entries');
      note('dump by mark to objects (decodeEntry)', ms(t));

      // A migration on one box: dump namespace A by mark, create each chunk in B as it comes.
      await target.deleteByMark(MARK);
      t = performance.now();
      let creating: Promise<unknown> = Promise.resolve();
      let moved = 0;
      await unacked.dumpRecords(MARK, (chunk) => {
        creating = creating.then(async () => (moved += (await target.createFromRecords(chunk)).created));
      });
      await creating;
      note('move: dump A → create B, streamed', ms(t));
      if (moved !== N) throw new Error(`moved ${moved} of ${N}`);
      await target.deleteByMark(MARK);
    }

    // JavaScript alone, without the kernel.
    for (let run = 0; run < RUNS; run++) {
      const encoder = new CreateEncoder(1000, false);
      let t = performance.now();
      for (let first = 0; first < N; first += 1000) encoder.encode(records, first, Math.min(1000, N - first), 1);
      note('JS only: template encoder', ms(t));
      t = performance.now();
      for (let i = 0; i < N; i++) {
        const o = i * RECORD_SIZE;
        encodeCreate({
          orig: { src: `198.51.${records[o + 2]}.${records[o + 3]}`, dst: '203.0.113.10', sport: records.readUInt16BE(o + 16), dport: 80, proto: IPPROTO_TCP },
          dnat: { address: '198.18.0.101', port: 80 },
          timeout: 600,
          mark: MARK,
          tcpState: TCP_CONNTRACK_ESTABLISHED,
          tcpWindow: { wscaleOriginal: 7, wscaleReply: 7, flagsOriginal: 0x23, flagsReply: 0x23 },
        }, i);
      }
      note('JS only: generic encoder (AttributeWriter, for comparison)', ms(t));
    }
    // Decode alone: capture the dump's datagrams once, then time the collector over them.
    const datagrams: Buffer[] = [];
    const raw = new NetlinkSocket(NETLINK_NETFILTER, { netns: nsA, receiveBufferBytes: 16 << 20 });
    const seq = raw.reserveSeq();
    await raw.dumpDatagrams('dump', encodeDump(seq, { mark: MARK }), seq, (d) => datagrams.push(d));
    raw.close();
    for (let run = 0; run < RUNS; run++) {
      const collector = new RecordCollector(1000, () => undefined);
      const t = performance.now();
      for (const d of datagrams) collector.addDatagram(d);
      collector.flush();
      note('JS only: dump datagrams → records', ms(t));
    }
    await unacked.deleteByMark(MARK);
    for (const c of [unacked, acked, small, large, target]) c.close();
  } finally {
    for (const ns of [nsA, nsB]) execFileSync('ip', ['netns', 'del', ns]);
  }

  const rows = Object.entries(results).map(([name, runs]) => ({ name, medianMs: median(runs), runsMs: runs }));
  console.log(`conntrack hot paths, ${N} TCP entries of one ct mark, kernel ${release()}, node ${process.version}, median of ${RUNS}`);
  for (const r of rows) console.log(`${r.name.padEnd(60)} ${String(r.medianMs).padStart(8)} ms   (${r.runsMs.join(', ')})`);
  mkdirSync('bench/results', { recursive: true });
  writeFileSync(
    'bench/results/conntrack.json',
    `${JSON.stringify({ bench: 'conntrack', entries: N, runs: RUNS, kernel: release(), node: process.version, date: new Date().toISOString(), results: rows }, null, 2)}\n`,
  );
}

await main();
