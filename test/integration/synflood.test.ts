/**
 * Holding up under a SYN flood, on the real kernel: spoofed SYNs (hping3, sources in the
 * client's documentation range) at a VIP while live connections run and new ones are opened
 * continuously; a migration in the middle of it; and a full conntrack table on the target.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SiteStatus } from '../../src/controller/controller.js';
import { labDown, labUp, siteFor } from '../../src/lab/lab.js';
import { labProcessPid, processCpuSeconds } from '../../src/lab/processes.js';
import { startTraffic, type TrafficSummary } from '../../src/lab/traffic.js';
import { startChurn } from '../../src/lab/churn.js';
import { startSynFlood } from '../../src/lab/syn-flood.js';
import type { MigrationProgress } from '../../src/migration/migration.js';
import { Conntrack } from '../../src/netlink/conntrack.js';
import {
  IPPROTO_TCP,
  IPS_ASSURED,
  IPS_SEEN_REPLY,
  TCP_CONNTRACK_CLOSE,
  TCP_CONNTRACK_CLOSE_WAIT,
  TCP_CONNTRACK_ESTABLISHED,
  TCP_CONNTRACK_FIN_WAIT,
  TCP_CONNTRACK_LAST_ACK,
  TCP_CONNTRACK_TIME_WAIT,
} from '../../src/netlink/ctnetlink.js';
import { RECORD_SIZE, rec, writeRecord } from '../../src/netlink/entry-record.js';
import { uniqueLabName } from '../helpers/lab.js';
import { type AgentStatus, agentStatus, copiesOf, keeperStatus, powerLoss, waitFor } from './helpers/replication-lab.js';

const CLI = path.resolve('dist/cli.js');
const run = promisify(execFile);
const name = uniqueLabName('vtsyn');
const address: Record<string, string> = {};
/** Spoofed sources from the client's own documentation range (hping3 --flood: two senders are what two shared cores take). */
const SPOOFED = ['198.51.100.201', '198.51.100.202'];
/**
 * Connections opened through SYNPROXY, measured from their first message (their opening
 * included) across a cut-over. A stalled opening pauses >= 1.4 s (the server's SYN-ACK again
 * after 1 s, the client's retransmissions at 200 + 400 + 800 ms). Their pause may exceed that
 * of the plain connections in the same cut-over by at most SYNPROXY_EXTRA_MS (a few of the
 * client's 20-50 ms intervals and scheduling on two shared cores), and across a migration,
 * whose hold here is 0.1-0.4 s, it stays under SYNPROXY_MIGRATION_PAUSE_MS (half a stall). A failover's own
 * pause is 0.6-0.7 s here at load 10 (BFD, the takeover, plain connections alike): it keeps the
 * test's 2 s ceiling for all, and the SYNPROXY ones the relative bound.
 */
const SYNPROXY_EXTRA_MS = 300;
const SYNPROXY_MIGRATION_PAUSE_MS = 750;
/**
 * SYNPROXY's threshold in this lab, a quarter of the default 2,000 SYN/s. A real flood is
 * orders of magnitude over the default; the lab's two senders are not: until SYNPROXY engages
 * every SYN costs an entry, a DNAT and the server's SYN-ACK on the same two cores, which starves
 * them to ~2,000-2,400 SYN/s on a loaded machine, and the meter's burst (one second's worth)
 * then drains in seconds or never (one flood of the file engaged late or not within 15 s in 7 of
 * 7 runs at load 7-20 with the default). At 500 the starved flood is 4x over, as a real one is
 * far over; the legitimate clients here open at most 100 a second.
 */
const ABOVE_RATE = 500;
/** A ct mark no VIP has: the entries that fill a table. */
const FILLER_MARK = 0xfff0;

