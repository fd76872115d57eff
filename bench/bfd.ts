/**
 * `make bench-bfd`: BFD false positives between the lab's appliances on a loaded machine. The
 * failover lab (standbys armed, replication on) idles while CPU hogs (busy loops at nice 0,
 * one per core by default) compete with it; every BFD session that goes Down from Up, every
 * takeover by BFD and every VRRP transition to master in that window is counted from the
 * appliances' logs. A false positive is a session Down while both appliances run; a split
 * brain is a transition to master. Run it beside nothing else: the hogs take the machine.
 *
 *   npx tsx bench/bfd.ts [--seconds 120] [--hogs 2] [--hog-nice 0] [--min-tx 50] [--min-rx 50] [--multiplier 3]
 * --hog-nice=-10 puts the hogs level with the speaker's own priority (src/vrrp/process.ts).
 * Writes bench/results/bfd.json (bfd-<tx>x<mult>[-nice<n>].json for other settings).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { labDown, labUp, siteFor } from '../src/lab/lab.js';
import { LAB_BFD } from '../src/lab/site.js';
import { failoverLab, waitFor } from '../test/integration/helpers/replication-lab.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '120' },
    hogs: { type: 'string', default: String(os.cpus().length) },
    'hog-nice': { type: 'string', default: '0' },
    'min-tx': { type: 'string', default: String(LAB_BFD.minTxMs) },
    'min-rx': { type: 'string', default: String(LAB_BFD.minRxMs) },
    multiplier: { type: 'string', default: String(LAB_BFD.multiplier) },
  },
});
const seconds = Number(values.seconds);
const hogs = Number(values.hogs);
const hogNice = Number(values['hog-nice']);
const bfd = { minTxMs: Number(values['min-tx']), minRxMs: Number(values['min-rx']), multiplier: Number(values.multiplier) };
const name = 'bfdfp';

type LogLine = Record<string, unknown> & { time?: number; msg?: string };

/** The appliances' JSON log lines (the speaker child writes to its appliance's log). */
function logLines(stateDir: string, appliance: string): LogLine[] {
  const file = path.join(stateDir, `${appliance}-appliance.log`);
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  return text.split('\n').flatMap((l) => {
    try {
      return [JSON.parse(l) as LogLine];
    } catch {
      return [];
    }
  });
}

const lab = failoverLab({});
await labUp({
  name,
  configure: {
    ...lab,
    appliance: (n, c) => {
      const d = lab.appliance(n, c);
      return { ...d, vrrp: d.vrrp && { ...d.vrrp, instances: (d.vrrp.instances ?? []).map((i) => ({ ...i, bfd })) } };
    },
  },
});
const site = siteFor(name);
const appliances = ['lb1', 'lb2'];
const hogProcesses: ChildProcess[] = [];
try {
  const logFiles = fs.readdirSync(site.stateDir).filter((f) => f.endsWith('.log'));
  if (!logFiles.some((f) => f === 'lb1-appliance.log')) throw new Error(`no lb1-appliance.log in ${site.stateDir}: ${logFiles.join(', ')}`);
  // Every session Up (ext and int, both ways) before the window opens.
  await waitFor('BFD Up between the appliances', async () =>
    appliances.every((a) => new Set(logLines(site.stateDir, a).filter((l) => l.msg === 'BFD session' && l.to === 'Up').map((l) => `${l.interface}|${l.peer}`)).size >= 2),
    30_000, 500);
  await new Promise((r) => setTimeout(r, 2000));
  const from = Date.now();
  for (let i = 0; i < hogs; i++) {
    const hog = spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' });
    if (hog.pid) os.setPriority(hog.pid, hogNice);
    hogProcesses.push(hog);
  }
  await new Promise((r) => setTimeout(r, seconds * 1000));
  for (const h of hogProcesses) h.kill('SIGKILL');
  const to = Date.now();
  const inWindow = (l: LogLine) => typeof l.time === 'number' && l.time >= from && l.time <= to;
  const per = appliances.map((a) => {
    const lines = logLines(site.stateDir, a).filter(inWindow);
    return {
      appliance: a,
      bfdDowns: lines.filter((l) => l.msg === 'BFD session' && l.from === 'Up' && l.to === 'Down').length,
      bfdTakeovers: lines.filter((l) => l.msg === 'transition' && l.reason === 'master down (bfd)').length,
      suppressed: lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('BFD says the master is down')).length,
      toMaster: lines.filter((l) => l.msg === 'transition' && l.to === 'master').length,
    };
  });
  const summary = {
    seconds,
    hogs,
    hogNice,
    bfd,
    load: os.loadavg(),
    bfdDowns: per.reduce((n, p) => n + p.bfdDowns, 0),
    bfdTakeovers: per.reduce((n, p) => n + p.bfdTakeovers, 0),
    suppressed: per.reduce((n, p) => n + p.suppressed, 0),
    toMaster: per.reduce((n, p) => n + p.toMaster, 0),
  };
  console.table(per);
  console.log(`${seconds} s with ${hogs} CPU hogs at nice ${hogNice}, BFD ${bfd.minTxMs} ms × ${bfd.multiplier}: ${summary.bfdDowns} BFD Downs, ${summary.bfdTakeovers} takeovers by BFD, ${summary.toMaster} transitions to master; load ${summary.load.map((x) => x.toFixed(2)).join(' ')}`);
  const standard = bfd.minTxMs === LAB_BFD.minTxMs && bfd.minRxMs === LAB_BFD.minRxMs && bfd.multiplier === LAB_BFD.multiplier;
  const out = `bench/results/bfd${standard ? '' : `-${bfd.minTxMs}x${bfd.multiplier}`}${hogNice === 0 ? '' : `-nice${hogNice}`}.json`;
  fs.mkdirSync('bench/results', { recursive: true });
  fs.writeFileSync(out, `${JSON.stringify({ bench: 'bfd', date: new Date().toISOString(), host: { cpus: os.cpus().length }, summary, appliances: per }, null, 2)}\n`);
  console.log(`wrote ${out}`);
} finally {
  for (const h of hogProcesses) h.kill('SIGKILL');
  await labDown({ name });
}
