/**
 * 250 VIPs on one pair of appliances, as VRRP sees them: one instance per VIP (VRID 1..250 on
 * one interface, VRRP's limit being 255), every instance advertising each ADVERT_S (0.1 s),
 * lb1 master of all of them (priority 200), lb2 backup (100). Measured once every instance has
 * settled: each side's speaker CPU (all processes of its namespace, from /proc utime+stime)
 * over WINDOW_S, adverts on the wire per second (tcpdump on the bridge), and the transitions
 * during the window (a flap is a backup that missed Master_Down_Interval). The same for
 * keepalived (Debian's) beside it. Needs root; makes and removes its own namespaces.
 *
 * Environment: INSTANCES (250), ADVERT_S (0.1), WINDOW_S (20).
 * Writes bench/results/vrrp-scale.json.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../src/lab/lab.js';
import { processCpuSeconds } from '../src/lab/processes.js';
import { Segment, VipshiftVrrp, removeLeftovers, sh, sleep } from '../test/support/vrrp-segment.js';

const INSTANCES = Number(process.env.INSTANCES ?? 250);
const ADVERT_S = Number(process.env.ADVERT_S ?? 0.1);
const WINDOW_S = Number(process.env.WINDOW_S ?? 20);
const PREFIX = 'vtvsc';
const HOSTS = { lb1: { ip: '203.0.113.2', priority: 200 }, lb2: { ip: '203.0.113.3', priority: 100 } } as const;
const round2 = (x: number) => Math.round(x * 100) / 100;

/** VIP n's address: 198.18.x.y, one /32 per instance. */
const vipAddress = (n: number) => `198.18.${Math.floor(n / 250)}.${(n % 250) + 1}`;

/** CPU seconds used so far by every process in a namespace. */
function cpuSeconds(ns: string): number {
  let seconds = 0;
  for (const pid of sh('ip', ['netns', 'pids', ns]).split(/\s+/).filter(Boolean)) {
    try {
      seconds += processCpuSeconds(Number(pid));
    } catch {
      // gone meanwhile
    }
  }
  return seconds;
}

function keepalivedConf(routerId: string, priority: number): string {
  const instances = Array.from({ length: INSTANCES }, (_, i) => `vrrp_instance vi${i + 1} {
  state BACKUP
  interface eth0
  virtual_router_id ${i + 1}
  priority ${priority}
  advert_int ${ADVERT_S}
  virtual_ipaddress {
    ${vipAddress(i)}/32 dev eth0
  }
}`);
  return `global_defs {\n  router_id ${routerId}\n  vrrp_version 3\n  vrrp_garp_master_repeat 1\n  vrrp_garp_master_delay 0\n}\n${instances.join('\n')}\n`;
}