async function cli<T>(...args: string[]): Promise<T> {
  const { stdout } = await run(process.execPath, [CLI, ...args, '--json', '--lab', name], { maxBuffer: 16 << 20 }).catch((e: { stdout?: string; stderr?: string }) => {
    if (e.stdout) return { stdout: e.stdout };
    throw new Error(e.stderr ?? String(e));
  });
  return JSON.parse(stdout) as T;
}
const status = () => cli<SiteStatus>('status');
const onAppliance = (site: SiteStatus, appliance: string, vip: string) => site.appliances.find((a) => a.name === appliance)!.vips.find((v) => v.name === vip)!;
const errorsOf = (s: TrafficSummary) => Object.values(s.errors).reduce((a, b) => a + b, 0);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A server's TCP counters (TcpExt of /proc/net/netstat in its namespace); a counter its kernel lacks reads 0. */
async function tcpExt(server: string, counter: string): Promise<number> {
  const { stdout } = await run('ip', ['netns', 'exec', `${name}-${server}`, 'cat', '/proc/net/netstat']);
  const [names, values] = stdout.split('\n').filter((l) => l.startsWith('TcpExt:')).map((l) => l.trim().split(/\s+/));
  const i = names!.indexOf(counter);
  return i < 0 ? 0 : Number(values![i]);
}

/**
 * Milliseconds until SYNPROXY answers a flood at the VIP (its counter past 1,000). The flood
 * must first pass aboveRate for a burst's worth: on a loaded machine the senders, starved while
 * every SYN still costs an entry, reach ~2,400 SYN/s and take seconds, not the fraction of one
 * a fixed wait assumed (one of the two floods of this file had not engaged after its fixed wait in
 * 4 of 4 runs of the file at load 8-15).
 */
async function synproxyEngaged(appliance: string, vip: string): Promise<number | undefined> {
  const t0 = performance.now();
  // Undefined after 15 s, not an error: the caller stops its flood before it judges.
  return waitFor(`SYNPROXY to answer the flood at ${vip} on ${appliance}`, async () => ((await agentStatus(siteFor(name), appliance)).vips.find((v) => v.name === vip)!.synproxied ?? 0) > 1000, 15_000, 250).then(
    () => Math.round(performance.now() - t0),
    () => undefined,
  );
}

/** TCP states whose entries the kernel may evict from a full table (closing: no connection left to break). */
const CLOSING = new Set([TCP_CONNTRACK_FIN_WAIT, TCP_CONNTRACK_CLOSE_WAIT, TCP_CONNTRACK_LAST_ACK, TCP_CONNTRACK_TIME_WAIT, TCP_CONNTRACK_CLOSE]);

/** Deletes the namespace's TCP entries in a closing state; how many there were. */
async function deleteClosing(ct: Conntrack): Promise<number> {
  const chunks: Buffer[] = [];
  await ct.dumpAllRecords((chunk) => {
    const picked: Buffer[] = [];
    for (let o = 0; o + RECORD_SIZE <= chunk.length; o += RECORD_SIZE) {
      if (rec.protocol(chunk, o) === IPPROTO_TCP && CLOSING.has(rec.tcpState(chunk, o))) picked.push(chunk.subarray(o, o + RECORD_SIZE));
    }
    chunks.push(Buffer.concat(picked));
  });
  return (await ct.deleteRecords(Buffer.concat(chunks))).deleted;
}

/** CPU seconds (user + system) the appliance process has used. */
const applianceCpu = (appliance: string) => processCpuSeconds(labProcessPid(siteFor(name).stateDir, `${appliance}-appliance`));

