/**
 * `make bench-health-checks`: what health checks cost, and whether they flap under load.
 *
 * 1. CPU: the monitor (src/health) runs tcp, http, https and script checks against servers in
 *    another process on loopback at a set rate; the checking process's CPU time over the
 *    window, per 1,000 checks a second (the servers' CPU is not counted).
 * 2. Flapping: 50 healthy backends checked with the default check (inter 2 s, timeout 1 s,
 *    rise 2, fall 3) and with a tight one (inter 200 ms, timeout 100 ms), first on the machine
 *    as it is, then beside CPU hogs (busy loops at nice 0, one per core, plus the servers'
 *    process under the same hogs). Every transition of a healthy backend is a false one.
 *
 *   npx tsx bench/health-checks.ts [--seconds 20] [--rate 1000] [--hogs 2]
 * Writes bench/results/health-checks.json.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { generate } from 'selfsigned';
import { checkSchema, resolveCheck, type CheckConfigInput } from '../src/config/check.js';
import { HealthMonitor, type HealthTarget } from '../src/health/monitor.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '20' },
    rate: { type: 'string', default: '1000' },
    hogs: { type: 'string', default: String(os.cpus().length) },
  },
});
const seconds = Number(values.seconds);
const rate = Number(values.rate);
const hogCount = Number(values.hogs);

// The servers: a child process with a TCP listener, an HTTP and an HTTPS server on loopback.
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vipshift-bench-health-'));
const pems = await generate([{ name: 'commonName', value: 'backend.example' }], { keyType: 'ec', curve: 'P-256' });
fs.writeFileSync(path.join(dir, 'key.pem'), pems.private);
fs.writeFileSync(path.join(dir, 'cert.pem'), pems.cert);
const serverCode = `
const net = require('node:net'), http = require('node:http'), https = require('node:https'), fs = require('node:fs');
const ok = (req, res) => res.end('ok');
const t = net.createServer((s) => s.on('error', () => {})).listen(0, '127.0.0.1', () => {
  const h = http.createServer(ok).listen(0, '127.0.0.1', () => {
    const s = https.createServer({ key: fs.readFileSync(process.argv[1] + '/key.pem'), cert: fs.readFileSync(process.argv[1] + '/cert.pem') }, ok).listen(0, '127.0.0.1', () => {
      process.stdout.write(JSON.stringify({ tcp: t.address().port, http: h.address().port, https: s.address().port }) + '\\n');
    });
  });
});`;
const servers = spawn(process.execPath, ['-e', serverCode, dir], { stdio: ['ignore', 'pipe', 'inherit'] });
const [first] = (await once(servers.stdout!, 'data')) as [Buffer];
const ports = JSON.parse(first.toString()) as { tcp: number; http: number; https: number };

const sink = { setBackendHealth: async () => undefined };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `n` backends (distinct VIP names on one server) checked every `inter` ms. */
function targets(n: number, c: CheckConfigInput, port: number): HealthTarget[] {
  const check = resolveCheck(checkSchema.parse(c));
  return Array.from({ length: n }, (_, i) => ({ vip: `vip${i}`, address: '127.0.0.1', port, check }));
}

interface CpuRow {
  type: string;
  askedPerSecond: number;
  checksPerSecond: number;
  cpuPercentOfCore: number;
  cpuPercentPer1000: number;
  failed: number;
  p50LatencyMs: number;
  p99LatencyMs: number;
}