/** Adverts on the bridge during `seconds`, by tcpdump (VRRP is IP protocol 112). */
async function advertsPerSecond(segment: Segment, seconds: number): Promise<number> {
  const dump = spawn('ip', ['netns', 'exec', segment.sw, 'tcpdump', '-i', 'br0', '-n', '-q', '-l', 'ip proto 112'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let lines = 0;
  dump.stdout.on('data', (d: Buffer) => (lines += d.toString().split('\n').length - 1));
  await sleep(seconds * 1000);
  dump.kill('SIGTERM');
  return round2(lines / seconds);
}

interface SideResult {
  cpu_percent: number;
  cpu_s: number;
}

interface Result {
  speaker: 'vipshift' | 'keepalived';
  instances: number;
  advert_s: number;
  settle_ms: number;
  masters_on_lb1: number;
  addresses_on_lb2: number;
  transitions_in_window: number;
  adverts_per_s: number;
  lb1_master: SideResult;
  lb2_backup: SideResult;
  load_avg_1m: number;
}

async function measure(segment: Segment, nss: Record<'lb1' | 'lb2', string>, settled: () => Promise<boolean>, transitions: () => number, speaker: Result['speaker'], started: number): Promise<Result> {
  // Until every instance is master on lb1 and backup on lb2 (measured anyway after a minute).
  for (const end = Date.now() + 60_000; Date.now() < end && !(await settled()); ) await sleep(200);
  const settleMs = Date.now() - started;
  // A few Master_Down_Intervals more: every backup has heard its master.
  await sleep(1000);
  const before = transitions();
  const load = os.loadavg()[0]!;
  const cpu0 = { lb1: cpuSeconds(nss.lb1), lb2: cpuSeconds(nss.lb2) };
  const t0 = performance.now();
  const wire = advertsPerSecond(segment, Math.min(5, WINDOW_S));
  await sleep(WINDOW_S * 1000);
  const secs = (performance.now() - t0) / 1000;
  const side = (name: 'lb1' | 'lb2'): SideResult => {
    const used = cpuSeconds(nss[name]) - cpu0[name];
    return { cpu_s: round2(used), cpu_percent: round2((100 * used) / secs) };
  };
  const lb1 = side('lb1');
  const lb2 = side('lb2');
  return {
    speaker,
    instances: INSTANCES,
    advert_s: ADVERT_S,
    settle_ms: settleMs,
    masters_on_lb1: segment.addresses(nss.lb1).length - 1,
    addresses_on_lb2: segment.addresses(nss.lb2).length - 1,
    transitions_in_window: transitions() - before,
    adverts_per_s: await wire,
    lb1_master: lb1,
    lb2_backup: lb2,
    load_avg_1m: round2(load),
  };
}

async function vipshift(): Promise<Result> {
  const segment = new Segment(PREFIX);
  try {
    const nss = { lb1: segment.addHost('lb1', `${HOSTS.lb1.ip}/24`), lb2: segment.addHost('lb2', `${HOSTS.lb2.ip}/24`) };
    const started = Date.now();
    const speakers = Object.fromEntries(
      (['lb1', 'lb2'] as const).map((name) => [
        name,
        new VipshiftVrrp(segment, nss[name], {
          instances: Array.from({ length: INSTANCES }, (_, i) => ({
            name: `vip${i + 1}`,
            interface: 'eth0',
            vrid: i + 1,
            priority: HOSTS[name].priority,
            advertIntervalSeconds: ADVERT_S,
            addresses: [`${vipAddress(i)}/32`],
          })),
        }),
      ]),
    ) as Record<'lb1' | 'lb2', VipshiftVrrp>;
    await Promise.all(Object.values(speakers).map((s) => s.started()));
    const settled = async () => {
      const [a, b] = await Promise.all([speakers.lb1.state(), speakers.lb2.state()]);
      return a.instances.every((i) => i.state === 'master') && b.instances.every((i) => i.state === 'backup' && i.advertsReceived > 0);
    };
    return await measure(segment, nss, settled, () => speakers.lb1.transitions().length + speakers.lb2.transitions().length, 'vipshift', started);
  } finally {
    segment.destroy();
  }
}

async function keepalived(): Promise<Result> {
  const segment = new Segment(PREFIX);
  try {
    const nss = { lb1: segment.addHost('lb1', `${HOSTS.lb1.ip}/24`), lb2: segment.addHost('lb2', `${HOSTS.lb2.ip}/24`) };
    const started = Date.now();
    const logs: Record<string, string> = { lb1: '', lb2: '' };
    for (const name of ['lb1', 'lb2'] as const) {
      const k = segment.keepalived(nss[name], keepalivedConf(name, HOSTS[name].priority));
      k.child.stdout?.on('data', (d: Buffer) => (logs[name] += d.toString()));
      k.child.stderr?.on('data', (d: Buffer) => (logs[name] += d.toString()));
    }
    const count = (s: string, what: string) => s.split(what).length - 1;
    const settled = async () => segment.addresses(nss.lb1).length - 1 === INSTANCES && segment.addresses(nss.lb2).length === 1 && count(logs.lb2!, 'Entering BACKUP STATE') >= INSTANCES;
    const transitions = () => count(logs.lb1! + logs.lb2!, 'Entering ');
    return await measure(segment, nss, settled, transitions, 'keepalived', started);
  } finally {
    segment.destroy();
  }
}

removeLeftovers(PREFIX);
const startLoad = os.loadavg().map(round2);
const results: Result[] = [];
for (const run of [vipshift, keepalived]) {
  const r = await run();
  console.log(JSON.stringify(r));
  results.push(r);
}
console.log('\nspeaker     instances  advert_s  masters  adverts/s  cpu% lb1 (master)  cpu% lb2 (backup)  transitions  load');
for (const r of results) {
  console.log(
    [r.speaker.padEnd(10), String(r.instances).padStart(9), String(r.advert_s).padStart(9), String(r.masters_on_lb1).padStart(8), String(r.adverts_per_s).padStart(10), String(r.lb1_master.cpu_percent).padStart(18), String(r.lb2_backup.cpu_percent).padStart(18), String(r.transitions_in_window).padStart(12), String(r.load_avg_1m).padStart(6)].join(' '),
  );
}
const out = path.join(REPO_ROOT, 'bench', 'results', 'vrrp-scale.json');
fs.writeFileSync(out, `${JSON.stringify({ bench: 'vrrp-scale', date: new Date().toISOString(), kernel: os.release(), machine: { cores: os.cpus().length }, load_avg: startLoad, window_s: WINDOW_S, results }, null, 2)}\n`);
console.log(`wrote ${path.relative(REPO_ROOT, out)}`);
