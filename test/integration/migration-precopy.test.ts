/**
 * The pre-copy on the real kernel: three VIPs move, each under 400 live echo connections,
 * with 0, 10,000 and 100,000 extra ESTABLISHED entries. Each migration waits after its
 * pre-copy (VIPSHIFT_TEST_PAUSE_STEP=precopy), and meanwhile the source's table changes:
 * new connections are opened (created), others closed (changed: past ESTABLISHED), some of those
 * and of the extra entries deleted (ended). The source's table is read once the changes have
 * settled — as it is at the cut-over, the VIP's established connections changing no state —
 * and the target's after the migration must hold exactly those entries, in the same states.
 */
import { describe, expect, it } from 'vitest';
import type { MigrationProgress } from '../../src/migration/migration.js';
import { Conntrack } from '../../src/netlink/conntrack.js';
import { IPPROTO_TCP, IPS_ASSURED, IPS_SEEN_REPLY, TCP_CONNTRACK_CLOSE, TCP_CONNTRACK_ESTABLISHED, TCP_CONNTRACK_NAMES, TCP_CONNTRACK_TIME_WAIT } from '../../src/netlink/ctnetlink.js';
import { RECORD_SIZE, R_FLAGS_ORIGINAL, R_STATUS, R_TCP_STATE, R_TIMEOUT, R_WSCALE_ORIGINAL, readRecord, writeRecord } from '../../src/netlink/entry-record.js';
import { addressOn } from '../../src/lab/site.js';
import { withLab } from '../helpers/lab.js';
import { rebuildMirror } from './helpers/replication-lab.js';
import { ApiError } from '../../src/api/client.js';
import { api, sleep, startController, writeControllerConfig } from './controller-helpers.js';

/** The controller pauses after the pre-copy while the test makes its changes, until the test ends the pause (SIGUSR2) or at most this long. */
const PAUSE_MS = 60_000;
const errorsOf = (e: Record<string, number>) => Object.values(e).reduce((a, b) => a + b, 0);

/** `count` ESTABLISHED entries of the VIP as a source holds them, clients from 198.51.100.0/24. */
function extraEntries(count: number, vip: { address: string; id: number }, server: string): Buffer {
  const b = Buffer.alloc(count * RECORD_SIZE);
  for (let n = 0; n < count; n++) {
    const i = n;
    writeRecord(b, n * RECORD_SIZE, {
      client: { address: `198.51.100.${20 + (i % 200)}`, port: 1024 + Math.floor(i / 200) },
      vip: { address: vip.address, port: 80 },
      server: { address: server, port: 80 },
      proto: IPPROTO_TCP,
      tcpState: TCP_CONNTRACK_ESTABLISHED,
      tcpWindow: { wscaleOriginal: 7, wscaleReply: 7, flagsOriginal: 0x23, flagsReply: 0x23 },
      status: IPS_SEEN_REPLY | IPS_ASSURED,
      timeout: 400_000,
      mark: vip.id,
    });
  }
  return b;
}

/** The VIP's entries as sorted strings of what a migration must carry: tuples, NAT, TCP state (not timeouts, status or window flags, which traffic moves on). */
async function table(ct: Conntrack, mark: number): Promise<string[]> {
  const out: string[] = [];
  await ct.dumpRecords(mark, (chunk) => {
    for (let o = 0; o < chunk.length; o += RECORD_SIZE) {
      const r = Buffer.from(chunk.subarray(o, o + RECORD_SIZE));
      r.fill(0, R_WSCALE_ORIGINAL, R_FLAGS_ORIGINAL + 2);
      r.fill(0, R_STATUS, R_TIMEOUT + 4);
      out.push(r.toString('hex'));
    }
  });
  return out.sort();
}

/** One entry of `table` as words: the connection, its TCP state and what a migration carries beside. */
function described(hex: string): string {
  const r = readRecord(Buffer.from(hex, 'hex'));
  const at = (e: { address: string; port: number } | undefined) => (e ? `${e.address}:${e.port}` : '-');
  return `${at(r.client)} -> ${at(r.vip)} -> ${at(r.server)} (inside ${at(r.inside)}) ${TCP_CONNTRACK_NAMES[r.tcpState] ?? r.tcpState} mark ${r.mark}${r.seqAdj ? ` seqadj ${JSON.stringify(r.seqAdj)}` : ''}${r.synproxy ? ` synproxy ${JSON.stringify(r.synproxy)}` : ''}`;
}

