/**
 * bench-vrrp-stall: does a backup whose speaker was not scheduled for a moment take a live
 * master for dead when it wakes? In the lab, lb2's VRRP child (the backup of vip1, vip2 and
 * vip4, lb1 their master) is stopped (SIGSTOP) for STALL_MS (default 300, twice BFD's 150 ms
 * detection) REPS times (default 20), 1.5 s apart, while lb1's adverts and BFD packets keep
 * arriving in its sockets. Counted from the appliances' logs: lb2's takeovers of a master
 * ("master down" transitions: all false, lb1 never stopped), lb2's BFD sessions to lb1 gone
 * Down (diag 1, its own detection; diag 3, lb1 said so), and lb1's to lb2 (true: lb2 was
 * silent longer than the detection time). Merged into bench/results/vrrp-stall.json as LABEL
 * (default `latest`).
 */
import fs from 'node:fs';
import path from 'node:path';
import { labDown, labUp, siteFor } from '../src/lab/lab.js';
import { labProcessPid } from '../src/lab/processes.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const REPS = Number(process.env.REPS ?? 20);
const STALL_MS = Number(process.env.STALL_MS ?? 300);
const name = 'vbstall';

await labUp({ name, owned: true });
try {
  const dir = siteFor(name).stateDir;
  const appliance = labProcessPid(dir, 'lb2-appliance');
  const children = fs.readFileSync(`/proc/${appliance}/task/${appliance}/children`, 'utf8').trim().split(/\s+/).map(Number);
  const speaker = children.find((pid) => fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('\0vrrp\0'));
  if (!speaker) throw new Error(`lb2's VRRP child not found among ${children.join(', ')}`);
  const logOf = (lb: string) => fs.readFileSync(path.join(dir, `${lb}-appliance.log`), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  const counts = () => {
    const lb2 = logOf('lb2');
    const down = (log: Record<string, unknown>[], diag?: number) => log.filter((e) => e.msg === 'BFD session' && e.to === 'Down' && (diag === undefined || e.diag === diag)).length;
    return {
      lb2Takeovers: lb2.filter((e) => e.msg === 'transition' && e.to === 'master' && String(e.reason).startsWith('master down')).length,
      lb2BfdDownDetected: down(lb2, 1),
      lb2BfdDownSignalled: down(lb2, 3),
      lb1BfdDown: down(logOf('lb1')),
    };
  };
  await sleep(3000);
  const before = counts();
  for (let i = 0; i < REPS; i++) {
    process.kill(speaker, 'SIGSTOP');
    await sleep(STALL_MS);
    process.kill(speaker, 'SIGCONT');
    await sleep(1500);
  }
  const after = counts();
  const result = {
    at: new Date().toISOString(),
    reps: REPS,
    stallMs: STALL_MS,
    ...Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - before[k as keyof typeof before]])),
  };
  const file = 'bench/results/vrrp-stall.json';
  const previous = fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>) : {};
  fs.writeFileSync(file, `${JSON.stringify({ ...previous, [process.env.LABEL ?? 'latest']: result }, null, 2)}\n`);
  console.log(JSON.stringify(result));
} finally {
  await labDown({ name });
}