describe('a SYN flood', () => {
  beforeAll(async () => {
    const up = await labUp({
      name,
      owned: true,
      configure: { appliance: (_, c) => ({ ...c, flood: { ...c.flood, synproxy: { ...c.flood?.synproxy, aboveRate: ABOVE_RATE } } }) },
    });
    for (const v of up.status.vips) address[v.name] = v.address;
    await cli('rebalance', 'manual');
  }, 120_000);
  afterAll(async () => {
    await labDown({ name });
  }, 60_000);

  it('connections opened continuously through migrations all complete (dnat and fullnat, there and back)', async () => {
    const client = `${name}-client`;
    for (const vip of ['vip4', 'vip2']) {
      const churn = startChurn(client, { address: address[vip]!, port: 7, rate: 100, timeoutMs: 8000 });
      await sleep(500);
      const there = await cli<MigrationProgress>('migrate', vip, '--to', 'lb2');
      await sleep(300);
      const back = await cli<MigrationProgress>('migrate', vip, '--to', 'lb1');
      await sleep(500);
      const c = await churn.stop();
      expect(there.state, there.error).toBe('done');
      expect(back.state, back.error).toBe('done');
      // Handshakes under way at each cut-over were moved (young half-open entries): none met a reset.
      expect(c.failed, JSON.stringify(c)).toBe(0);
      expect(c.ok).toBeGreaterThan(50);
      console.log(JSON.stringify({ vip, churn: c, there: there.steps, back: back.steps }));
    }
  }, 60_000);

  it('creates no entries, reaches no keeper, and neither fails a client nor lengthens a migration', async () => {
    const client = `${name}-client`;
    const live = startTraffic(client, { address: address.vip1!, port: 7, connections: 100, intervalMs: 50, timeoutMs: 5000 });
    await live.established;
    const churn = startChurn(client, { address: address.vip1!, port: 7, rate: 40, timeoutMs: 8000 });
    const cpu0 = applianceCpu('lb1');
    const t0 = performance.now();
    const flood = startSynFlood({ namespace: client, address: address.vip1!, port: 7, sources: SPOOFED.slice(0, 2), ratePerSource: 0 });
    const engagedMs = await synproxyEngaged('lb1', 'vip1');
    const engagedS = (engagedMs ?? 15_000) / 1000;
    // Past HANDSHAKE_WINDOW_S: what got in before SYNPROXY engaged is junk by then.
    await sleep(4000);
    // lb1's own status (the controller's view is up to 5 s old).
    const during = (await agentStatus(siteFor(name), 'lb1')).vips.find((v) => v.name === 'vip1')!;
    const cpu = (applianceCpu('lb1') - cpu0) / ((performance.now() - t0) / 1000);
    const c = await churn.stop();
    // Opened now, through SYNPROXY: each carries a sequence offset (and a timestamp offset) that
    // the entry record moves with it.
    const rejected0 = await tcpExt('srv1', 'TSEcrRejected');
    const proxied = startTraffic(client, { address: address.vip1!, port: 7, connections: 40, intervalMs: 50, timeoutMs: 5000 });
    await proxied.established;
    const across = startChurn(client, { address: address.vip1!, port: 7, rate: 40, timeoutMs: 8000 });
    await sleep(300);
    const m = await cli<MigrationProgress>('migrate', 'vip1', '--to', 'lb2');
    await sleep(1500);
    const { sent } = await flood.stop();
    const [a, l, p] = await Promise.all([across.stop(), live.stop(), proxied.stop()]);
    const tsecrRejected = (await tcpExt('srv1', 'TSEcrRejected')) - rejected0;

    expect(sent).toBeGreaterThan(5000);
    expect(engagedMs, 'SYNPROXY answered the flood within 15 s (no: its senders stayed near aboveRate)').toBeDefined();
    // SYNPROXY answered the flood on lb1, then on lb2 once vip1 was there.
    expect(during.synproxied).toBeGreaterThan(1000);
    expect((await agentStatus(siteFor(name), 'lb2')).vips.find((v) => v.name === 'vip1')!.synproxied).toBeGreaterThan(0);
    // The flood's junk in the table is what got in before SYNPROXY engaged: bounded by the
    // threshold (ABOVE_RATE, for as long as the flood took to pass it, with as many again in a
    // burst), not by the flood.
    expect(during.entries, `SYNPROXY engaged after ${engagedS} s`).toBeLessThan(100 + c.opened + ABOVE_RATE * (engagedS + 2));
    // The migration moved connections, not junk, with every client fine: no reset anywhere.
    expect(m.state, m.error).toBe('done');
    // lb2 answered the flood with SYN cookies from before the address moved: lb1 handed it
    // vip1's port with the pre-copy, so the flood's SYNs did not wait in lb2's hold.
    const precopyLine = readFileSync(path.join(siteFor(name).stateDir, 'lb2-appliance.log'), 'utf8').split('\n').filter((l) => l.includes('"action":"precopy"') && l.includes('"vip":"vip1"')).pop();
    expect(JSON.parse(precopyLine ?? '{}').synproxy, precopyLine).toEqual([expect.stringMatching(/^7 for \d+ s$/)]);
    // (the live ones, those SYNPROXY opened, the churn's; 50 for handshakes in flight)
    expect(m.entries.moved).toBeLessThan(100 + 40 + c.opened + a.opened + 50);
    expect(l.connections).toMatchObject({ established: 100, ok: 100, failed: 0 });
    expect(errorsOf(l)).toBe(0);
    // Connections SYNPROXY opened go on across the migration, byte-exact, none stalled or reset.
    expect(p.connections, JSON.stringify({ errors: p.errors, codes: p.errorCodes, gap: p.gapMs })).toMatchObject({ established: 40, ok: 40, failed: 0 });
    expect(errorsOf(p)).toBe(0);
    expect(p.bytes.echoed).toBe(p.bytes.sent);
    // srv1 took SYNPROXY's handshake ACKs: none had a TSecr outside its SYN-ACKs (every one
    // did while the kernel's timestamp shift was applied to it twice: Linux 6.15+ counts them).
    expect(tsecrRejected).toBe(0);
    // Their longest pause, their opening included: the migration's, no stall of their own.
    const pauses = JSON.stringify({ proxied: p.gapMs, live: l.gapMs, migration: m.steps });
    expect(p.gapMs.max, pauses).toBeLessThan(l.gapMs.max + SYNPROXY_EXTRA_MS);
    expect(p.gapMs.max, pauses).toBeLessThan(SYNPROXY_MIGRATION_PAUSE_MS);
    // Every legitimate new connection during the flood succeeded (through SYNPROXY).
    expect(c.failed, JSON.stringify(c)).toBe(0);
    expect(c.ok).toBeGreaterThan(100);
    expect(a.failed, JSON.stringify(a)).toBe(0);
    // The keeper got copies of connections only.
    const copies = copiesOf(await keeperStatus(siteFor(name), 'srv1'), 'vip1');
    expect(copies).toBeLessThan(100 + c.opened + a.opened + 50);
    // The appliance's CPU stays bounded (generous: the machine is shared).
    expect(cpu).toBeLessThan(0.5);
    console.log(JSON.stringify({ floodSent: sent, lb1Entries: during.entries, lb1CpuShare: Math.round(cpu * 1000) / 1000, migration: m.steps, moved: m.entries.moved, churn: c, acrossMigration: a, proxiedGapMs: p.gapMs, liveGapMs: l.gapMs, tsecrRejected, copies }));
  }, 90_000);

  it('a full table: established connections go on, new ones are refused and counted, a migration onto it aborts and gives back, the next is refused', async () => {
    const client = `${name}-client`;
    // vip3 is lb2's, vip2 lb1's.
    const onFull = startTraffic(client, { address: address.vip3!, port: 7, connections: 50, intervalMs: 50, timeoutMs: 5000 });
    const moving = startTraffic(client, { address: address.vip2!, port: 7, connections: 50, intervalMs: 50, timeoutMs: 5000 });
    await Promise.all([onFull.established, moving.established]);
    const lb2 = new Conntrack({ netns: `${name}-lb2` });
    try {
      // The kernel makes room in a full table by evicting what it may drop early: an unassured
      // entry (the flood before left half-open ones here) and a TCP entry that is closing
      // (TIME_WAIT and the like, which earlier tests left). Its garbage collector does so, down
      // to 95 % of the table, on its first pass after a new connection found the table full, so
      // a table holding such entries still takes every new connection a few seconds later: the
      // case here is a table full of real ones. Those go first.
      await lb2.deleteByMark(0, 0, { mask: IPS_ASSURED, value: 0 });
      const closing = await deleteClosing(lb2);
      // Filled to the brim, topped up while what expires there makes room.
      let made = 0;
      for (let round = 0; round < 5; round++) {
        const { entries, max } = await lb2.tableStats();
        if (entries >= max - 10) break;
        const n = max - entries;
        const records = Buffer.alloc(n * RECORD_SIZE);
        for (let k = 0; k < n; k++) {
          const i = made + k;
          writeRecord(records, k * RECORD_SIZE, {
            client: { address: `198.18.${128 + (i >>> 16)}.${(i >>> 8) & 255}`, port: 1024 + (i & 255) },
            vip: { address: '203.0.113.99', port: 80 },
            server: { address: '203.0.113.99', port: 80 },
            proto: IPPROTO_TCP,
            tcpState: TCP_CONNTRACK_ESTABLISHED,
            tcpWindow: { wscaleOriginal: 7, wscaleReply: 7, flagsOriginal: 0, flagsReply: 0 },
            status: IPS_SEEN_REPLY | IPS_ASSURED,
            timeout: 600,
            mark: FILLER_MARK,
          });
        }
        await lb2.createFromRecords(records);
        made += n;
      }
      const { entries, max } = await lb2.tableStats();
      expect(entries).toBeGreaterThanOrEqual(max - 10);

      // Straight away (before the controller's next poll sees it): the creates fail, the migration aborts.
      const m = await cli<MigrationProgress>('migrate', 'vip2', '--to', 'lb2').catch((e: Error) => ({ state: 'refused', error: e.message }) as unknown as MigrationProgress);
      const churn = startChurn(client, { address: address.vip3!, port: 7, rate: 20, timeoutMs: 2500 });
      await sleep(6000); // the controller polls every 5 s
      const refused = await cli<MigrationProgress>('migrate', 'vip2', '--to', 'lb2').then(
        (p) => `started: ${p.state}`,
        (e: Error) => e.message,
      );
      const c = await churn.stop();
      const site = await status();
      const [full, moved] = await Promise.all([onFull.stop(), moving.stop()]);

      expect(m.state, m.error).toMatch(/aborted|refused/);
      if (m.state === 'aborted') expect(m.error).toMatch(/could not be created on lb2/);
      expect(refused).toMatch(/lb2 has no room/);
      expect(site.vips.find((v) => v.name === 'vip2')!.owner).toBe('lb1');
      expect(onAppliance(site, 'lb1', 'vip2').mode).toBe('normal');
      expect(onAppliance(site, 'lb2', 'vip2').entries).toBe(0);
      // Established connections on the full appliance and on the VIP that stayed: untouched.
      expect(errorsOf(full)).toBe(0);
      expect(full.connections.ok).toBe(50);
      expect(errorsOf(moved), JSON.stringify({ m, moved: moved.errors, codes: moved.errorCodes, gap: moved.gapMs })).toBe(0);
      // New connections to the full appliance: refused, counted, said.
      expect(c.ok).toBeLessThan(c.opened);
      const table = site.appliances.find((a) => a.name === 'lb2')!.conntrack!;
      expect(table).toMatchObject({ full: true });
      expect(table.refused).toBeGreaterThan(0);
      expect(readFileSync(path.join(siteFor(name).stateDir, 'lb2-appliance.log'), 'utf8')).toContain('conntrack table full');
      console.log(JSON.stringify({ closing, migration: m.state, error: m.error, refused, churn: c, table }));
    } finally {
      await lb2.deleteByMark(FILLER_MARK);
      lb2.close();
    }
  }, 90_000);

  // Last: lb1 does not come back.
  it("a failover during a flood: lb1's power is cut, lb2 takes vip2 over from the keepers' copies, every connection goes on (those SYNPROXY opened too)", async () => {
    const client = `${name}-client`;
    const live = startTraffic(client, { address: address.vip2!, port: 7, connections: 60, intervalMs: 20, timeoutMs: 10_000 });
    await live.established;
    const flood = startSynFlood({ namespace: client, address: address.vip2!, port: 7, sources: SPOOFED, ratePerSource: 0 });
    const engagedMs = await synproxyEngaged('lb1', 'vip2');
    const rejected0 = await tcpExt('srv2', 'TSEcrRejected');
    const proxied = startTraffic(client, { address: address.vip2!, port: 7, connections: 40, intervalMs: 20, timeoutMs: 10_000 });
    await proxied.established;
    // The appliance's own status (the controller's view is up to 5 s old).
    const engaged = (await agentStatus(siteFor(name), 'lb1')).vips.find((v) => v.name === 'vip2')!.synproxied ?? 0;
    // Copies of all 100 on srv2's keeper (vip2's one server), the SYNPROXY ones with their offsets.
    await waitFor('copies of the 100 connections on srv2', async () => copiesOf(await keeperStatus(siteFor(name), 'srv2'), 'vip2') >= 100, 10_000);
    const t0 = performance.now();
    await powerLoss(siteFor(name), 'lb1');
    let lb2: AgentStatus | undefined;
    await waitFor('lb2 to take vip2 over', async () => {
      lb2 = await agentStatus(siteFor(name), 'lb2');
      return lb2.vips.find((v) => v.name === 'vip2')?.mode === 'normal';
    }, 20_000);
    const takeoverMs = performance.now() - t0;
    await sleep(2000);
    const { sent } = await flood.stop();
    const [l, p] = await Promise.all([live.stop(), proxied.stop()]);
    const tsecrRejected = (await tcpExt('srv2', 'TSEcrRejected')) - rejected0;

    expect(sent).toBeGreaterThan(5000);
    expect(engagedMs, 'SYNPROXY answered the flood within 15 s (no: its senders stayed near aboveRate)').toBeDefined();
    expect(engaged).toBeGreaterThan(1000);
    for (const [s, n] of [[l, 60], [p, 40]] as const) {
      expect(s.connections, JSON.stringify({ errors: s.errors, codes: s.errorCodes, gap: s.gapMs })).toMatchObject({ established: n, ok: n, failed: 0 });
      expect(errorsOf(s)).toBe(0);
      expect(s.bytes.echoed).toBe(s.bytes.sent);
    }
    expect(lb2!.vips.find((v) => v.name === 'vip2')?.rejected).toBe(0);
    // The pause is a failover's (bench-failover without a flood: max gap 426 ms); generous here, the machine is shared.
    expect(Math.max(l.gapMs.max, p.gapMs.max)).toBeLessThan(2000);
    // Those SYNPROXY opened: no handshake ACK refused for its TSecr, and no pause of their own
    // beyond the failover's (as in the migration above).
    expect(tsecrRejected).toBe(0);
    expect(p.gapMs.max, JSON.stringify({ proxied: p.gapMs, live: l.gapMs })).toBeLessThan(l.gapMs.max + SYNPROXY_EXTRA_MS);
    console.log(JSON.stringify({ floodSent: sent, takeoverMs: Math.round(takeoverMs), liveGapMs: l.gapMs, proxiedGapMs: p.gapMs, tsecrRejected, takeover: lb2!.failover.takeovers.find((t) => t.vip === 'vip2') }));
  }, 60_000);
});
