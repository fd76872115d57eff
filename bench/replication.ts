/**
 * `make bench-replication`: new connections per second through lb1 (vip1, dnat) with
 * replication on and off, and whether a copy got lost. A generator in the client's namespace
 * keeps `--concurrency` short connections going for `--seconds`: connect, send 16 bytes, read
 * the echo, close. With replication on, lb1 copies every connection to srv1's keeper; after the
 * run, srv1's copies of vip1 must equal lb1's entries of vip1 (closed ones linger in TIME_WAIT,
 * so every connection of the run is there): copies lost = entries − copies.
 *
 * Beside them, the reference a user would deploy today: Debian's conntrackd in FT-FW mode
 * between lb1 and lb2 (over the management segment), vipshift's replication off, the same
 * load; its copies are lb2's external cache (the conntrackd runner is bench/conntrackd.ts,
 * shared with bench/migration.ts).
 *
 *   npx tsx bench/replication.ts [--rounds 2] [--seconds 5] [--concurrency 64]
 * Writes bench/results/replication.json. Target: on/off ≥ 0.8, copies lost 0.
 */
import fs from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { labDown, labUp, siteFor } from '../src/lab/lab.js';
import { run } from '../src/lab/netns.js';
import { processCpuSeconds } from '../src/lab/processes.js';
import { agentStatus, copiesOf, failoverLab, keeperStatus, waitFor } from '../test/integration/helpers/replication-lab.js';
import { Conntrackd } from './conntrackd.js';

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

type Mode = 'off' | 'on' | 'conntrackd';

interface Round {
  mode: Mode;
  perSecond: number;
  completed: number;
  failed: number;
  entries: number;
  copies: number;
  lost: number;
  overruns: number;
  resyncs: number;
  lagMs: { lastBatch: number; max: number };
  /** CPU time (user + system) during the run of what replicates on lb1: vipshift's appliance process, or conntrackd. */
  replicatorCpuMs: number;
}

const cpuMs = (pid: number) => processCpuSeconds(pid, { children: true }) * 1000;

async function round(i: number, mode: Mode): Promise<Round> {
  const replication = mode === 'on';
  const name = `rplbr${i}${mode.slice(0, 2)}`;
  const up = await labUp({ name, keepers: true, configure: failoverLab({ replication: { enabled: replication } }) });
  const site = siteFor(name);
  try {
    const vip1 = site.vips.find((v) => v.name === 'vip1')!;
    const appliancePid = up.status.processes.find((p) => p.name === 'lb1-appliance')!.pid;
    const daemons =
      mode === 'conntrackd'
        ? await Promise.all(
            (['lb1', 'lb2'] as const).map((h, k) =>
              Conntrackd.start({ namespace: `${name}-${h}`, address: k === 0 ? '192.0.2.11' : '192.0.2.12', peer: k === 0 ? '192.0.2.12' : '192.0.2.11', interface: 'mgmt0' }, 100_000),
            ),
          )
        : [];
    // The replicating process: vipshift's appliance, or conntrackd on lb1.
    const replicatorPid = daemons[0]?.pid ?? appliancePid;
    const cpu0 = cpuMs(replicatorPid);
    const r = await run('ip', ['netns', 'exec', `${name}-client`, process.execPath, '--input-type=module', '-e', generator(vip1.address)]);
    if (r.code !== 0) throw new Error(`generator: ${r.stderr}`);
    const { completed, failed } = JSON.parse(r.stdout) as { completed: number; failed: number };
    const replicatorCpuMs = cpuMs(replicatorPid) - cpu0;
    let entries = 0;
    let copies = 0;
    if (mode === 'on') {
      // Settled: nothing waiting for srv1 any more.
      await waitFor('the backlog to drain', async () => {
        const k = (await agentStatus(site, 'lb1')).replication.keepers.find((x) => x.name === 'srv1');
        return k !== undefined && k.backlog === 0 && !k.resyncPending;
      }, 60_000, 500);
    }
    const lb1 = await agentStatus(site, 'lb1');
    entries = lb1.vips.find((v) => v.name === 'vip1')!.entries;
    if (mode === 'conntrackd') {
      // FT-FW has no "settled" signal: give it time, then read lb2's external cache.
      await new Promise((r) => setTimeout(r, 3000));
      copies = (await daemons[1]!.stats()).external;
      await Promise.all(daemons.map((d) => d.stop()));
    } else {
      copies = copiesOf(await keeperStatus(site, 'srv1'), 'vip1');
    }
    const srv1 = lb1.replication.keepers.find((x) => x.name === 'srv1')!;
    return {
      mode,
      perSecond: Math.round(completed / seconds),
      completed,
      failed,
      entries,
      copies,
      lost: mode === 'off' ? 0 : Math.max(0, entries - copies),
      overruns: lb1.replication.overruns,
      resyncs: srv1.resyncs,
      lagMs: { lastBatch: srv1.lagMs.lastBatch, max: srv1.lagMs.max },
      replicatorCpuMs,
    };
  } finally {
    await labDown({ name });
  }
}