/**
 * Entries of the VIP whose connection has closed (TIME_WAIT, or CLOSE after a reset), as records:
 * their state no longer changes. One still in FIN_WAIT, CLOSE_WAIT or LAST_ACK would move on when
 * the server's late FIN passes, after the test has read the source and on the target.
 */
async function closedEntries(ct: Conntrack, mark: number): Promise<Buffer> {
  const found: Buffer[] = [];
  await ct.dumpRecords(mark, (chunk) => {
    for (let o = 0; o < chunk.length; o += RECORD_SIZE) {
      const state = chunk[o + R_TCP_STATE]!;
      if (state === TCP_CONNTRACK_TIME_WAIT || state === TCP_CONNTRACK_CLOSE) found.push(chunk.subarray(o, o + RECORD_SIZE));
    }
  });
  return Buffer.concat(found);
}

async function untilPrecopied(ctl: { get<T>(p: string): Promise<T> }, id: string): Promise<MigrationProgress> {
  for (let i = 0; ; i++) {
    const m = await ctl.get<MigrationProgress>(`/v1/migrations/${id}`);
    if (m.precopy) return m;
    if (m.state !== 'running' || i > 1500) throw new Error(`the pre-copy did not end: ${JSON.stringify(m)}`);
    await sleep(20);
  }
}

