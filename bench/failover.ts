/**
 * `make bench-failover`: a power loss of lb1 under 1,000 live echo connections (500 through
 * vip1, dnat; 500 through vip4, fullnat), lb2 backing it up at the lab's 0.1 s VRRP advert
 * interval. Per connection, the longest gap between two echoes (the last good reply before
 * the loss to the first after it); median and max over connections, and how many survived.
 * Also the takeover's own steps on lb2 (from its report) and the time from the power cut to
 * the takeover's start (VRRP's detection). Targets: 100 % survive, max gap ≤ 500 ms.
 * Without options it measures the lab exactly as `lab up` writes it — the defaults (standby
 * on, the default hold queue, keepers with sockdiag) — and records that in the results.
 *
 *   npx tsx bench/failover.ts [--rounds 3] [--interval 50] [--peer-timeout MS]
 * --peer-timeout overrides failover.peerTimeoutMs (default 50 ms; 0: no peer is asked);
 * --advert-interval overrides the lab's VRRP advertisement interval (seconds, default 0.1);
 * --bfd TXxMULT (e.g. 20x3: min TX = min RX = 20 ms, Detect Mult 3) or `off` overrides the lab's BFD.
 * Writes bench/results/failover.json.
 */
import fs from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { labDown, labUp, siteFor } from '../src/lab/lab.js';
import { LAB_ADVERT_INTERVAL, LAB_BFD } from '../src/lab/site.js';
import { startTraffic } from '../src/lab/traffic.js';
import type { TakeoverReport } from '../src/replication/takeover.js';
import { agentStatus, copiesOf, keeperStatus, powerLoss, waitFor } from '../test/integration/helpers/replication-lab.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, interval: { type: 'string', default: '50' }, 'peer-timeout': { type: 'string' }, 'advert-interval': { type: 'string' }, bfd: { type: 'string' } } });
const advertInterval = values['advert-interval'] === undefined ? LAB_ADVERT_INTERVAL : Number(values['advert-interval']);
const peerTimeout = values['peer-timeout'] === undefined ? undefined : Number(values['peer-timeout']);
const rounds = Number(values.rounds);
const bfdMatch = values.bfd === undefined || values.bfd === 'off' ? undefined : /^(\d+)x(\d+)$/.exec(values.bfd);
if (values.bfd !== undefined && values.bfd !== 'off' && !bfdMatch) throw new Error(`--bfd: TXxMULT (e.g. 50x3) or off, not '${values.bfd}'`);
const bfd = values.bfd === 'off' ? undefined : bfdMatch ? { minTxMs: Number(bfdMatch[1]), minRxMs: Number(bfdMatch[1]), multiplier: Number(bfdMatch[2]) } : LAB_BFD;
const intervalMs = Number(values.interval);
/** No option changes the lab's configuration: the figures are the defaults'. */
const defaults = values.bfd === undefined && values['advert-interval'] === undefined && peerTimeout === undefined;
const PER_VIP = 500;

