/**
 * VRRP takeover time: the master is killed (SIGKILL, so no priority-0 goodbye) and the backup
 * must own the address and have sent its gratuitous ARP. Measured from the wire and the
 * kernel's own events: tcpdump on the bridge (the master's last advert, the backup's gARP) and
 * `ip monitor address` in the backup's namespace (the address appearing).
 * Pairs (backup ← master): vipshift ← vipshift, vipshift ← keepalived, keepalived ← keepalived.
 * Run: npx tsx bench/vrrp.ts [--v2] [--vmac] [INTERVAL...]  (root; makes and removes its own namespaces)
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import {
  Capture,
  Segment,
  VipshiftVrrp,
  keepalivedConf,
  removeLeftovers,
  sleep,
  waitFor,
  type WireEvent,
} from '../test/support/vrrp-segment.js';

const VIP = '203.0.113.10';
const VRID = 51;
const MASTER = { ip: '203.0.113.2', priority: 200 };
const BACKUP = { ip: '203.0.113.3', priority: 100 };
/**
 * `npx tsx bench/vrrp.ts [--v2] [--vmac] [INTERVAL...]` runs only the given advert intervals
 * (seconds); --v2: VRRPv2 on both sides (whole seconds), --vmac: keepalived's use_vmac on both.
 */
const FLAGS = process.argv.slice(2).filter((a) => a.startsWith('--'));
const VERSION: 2 | 3 = FLAGS.includes('--v2') ? 2 : 3;
const VMAC = FLAGS.includes('--vmac');
const ARGS = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const INTERVALS = ARGS.length > 0 ? ARGS.map(Number) : VERSION === 2 ? [1] : [1, 0.1, 0.05];
const VARIANT = `${VERSION === 2 ? '-v2' : ''}${VMAC ? '-vmac' : ''}`;
const TRIALS: Record<string, number> = { '1': 3, '0.1': 7, '0.05': 7 };
type Speaker = 'vipshift' | 'keepalived';
const PAIRS: [backup: Speaker, master: Speaker][] = [
  ['vipshift', 'vipshift'],
  ['vipshift', 'keepalived'],
  ['keepalived', 'keepalived'],
];

const root = new URL('..', import.meta.url).pathname;
/** RFC 5798 §6.1; RFC 3768's Skew_Time is in seconds whatever the interval. */
const masterDownInterval = (interval: number, priority: number) => 3 * interval * 1000 + ((256 - priority) * (VERSION === 2 ? 1 : interval) * 1000) / 256;

/** `ip -ts monitor address` in a namespace: when the VIP appears there. */
class AddressMonitor {
  added: number | undefined;
  constructor(segment: Segment, ns: string) {
    const child = segment.spawn(ns, 'ip', ['-ts', 'monitor', 'address']);
    child.stdout?.on('data', (d: Buffer) => {
      for (const line of d.toString().split('\n')) {
        const m = /^\[(\S+)\] (?!Deleted)\d+: \S+\s+inet (\S+)/.exec(line);
        if (m && m[2] === `${VIP}/24` && this.added === undefined) this.added = Date.parse(`${m[1]}Z`);
      }
    });
  }
}

interface Started {
  kill: () => void;
  /** Resolves once the speaker runs and, as backup, has followed the master's adverts. */
  following: () => Promise<void>;
}

function start(segment: Segment, who: Speaker, ns: string, priority: number, interval: number): Started {
  if (who === 'keepalived') {
    const k = segment.keepalived(ns, keepalivedConf({ routerId: ns, vrid: VRID, priority, advertInterval: interval, addresses: [`${VIP}/24`], version: VERSION, useVmac: VMAC }));
    let log = '';
    k.child.stdout?.on('data', (d: Buffer) => (log += d.toString()));
    k.child.stderr?.on('data', (d: Buffer) => (log += d.toString()));
    return {
      // The VRRP child sends the adverts; -R keeps the parent from respawning it.
      kill: () => process.kill(k.pid(), 'SIGKILL'),
      following: async () => {
        await waitFor('keepalived in BACKUP state', () => log.includes('Entering BACKUP STATE'), 20_000, 10);
        await sleep(5 * interval * 1000);
      },
    };
  }
  const v = new VipshiftVrrp(segment, ns, {
    instances: [{ name: 'vip1', interface: 'eth0', vrid: VRID, priority, advertIntervalSeconds: interval, version: VERSION, useVmac: VMAC, addresses: [`${VIP}/24`] }],
  });
  return {
    kill: () => v.child.kill('SIGKILL'),
    following: async () => {
      await v.started();
      const end = Date.now() + 20_000;
      while (((await v.state()).instances[0]?.advertsReceived ?? 0) < 5) {
        if (Date.now() > end) throw new Error('vipshift backup hears no adverts');
        await sleep(interval * 1000);
      }
    },
  };
}

interface Trial {
  /** Backup owns the address and has sent its gARP, ms after the master's last advert. */
  afterLastAdvert: number;
  /** The same, ms after the kill. */
  afterKill: number;
  garpAfterLastAdvert: number;
  addressAfterLastAdvert: number;
}

