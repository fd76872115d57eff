/**
 * `make bench-replication`: new connections per second through lb1 (vip1, dnat) with
 * replication on and off, and whether a copy got lost. A generator in the client's namespace
 * keeps `--concurrency` short connections going for `--seconds`: connect, send 16 bytes, read
 * the echo, close. With replication on, lb1 copies every connection to srv1's keeper; after the
 * run, srv1's copies of vip1 must equal lb1's entries of vip1 (closed ones linger in TIME_WAIT,
 * so every connection of the run is there): copies lost = entries − copies.
 *
 *   npx tsx bench/replication.ts [--rounds 2] [--seconds 5] [--concurrency 64]
 * Writes bench/results/replication.json. Target (issue 5): on/off ≥ 0.8, copies lost 0.
 */
import fs from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { labDown, labUp, siteFor } from '../src/lab/lab.js';
import { run } from '../src/lab/netns.js';
import { agentStatus, copiesOf, failoverLab, keeperStatus, waitFor } from '../test/integration/helpers/replication-lab.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '2' }, seconds: { type: 'string', default: '5' }, concurrency: { type: 'string', default: '64' } } });
const rounds = Number(values.rounds);
const seconds = Number(values.seconds);
const concurrency = Number(values.concurrency);

/** The generator, run by node inside the client's namespace; prints {completed, failed}. */
const generator = (address: string) => `
import net from 'node:net';
const until = Date.now() + ${seconds * 1000};
let completed = 0, failed = 0;
const payload = Buffer.alloc(16, 7);
function one() {
  if (Date.now() >= until) return Promise.resolve();
  return new Promise((resolve) => {
    const s = net.connect({ host: ${JSON.stringify(address)}, port: 7 });
    let got = 0;
    s.setTimeout(5000, () => s.destroy(new Error('timeout')));
    s.on('connect', () => s.write(payload));
    s.on('data', (d) => { got += d.length; if (got >= payload.length) s.end(); });
    s.on('close', () => { if (got >= payload.length) completed++; else failed++; resolve(); });
    s.on('error', () => {});
  }).then(one);
}
await Promise.all(Array.from({ length: ${concurrency} }, one));
process.stdout.write(JSON.stringify({ completed, failed }));
`;

interface Round {
  replication: boolean;
  perSecond: number;
  completed: number;
  failed: number;
  entries: number;
  copies: number;
  lost: number;
  overruns: number;
  resyncs: number;
  lagMs: { lastBatch: number; max: number };
  /** CPU time of lb1's appliance process (user + system, the `ip netns exec` child) during the run. */
  applianceCpuMs: number;
}

/** utime + stime of a process and its waited-for children, ms (proc(5): fields 14-17, clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14])) * 10;
}

async function round(i: number, replication: boolean): Promise<Round> {
  const name = `rplbr${i}${replication ? 'a' : 'b'}`;
  const up = await labUp({ name, keepers: true, configure: failoverLab({ replication: { enabled: replication } }) });
  const site = siteFor(name);
  try {
    const vip1 = site.vips.find((v) => v.name === 'vip1')!;
    const appliancePid = up.status.processes.find((p) => p.name === 'lb1-appliance')!.pid;
    const cpu0 = cpuMs(appliancePid);
    const r = await run('ip', ['netns', 'exec', `${name}-client`, process.execPath, '--input-type=module', '-e', generator(vip1.address)]);
    if (r.code !== 0) throw new Error(`generator: ${r.stderr}`);
    const { completed, failed } = JSON.parse(r.stdout) as { completed: number; failed: number };
    const applianceCpuMs = cpuMs(appliancePid) - cpu0;
    let entries = 0;
    let copies = 0;
    if (replication) {
      // Settled: nothing waiting for srv1 any more.
      await waitFor('the backlog to drain', async () => {
        const k = (await agentStatus(site, 'lb1')).replication.keepers.find((x) => x.name === 'srv1');
        return k !== undefined && k.backlog === 0 && !k.resyncPending;
      }, 60_000, 500);
    }
    const lb1 = await agentStatus(site, 'lb1');
    entries = lb1.vips.find((v) => v.name === 'vip1')!.entries;
    copies = copiesOf(await keeperStatus(site, 'srv1'), 'vip1');
    const srv1 = lb1.replication.keepers.find((x) => x.name === 'srv1')!;
    return {
      replication,
      perSecond: Math.round(completed / seconds),
      completed,
      failed,
      entries,
      copies,
      lost: replication ? Math.max(0, entries - copies) : 0,
      overruns: lb1.replication.overruns,
      resyncs: srv1.resyncs,
      lagMs: { lastBatch: srv1.lagMs.lastBatch, max: srv1.lagMs.max },
      applianceCpuMs,
    };
  } finally {
    await labDown({ name });
  }
}

const results: Round[] = [];
for (let i = 0; i < rounds; i++) {
  // Alternate, so a change of the machine's load hits both sides alike.
  for (const replication of i % 2 === 0 ? [false, true] : [true, false]) {
    const r = await round(i, replication);
    results.push(r);
    console.log(`round ${i + 1} replication ${replication ? 'on ' : 'off'}: ${r.perSecond} conn/s (${r.failed} failed), entries ${r.entries}, copies ${r.copies}, lost ${r.lost}, overruns ${r.overruns}, lag max ${r.lagMs.max} ms, appliance CPU ${r.applianceCpuMs} ms`);
  }
}
const mean = (xs: number[]) => Math.round(xs.reduce((a, b) => a + b, 0) / xs.length);
const on = mean(results.filter((r) => r.replication).map((r) => r.perSecond));
const off = mean(results.filter((r) => !r.replication).map((r) => r.perSecond));
const summary = {
  seconds,
  concurrency,
  rounds,
  connPerSecond: { off, on },
  ratio: Math.round((on / off) * 1000) / 1000,
  copiesLost: results.reduce((n, r) => n + r.lost, 0),
  targets: { ratio: 0.8, copiesLost: 0 },
};
console.table([{ 'conn/s off': off, 'conn/s on': on, ratio: summary.ratio, 'copies lost': summary.copiesLost }]);
fs.mkdirSync('bench/results', { recursive: true });
fs.writeFileSync(
  'bench/results/replication.json',
  `${JSON.stringify({ bench: 'replication', date: new Date().toISOString(), host: { cpus: os.cpus().length, load: os.loadavg() }, summary, conntrackd: null, rounds: results }, null, 2)}\n`,
);
console.log('wrote bench/results/replication.json');