interface Round {
  survived: number;
  connections: number;
  errors: Record<string, number>;
  gapMs: { median: number; p99: number; max: number };
  /** Power cut (all of lb1's processes frozen) → takeover start on lb2: detection (BFD, else Master_Down_Interval) and the event. */
  detectionMs: number;
  /** How long freezing, unplugging and killing lb1 took (the cut is its start). */
  cutMs: number;
  takeovers: Pick<TakeoverReport, 'vip' | 'created' | 'released' | 'ms'>[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function round(i: number): Promise<Round> {
  const name = `rplbf${i}`;
  // Only what an option asks for is changed: by default the lab runs its own configuration.
  await labUp({
    name,
    ...(defaults
      ? {}
      : {
          configure: {
            appliance: (_n, d) => {
              const vrrp = d.vrrp && { ...d.vrrp, instances: (d.vrrp.instances ?? []).map(({ bfd: _lab, ...i }) => ({ ...i, advertIntervalSeconds: advertInterval, ...(bfd ? { bfd } : {}) })) };
              return { ...d, vrrp, ...(peerTimeout === undefined ? {} : { failover: { ...d.failover, peerTimeoutMs: peerTimeout } }) };
            },
          },
        }),
  });
  const site = siteFor(name);
  try {
    const traffic = [site.vips.find((v) => v.name === 'vip1')!, site.vips.find((v) => v.name === 'vip4')!].map((v) =>
      startTraffic(`${name}-client`, { address: v.address, port: 7, connections: PER_VIP, intervalMs, timeoutMs: 10_000, perConnection: true }),
    );
    await Promise.all(traffic.map((t) => t.established));
    await waitFor('every copy on the keepers', async () => {
      const ks = await Promise.all(['srv1', 'srv2', 'srv3'].map((s) => keeperStatus(site, s)));
      return copiesOf(ks[0]!, 'vip1') === PER_VIP && ks.reduce((n, k) => n + copiesOf(k, 'vip4'), 0) === PER_VIP;
    }, 30_000);
    await new Promise((r) => setTimeout(r, 1000));
    const cutAt = Date.now();
    await powerLoss(site, 'lb1');
    const cutMs = Date.now() - cutAt;
    let takeovers: TakeoverReport[] = [];
    await waitFor('lb2 to take vip1 and vip4 over', async () => {
      // Only takeovers after the cut (a VRRP race at the lab's start may have made one before).
      takeovers = (await agentStatus(site, 'lb2')).failover.takeovers.filter((t) => (t.vip === 'vip1' || t.vip === 'vip4') && t.startedAt >= cutAt);
      return takeovers.length === 2;
    }, 30_000, 250);
    await new Promise((r) => setTimeout(r, 3000));
    const summaries = await Promise.all(traffic.map((t) => t.stop()));
    const gaps = summaries.flatMap((s) => s.perConnection!.map((c) => c.longestGapMs));
    const errors: Record<string, number> = {};
    for (const s of summaries) for (const [k, n] of Object.entries(s.errors)) errors[k] = (errors[k] ?? 0) + n;
    return {
      survived: summaries.reduce((n, s) => n + s.connections.ok, 0),
      connections: summaries.reduce((n, s) => n + s.connections.requested, 0),
      errors,
      gapMs: { median: median(gaps), p99: [...gaps].sort((a, b) => a - b)[Math.floor(gaps.length * 0.99)]!, max: Math.max(...gaps) },
      detectionMs: Math.min(...takeovers.map((t) => t.startedAt)) - cutAt,
      cutMs,
      takeovers: takeovers.map(({ vip, created, released, ms }) => ({ vip, created, released, ms })),
    };
  } catch (err) {
    // Keep the lab's logs for the post-mortem.
    fs.cpSync(site.stateDir, `/tmp/vipshift-bench-failover-${name}`, { recursive: true });
    throw err;
  } finally {
    await labDown({ name });
  }
}

const results: Round[] = [];
const labBfd = bfd === LAB_BFD;
const variant = [
  peerTimeout === undefined ? '' : `-peer-timeout-${peerTimeout}`,
  advertInterval === LAB_ADVERT_INTERVAL ? '' : `-advert-${advertInterval}`,
  labBfd ? '' : bfd ? `-bfd-${bfd.minTxMs}x${bfd.multiplier}` : '-no-bfd',
].join('');
const out = `bench/results/failover${variant}.json`;
for (let i = 0; i < rounds; i++) {
  const r = await round(i);
  results.push(r);
  const t = r.takeovers.map((x) => `${x.vip}: fetched ${x.ms.fetched} installed ${x.ms.installed} active ${x.ms.activated} ms`).join('; ');
  console.log(`round ${i + 1}: ${r.survived}/${r.connections} survived, gap median ${r.gapMs.median} ms max ${r.gapMs.max} ms, detection ${r.detectionMs} ms; ${t}`);
}
const survived = results.reduce((n, r) => n + r.survived, 0);
const total = results.reduce((n, r) => n + r.connections, 0);
const summary = {
  configuration: defaults ? 'the lab\'s defaults (failover.standby on by default, hold queue 4096, keepers with sockdiag)' : 'changed by options',
  connections: PER_VIP * 2,
  rounds,
  intervalMs,
  peerTimeoutMs: peerTimeout ?? 50,
  advertIntervalS: advertInterval,
  bfd: bfd ?? 'off',
  survivedPercent: Math.round((survived / total) * 10000) / 100,
  gapMs: { median: median(results.map((r) => r.gapMs.median)), max: Math.max(...results.map((r) => r.gapMs.max)) },
  detectionMs: median(results.map((r) => r.detectionMs)),
  targets: { survivedPercent: 100, maxGapMs: 500 },
  met: { survived: survived === total, maxGap: Math.max(...results.map((r) => r.gapMs.max)) <= 500 },
};
console.table([{ ...summary, gapMs: undefined, targets: undefined, met: undefined, 'gap median ms': summary.gapMs.median, 'gap max ms': summary.gapMs.max }]);
fs.mkdirSync('bench/results', { recursive: true });
fs.writeFileSync(
  out,
  `${JSON.stringify({ bench: 'failover', date: new Date().toISOString(), host: { cpus: os.cpus().length, load: os.loadavg() }, summary, rounds: results }, null, 2)}\n`,
);
console.log(`wrote ${out}`);
