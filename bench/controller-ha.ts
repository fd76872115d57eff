/**
 * Takeover of the control plane: three controllers on three etcd members (TLS) in the lab
 * (`lab up --controllers 3`), 60 live connections to vip1 exchanging a message every 20 ms. In
 * each round a migration of vip1 is started and the leader is SIGKILLed in the middle of one
 * step (the test hook holds every step 1.5 s so that the kill lands inside it); measured from
 * the SIGKILL:
 *  - elected: a follower says it leads (every controller asked on its socket every 20 ms);
 *  - ended: the new leader has ended the interrupted migration (given back or finished);
 *  - pause: the longest gap between two echoes on any live connection through the round;
 * and every connection's fate (a reset fails the round). The killed controller is started
 * again before the next round, so three run each time.
 * Run: npx tsx bench/controller-ha.ts [rounds per step, default 1] — prints a table, writes
 * bench/results/controller-ha.json.
 */
import fs from 'node:fs';
import os from 'node:os';
import { ApiClient } from '../src/api/client.js';
import { controllerClient, operatorCredentials } from '../src/cli/controller-client.js';
import type { ControlPlaneStatus, SiteStatus } from '../src/controller/controller.js';
import { CLI, credentialsDir, labDown, labUp, siteFor } from '../src/lab/lab.js';
import { readState, startProcess } from '../src/lab/processes.js';
import { configPath, controllerSocket, host } from '../src/lab/site.js';
import { startTraffic } from '../src/lab/traffic.js';
import type { MigrationProgress, Step } from '../src/migration/migration.js';

const perStep = Number(process.argv[2] ?? 1);
const STEPS: Step[] = ['prepare', 'move_address', 'move_entries', 'activate'];
const PAUSES = STEPS.map((s) => `${s}:1500`).join(',');
const name = 'vbctlha';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 30_000, every = 20): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() - t0 > ms) throw new Error(`${what}: not within ${ms} ms`);
    await sleep(every);
  }
}