describe('migration with a pre-copy', () => {
  it('carries what was created, changed and ended after the pre-copy, at 0, 10,000 and 100,000 extra entries, every connection alive', async () => {
    await withLab({ prefix: 'vtpre', controller: false }, async (lab) => {
      const config = writeControllerConfig(lab, { rebalance: { mode: 'manual' }, migration: { stepTimeoutMs: 60_000 }, statistics: { intervalSeconds: 1 } });
      const ctl = await startController(lab, config, { VIPSHIFT_TEST_PAUSE_STEP: `precopy:${PAUSE_MS}` });
      const client = api(lab);
      // One client; a call on a keep-alive connection the controller cut as idle is made again.
      const again = <T>(call: () => Promise<T>): Promise<T> => call().catch((e: unknown) => (e instanceof ApiError && e.status === 0 ? call() : Promise.reject(e)));
      const ctlApi = {
        get: <T>(p: string) => again(() => client.get(p) as Promise<T>),
        post: <T>(p: string, body: unknown) => again(() => client.post(p, body) as Promise<T>),
      };
      const tables = { lb1: new Conntrack({ netns: lab.ns('lb1') }), lb2: new Conntrack({ netns: lab.ns('lb2') }) };
      const report: string[] = [];
      // Each VIP moves once from its first owner (a VIP moved back and forth is another test's).
      const rounds: ['vip1' | 'vip2' | 'vip3', 'lb1' | 'lb2', 'lb1' | 'lb2', number][] = [
        ['vip1', 'lb1', 'lb2', 0],
        ['vip2', 'lb1', 'lb2', 10_000],
        ['vip3', 'lb2', 'lb1', 100_000],
      ];
      try {
        for (const [name, from, to, size] of rounds) {
          const vip = lab.site.vips.find((v) => v.name === name)!;
          const server = addressOn(lab.site, vip.servers[0]!, 'int');
          const source = tables[from];
          const live = lab.traffic({ address: vip.address, port: 7, connections: 400, intervalMs: 20, timeoutMs: 10_000 });
          await live.established;
          // The extra entries, made behind the appliance's back, and read into its mirror.
          if (size > 0) {
            const r = await source.createFromRecords(extraEntries(size, vip, server));
            expect(r.failures).toEqual([]);
            expect(r.existing).toBe(0);
            await rebuildMirror(lab.site, from);
          }
          // Connections that will close after the pre-copy.
          const closing = lab.traffic({ address: vip.address, port: 7, connections: 30, intervalMs: 50 });
          await closing.established;

          const started = await ctlApi.post<MigrationProgress>('/v1/migrations', { vip: name, to });
          await untilPrecopied(ctlApi, started.id);
          const pausedAt = Date.now();
          // Between the pre-copy and the cut-over: created, changed, ended.
          const opened = lab.traffic({ address: vip.address, port: 7, connections: 30, intervalMs: 50 });
          await opened.established;
          const closed = await closing.stop();
          expect(errorsOf(closed.errors), `${name}: ${JSON.stringify(closed.errorCodes)}`).toBe(0);
          // Their entries reach TIME_WAIT as the last FIN is acknowledged: wait for all 30 (a loaded machine's server closes late).
          let waiting = await closedEntries(source, vip.id);
          for (const until = Date.now() + 10_000; waiting.length / RECORD_SIZE < 30 && Date.now() < until; waiting = await closedEntries(source, vip.id)) await sleep(100);
          expect(waiting.length / RECORD_SIZE).toBeGreaterThanOrEqual(30);
          const ending = Math.min(size, 500);
          const gone = await source.deleteRecords(Buffer.concat([waiting.subarray(0, 10 * RECORD_SIZE), extraEntries(ending, vip, server)]));
          expect(gone).toEqual({ deleted: 10 + ending, failures: [] });
          // The rest of the pause: the source's table as it is at the cut-over.
          await sleep(300);
          const atCutOver = await table(source, vip.id);
          const changesMs = Date.now() - pausedAt;
          const still = await ctlApi.get<MigrationProgress>(`/v1/migrations/${started.id}`);
          expect(still.step, `${name}: the changes and the read of the source fit in the pause (${changesMs} ms)`).toBe('precopy');
          process.kill(ctl.pid, 'SIGUSR2');

          let m: MigrationProgress;
          for (let i = 0; ; i++) {
            m = await ctlApi.get<MigrationProgress>(`/v1/migrations/${started.id}`);
            if (m.state !== 'running') break;
            if (i > 1500) throw new Error(`migration did not end: ${JSON.stringify(m)}`);
            await sleep(20);
          }
          expect(m.state, m.error).toBe('done');
          expect(m.fallback, 'step 3 moved the difference').toBeUndefined();
          // The extra entries deleted were all pre-copied: each was deleted on the target.
          expect(m.difference!.ended).toBeGreaterThanOrEqual(ending);
          // New connections and the closed ones at least.
          expect(m.difference!.created).toBeGreaterThanOrEqual(50);
          const onTarget = await table(tables[to], vip.id);
          // Only the entries that differ, decoded: a failure says which connection and in what state.
          const differing = (a: string[], b: string[]) => {
            const other = new Set(b);
            return a.filter((e) => !other.has(e)).map(described);
          };
          expect({ onlyOnTarget: differing(onTarget, atCutOver), onlyAtCutOver: differing(atCutOver, onTarget) }, name).toEqual({ onlyOnTarget: [], onlyAtCutOver: [] });
          await sleep(1000); // the connections talk through the target a while: a late reset counts too
          for (const [what, run] of [['opened', opened], ['live', live]] as const) {
            const summary = await run.stop();
            const requested = what === 'live' ? 400 : 30;
            expect(summary.connections, `${name} ${what}: ${JSON.stringify(summary.errorCodes)}`).toMatchObject({ requested, established: requested, ok: requested, failed: 0 });
            expect(errorsOf(summary.errors)).toBe(0);
            expect(summary.bytes.echoed).toBe(summary.bytes.sent);
            if (what === 'live') report.push(`${name}, ${size} extra: pre-copy ${m.precopy!.ms} ms (${m.precopy!.entries} entries, rounds ${JSON.stringify(m.precopy!.rounds)}), changes made in ${changesMs} ms, difference +${m.difference!.created} -${m.difference!.ended}, steps ${JSON.stringify(m.steps)}, longest pause ${summary.gapMs.max} ms`);
          }
        }
        console.log(report.join('\n'));
      } finally {
        tables.lb1.close();
        tables.lb2.close();
        client.close();
        process.kill(ctl.pid, 'SIGTERM');
        await ctl.exited;
      }
    });
  }, 240_000);
});