const modes: Mode[] = ['off', 'on', 'conntrackd'];
const results: Round[] = [];
for (let i = 0; i < rounds; i++) {
  // Rotate the order, so a change of the machine's load hits every mode alike.
  for (let k = 0; k < modes.length; k++) {
    const mode = modes[(i + k) % modes.length]!;
    const r = await round(i, mode);
    results.push(r);
    console.log(`round ${i + 1} ${mode.padEnd(10)}: ${r.perSecond} conn/s (${r.failed} failed), entries ${r.entries}, copies ${r.copies}, lost ${r.lost}, overruns ${r.overruns}, lag max ${r.lagMs.max} ms, replicator CPU ${r.replicatorCpuMs} ms`);
  }
}
const mean = (xs: number[]) => Math.round(xs.reduce((a, b) => a + b, 0) / xs.length);
const of = (mode: Mode) => results.filter((r) => r.mode === mode);
const off = mean(of('off').map((r) => r.perSecond));
const on = mean(of('on').map((r) => r.perSecond));
const perThousand = (rs: Round[]) => Math.round((rs.reduce((n, r) => n + r.replicatorCpuMs, 0) / rs.reduce((n, r) => n + r.completed, 0)) * 1000);
const conntrackd = {
  connPerSecond: mean(of('conntrackd').map((r) => r.perSecond)),
  copiesLost: of('conntrackd').reduce((n, r) => n + r.lost, 0),
  cpuMsPer1000Connections: perThousand(of('conntrackd')),
};
const summary = {
  seconds,
  concurrency,
  rounds,
  connPerSecond: { off, on },
  ratio: Math.round((on / off) * 1000) / 1000,
  copiesLost: of('on').reduce((n, r) => n + r.lost, 0),
  cpuMsPer1000Connections: perThousand(of('on')),
  targets: { ratio: 0.8, copiesLost: 0 },
};
console.table([
  { mode: 'replication off', 'conn/s': off, 'copies lost': '-', 'CPU ms / 1000 conn': '-' },
  { mode: 'vipshift replication', 'conn/s': on, 'copies lost': summary.copiesLost, 'CPU ms / 1000 conn': summary.cpuMsPer1000Connections },
  { mode: 'conntrackd FT-FW', 'conn/s': conntrackd.connPerSecond, 'copies lost': conntrackd.copiesLost, 'CPU ms / 1000 conn': conntrackd.cpuMsPer1000Connections },
]);
console.log(`ratio on/off ${summary.ratio} (target ≥ 0.8)`);
fs.mkdirSync('bench/results', { recursive: true });
fs.writeFileSync(
  'bench/results/replication.json',
  `${JSON.stringify({ bench: 'replication', date: new Date().toISOString(), host: { cpus: os.cpus().length, load: os.loadavg() }, summary, conntrackd, rounds: results }, null, 2)}\n`,
);
console.log('wrote bench/results/replication.json');