interface Round {
  step: Step;
  killed: string;
  leader: string;
  outcome: string;
  electedMs: number;
  endedMs: number;
  pauseMs: number;
  connections: { requested: number; ok: number; failed: number };
  errors: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

const loadBefore = os.loadavg();
await labUp({ name, controllers: 3, controllerEnv: { VIPSHIFT_TEST_PAUSE_STEP: PAUSES } });
const site = siteFor(name);
const rounds: Round[] = [];
try {
  const creds = operatorCredentials(credentialsDir(site));
  const apis = new Map(site.apis.controllers.map((c) => [c.host, new ApiClient(`unix:${controllerSocket(site, c.host)}`, creds, { peer: c.host, timeoutMs: 2000 })]));
  const leaders = async () =>
    (await Promise.all([...apis].map(async ([n, api]) => ((await api.get<ControlPlaneStatus>('/v1/controllers').catch(() => undefined))?.leading ? n : undefined)))).filter(
      (n): n is string => n !== undefined,
    );
  const operator = controllerClient({ lab: name });
  const pids = new Map(readState(site.stateDir)!.processes.filter((p) => p.name.endsWith('-controller')).map((p) => [p.name.replace(/-controller$/, ''), p.pid]));
  await until('a leader', async () => (await leaders())[0]);
  await operator.post('/v1/rebalance', { mode: 'manual' });
  const vip1 = site.vips.find((v) => v.name === 'vip1')!;
  let from = (await operator.get<SiteStatus>('/v1/status')).vips.find((v) => v.name === 'vip1')!.owner;
  let again = 0;
  for (let r = 0; r < perStep; r++) {
    for (const step of STEPS) {
      const to = from === 'lb1' ? 'lb2' : 'lb1';
      const traffic = startTraffic(host(site, 'client').namespace, { address: vip1.address, port: 7, connections: 60, intervalMs: 20, timeoutMs: 30_000 });
      await traffic.established;
      await sleep(500);
      const old = await until('a leader', async () => (await leaders())[0]);
      const started = await operator.post<MigrationProgress>('/v1/migrations', { vip: 'vip1', to });
      await until(`migration in ${step}`, async () => ((await operator.get<MigrationProgress>(`/v1/migrations/${started.id}`)).step === step ? true : undefined));
      await sleep(300); // into the step's pause, after its first action
      const t0 = performance.now();
      process.kill(pids.get(old)!, 'SIGKILL');
      const leader = await until('a new leader', async () => (await leaders()).find((n) => n !== old));
      const electedMs = performance.now() - t0;
      const ended = await until('the migration ended', async () => {
        const m = await operator.get<MigrationProgress>(`/v1/migrations/${started.id}`);
        return m.state === 'running' ? undefined : m;
      });
      const endedMs = performance.now() - t0;
      await sleep(1500); // connections that stalled get going again before the count
      const summary = await traffic.stop();
      from = (await operator.get<SiteStatus>('/v1/status')).vips.find((v) => v.name === 'vip1')!.owner;
      const round: Round = {
        step,
        killed: old,
        leader,
        outcome: `${ended.state}, owner ${from}`,
        electedMs: Math.round(electedMs),
        endedMs: Math.round(endedMs),
        pauseMs: Math.round(summary.gapMs.max),
        connections: { requested: summary.connections.requested, ok: summary.connections.ok, failed: summary.connections.failed },
        errors: Object.values(summary.errors).reduce((a, b) => a + b, 0),
      };
      rounds.push(round);
      console.log(`${step.padEnd(13)} ${old} killed → ${leader} leads ${round.electedMs} ms, migration ${round.outcome} at ${round.endedMs} ms, longest pause ${round.pauseMs} ms, ${round.connections.ok}/${round.connections.requested} ok, ${round.errors} errors`);
      const started2 = startProcess({
        name: `${old}-controller-again${again++}`,
        namespace: host(site, old).namespace,
        command: [process.execPath, CLI, 'controller', '--config', configPath(site, old), '--credentials', credentialsDir(site)],
        logDir: site.stateDir,
        env: { VIPSHIFT_TEST_PAUSE_STEP: PAUSES },
      });
      pids.set(old, started2.record.pid);
      await until(`${old} back`, async () => ((await apis.get(old)!.get<ControlPlaneStatus>('/v1/controllers')).leader ? true : undefined));
    }
  }
  for (const a of apis.values()) a.close();
} catch (err) {
  fs.cpSync(site.stateDir, `/tmp/vipshift-bench-controller-ha-${Date.now()}`, { recursive: true });
  throw err;
} finally {
  await labDown({ name });
}

const summary = {
  electedMs: { median: median(rounds.map((r) => r.electedMs)), max: Math.max(...rounds.map((r) => r.electedMs)) },
  endedMs: { median: median(rounds.map((r) => r.endedMs)), max: Math.max(...rounds.map((r) => r.endedMs)) },
  pauseMs: { median: median(rounds.map((r) => r.pauseMs)), max: Math.max(...rounds.map((r) => r.pauseMs)) },
  connections: rounds.reduce((n, r) => n + r.connections.requested, 0),
  failed: rounds.reduce((n, r) => n + r.connections.failed + r.errors, 0),
};
const host_ = { cpus: os.cpus().length, loadBefore: loadBefore.map((x) => +x.toFixed(2)), loadAfter: os.loadavg().map((x) => +x.toFixed(2)) };
console.log(`\nleader SIGKILLed in a migration, ${rounds.length} rounds (etcd lease 3 s, TLS), load ${host_.loadBefore[0]} → ${host_.loadAfter[0]}`);
console.log(`  follower leads      median ${summary.electedMs.median} ms, max ${summary.electedMs.max} ms`);
console.log(`  migration ended     median ${summary.endedMs.median} ms, max ${summary.endedMs.max} ms`);
console.log(`  longest pause       median ${summary.pauseMs.median} ms, max ${summary.pauseMs.max} ms (60 connections, a message every 20 ms)`);
console.log(`  connections failed  ${summary.failed} of ${summary.connections}`);
fs.mkdirSync('bench/results', { recursive: true });
fs.writeFileSync('bench/results/controller-ha.json', `${JSON.stringify({ bench: 'controller-ha', date: new Date().toISOString(), host: host_, leaseSeconds: 3, stepPauseMs: 1500, summary, rounds }, null, 2)}\n`);