async function trial(backup: Speaker, master: Speaker, interval: number): Promise<Trial> {
  const segment = new Segment();
  try {
    const a = segment.addHost('a', `${MASTER.ip}/24`);
    const b = segment.addHost('b', `${BACKUP.ip}/24`);
    const capture = new Capture(segment);
    await capture.ready;
    const holds = (ns: string) => execFileSync('ip', ['-n', ns, '-4', '-o', 'addr', 'show'], { encoding: 'utf8' }).includes(`${VIP}/24`);
    const m = start(segment, master, a, MASTER.priority, interval);
    await waitFor('the master to hold the VIP', () => holds(a), 20_000, 20);
    const monitor = new AddressMonitor(segment, b);
    // The backup must be up and following the master before the kill (node's start-up under
    // load must not count as takeover time).
    await start(segment, backup, b, BACKUP.priority, interval).following();
    if (holds(b)) throw new Error(`${backup} backup took the VIP while the master was alive (split brain)`);
    const masterMac = capture.events.find((e) => e.kind === 'advert' && e.source === MASTER.ip)?.mac;
    const killedAt = Date.now();
    m.kill();
    // With the virtual MAC both announce the same MAC: after the kill only the backup can.
    const fromBackup = (e: WireEvent) => e.kind === 'garp' && e.source === VIP && e.at > killedAt && (VMAC || e.mac !== masterMac);
    const limit = masterDownInterval(interval, BACKUP.priority) + 3000;
    const garp = await waitFor('the backup gratuitous ARP', () => capture.events.find(fromBackup), limit, 25).catch((err: unknown) => {
      const after = capture.events.filter((e) => e.at > killedAt + 5);
      throw new Error(`${String(err)}; backup holds the VIP: ${holds(b)}; on the wire after the kill: ${JSON.stringify(after.slice(0, 6))}`);
    });
    const added = await waitFor('the address on the backup', () => monitor.added, 2000, 25);
    const last = capture.events.filter((e) => e.kind === 'advert' && e.source === MASTER.ip && e.at <= killedAt + 5).at(-1);
    if (!last) throw new Error('no advert from the master on the wire');
    const done = Math.max(garp.at, added);
    return {
      afterLastAdvert: done - last.at,
      afterKill: done - killedAt,
      garpAfterLastAdvert: garp.at - last.at,
      addressAfterLastAdvert: added - last.at,
    };
  } finally {
    segment.destroy();
  }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length % 2 ? (s[(s.length - 1) / 2] as number) : ((s[s.length / 2 - 1] as number) + (s[s.length / 2] as number)) / 2;
};
const round = (x: number) => Math.round(x * 10) / 10;

async function main(): Promise<void> {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
  removeLeftovers();
  const loadBefore = loadavg();
  const rows: Record<string, unknown>[] = [];
  try {
    for (const interval of INTERVALS) {
      for (const [backup, master] of PAIRS) {
        const trials: Trial[] = [];
        for (let i = 0; i < (TRIALS[String(interval)] ?? 3); i++) trials.push(await trial(backup, master, interval));
        const mdi = masterDownInterval(interval, BACKUP.priority);
        const after = trials.map((t) => t.afterLastAdvert);
        const row = {
          pair: `${backup} ← ${master}`,
          advertInterval: interval,
          trials: trials.length,
          masterDownInterval: round(mdi),
          target: round(mdi + 20),
          medianAfterLastAdvert: round(median(after)),
          maxAfterLastAdvert: round(Math.max(...after)),
          medianAfterKill: round(median(trials.map((t) => t.afterKill))),
          medianGarpAfterLastAdvert: round(median(trials.map((t) => t.garpAfterLastAdvert))),
          medianAddressAfterLastAdvert: round(median(trials.map((t) => t.addressAfterLastAdvert))),
          withinTarget: Math.max(...after) <= mdi + 20,
          samples: trials.map((t) => round(t.afterLastAdvert)),
        };
        rows.push(row);
        process.stderr.write(`${row.pair} @ ${interval}s: median ${row.medianAfterLastAdvert} ms, max ${row.maxAfterLastAdvert} ms (MDI ${row.masterDownInterval})\n`);
      }
    }
  } finally {
    removeLeftovers();
  }
  const header = ['pair (backup ← master)', 'advert', 'MDI ms', 'target', 'median', 'max', 'from kill', 'ok'];
  const table = rows.map((r) => [r.pair, `${r.advertInterval} s`, r.masterDownInterval, r.target, r.medianAfterLastAdvert, r.maxAfterLastAdvert, r.medianAfterKill, r.withinTarget ? 'yes' : 'NO'].map(String));
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => (r[i] as string).length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i] as number)).join(' | ')} |`;
  console.log(`VRRPv${VERSION}${VMAC ? ', virtual MAC' : ''}`);
  console.log('takeover: the master killed → the backup owns the VIP and sent its gratuitous ARP (ms after the master\'s last advert on the wire)');
  console.log([line(header), line(widths.map((w) => '-'.repeat(w))), ...table.map(line)].join('\n'));
  console.log(`load average (1 min) on ${cpus().length} CPUs: ${loadBefore[0]?.toFixed(1)} before, ${loadavg()[0]?.toFixed(1)} after`);
  mkdirSync(join(root, 'bench/results'), { recursive: true });
  writeFileSync(
    join(root, `bench/results/vrrp${VARIANT}.json`),
    `${JSON.stringify({ benchmark: `vrrp-takeover${VARIANT}`, vrrpVersion: VERSION, virtualMac: VMAC, date: new Date().toISOString(), cpus: cpus().length, loadAverage1m: { before: loadBefore[0], after: loadavg()[0] }, backupPriority: BACKUP.priority, masterPriority: MASTER.priority, keepalived: execFileSync('keepalived', ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).split('\n')[0] || 'keepalived', rows }, null, 2)}\n`,
  );
}

main().catch((err: unknown) => {
  console.error(err);
  removeLeftovers();
  process.exitCode = 1;
});