const quantile = (xs: number[], q: number) => {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

async function cpuRun(type: string, perSecond: number, c: CheckConfigInput, port: number): Promise<CpuRow> {
  // One second between a backend's checks: n backends make n checks a second.
  const inter = 1000;
  const latencies: number[] = [];
  let failed = 0;
  let counting = false;
  const monitor = new HealthMonitor({
    sink,
    onCheck: (e) => {
      if (!counting) return;
      latencies.push(e.result.latencyMs);
      if (e.result.outcome !== 'pass') failed++;
    },
  });
  monitor.setTargets(targets(perSecond, { ...c, inter, timeout: 900 }, port));
  monitor.start();
  await sleep(2000); // the first phases
  counting = true;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const cpu = process.cpuUsage(cpu0);
  const wall = (performance.now() - t0) / 1000;
  counting = false;
  monitor.stop();
  await sleep(1000);
  const checksPerSecond = latencies.length / wall;
  const cpuPercentOfCore = ((cpu.user + cpu.system) / 1e6 / wall) * 100;
  return {
    type,
    askedPerSecond: perSecond,
    checksPerSecond: Math.round(checksPerSecond),
    cpuPercentOfCore: Math.round(cpuPercentOfCore * 10) / 10,
    cpuPercentPer1000: Math.round((cpuPercentOfCore / (checksPerSecond / 1000)) * 10) / 10,
    failed,
    p50LatencyMs: Math.round(quantile(latencies, 0.5) * 100) / 100,
    p99LatencyMs: Math.round(quantile(latencies, 0.99) * 100) / 100,
  };
}

interface FlapRow {
  check: string;
  hogs: number;
  backends: number;
  checks: number;
  timeouts: number;
  failed: number;
  transitions: number;
  maxFailuresInRow: number;
  p99LatencyMs: number;
  maxLatencyMs: number;
  load: number[];
}

async function flapRun(label: string, c: CheckConfigInput, hogs: number): Promise<FlapRow> {
  const hogProcesses: ChildProcess[] = [];
  for (let i = 0; i < hogs; i++) hogProcesses.push(spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' }));
  const latencies: number[] = [];
  let timeouts = 0;
  let failed = 0;
  let transitions = 0;
  let maxFailuresInRow = 0;
  const inRow = new Map<string, number>();
  const monitor = new HealthMonitor({
    sink,
    onCheck: (e) => {
      latencies.push(e.result.latencyMs);
      if (e.result.outcome === 'timeout') timeouts++;
      if (e.result.outcome === 'fail') failed++;
      const n = e.result.outcome === 'pass' ? 0 : (inRow.get(e.vip) ?? 0) + 1;
      inRow.set(e.vip, n);
      maxFailuresInRow = Math.max(maxFailuresInRow, n);
    },
    onTransition: () => transitions++,
  });
  monitor.setTargets(targets(50, c, ports.tcp));
  try {
    monitor.start();
    await sleep(seconds * 1000);
  } finally {
    monitor.stop();
    for (const h of hogProcesses) h.kill('SIGKILL');
  }
  const load = os.loadavg().map((x) => Math.round(x * 100) / 100);
  await sleep(1000);
  return {
    check: label,
    hogs,
    backends: 50,
    checks: latencies.length,
    timeouts,
    failed,
    transitions,
    maxFailuresInRow,
    p99LatencyMs: Math.round(quantile(latencies, 0.99) * 100) / 100,
    maxLatencyMs: Math.round(Math.max(0, ...latencies) * 100) / 100,
    load,
  };
}

try {
  const loadBefore = os.loadavg();
  const cpu: CpuRow[] = [];
  cpu.push(await cpuRun('tcp', rate, { type: 'tcp' }, ports.tcp));
  cpu.push(await cpuRun('http', rate, { type: 'http', path: '/' }, ports.http));
  cpu.push(await cpuRun('https', Math.round(rate / 4), { type: 'https', path: '/' }, ports.https));
  cpu.push(await cpuRun('script', Math.round(rate / 10), { type: 'script', command: '/bin/true' }, ports.tcp));
  console.log(`\nCPU of the checking process, ${seconds} s per row (load before ${loadBefore.map((x) => x.toFixed(2)).join(' ')})`);
  console.table(cpu);

  const flap: FlapRow[] = [];
  const defaults = {};
  const tight = { inter: 200, timeout: 100 };
  for (const hogs of [0, hogCount]) {
    flap.push(await flapRun('default (2 s / 1 s, rise 2, fall 3)', defaults, hogs));
    flap.push(await flapRun('tight (200 ms / 100 ms, rise 2, fall 3)', tight, hogs));
  }
  console.log(`\nFlapping: 50 healthy backends, ${seconds} s per row`);
  console.table(flap);

  fs.mkdirSync('bench/results', { recursive: true });
  fs.writeFileSync(
    'bench/results/health-checks.json',
    `${JSON.stringify({ bench: 'health-checks', date: new Date().toISOString(), host: { cpus: os.cpus().length, loadBefore }, seconds, cpu, flap }, null, 2)}\n`,
  );
  console.log('wrote bench/results/health-checks.json');
} finally {
  servers.kill('SIGKILL');
  fs.rmSync(dir, { recursive: true, force: true });
}
