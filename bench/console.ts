/**
 * `make bench-console`: the console against a lab whose vip1 has 100,000 entries on lb1.
 * 1. In this process (the console's code, a real controller and appliance behind it): time to
 *    fetch one access-table page through the controller and draw the frame with blessed
 *    (p50/p95 over ROUNDS, pages at different offsets, sorts and filters).
 * 2. The real `vipshift console` in tmux on the access view for WATCH_S seconds at its one
 *    refresh a second: its memory (VmHWM), and the CPU the appliance (lb1) spent meanwhile,
 *    against the same time without a console.
 * Needs root, tmux and a build. Writes bench/results/console.json.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { PassThrough } from 'node:stream';
import blessed from 'blessed';
import { frame, initialUi, type ConsoleData, type Ui } from '../src/console/model.js';
import { lineText } from '../src/console/format.js';
import { ConsoleSource } from '../src/console/source.js';
import { controllerClient } from '../src/cli/controller-client.js';
import type { AccessPage } from '../src/nat/access-page.js';
import { labDown, labUp, siteFor } from '../src/lab/lab.js';
import { labProcessPid, processCpuSeconds } from '../src/lab/processes.js';
import { host } from '../src/lab/site.js';
import { rebuildMirror } from '../test/integration/helpers/replication-lab.js';
import { createSynthetic, syntheticRecords } from '../test/helpers/console-entries.js';

const LAB = 'vtconbench';
const ENTRIES = 100_000;
const ROUNDS = Number(process.env.ROUNDS ?? 60);
const WATCH_S = Number(process.env.WATCH_S ?? 30);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};
const round1 = (x: number) => Math.round(x * 10) / 10;

const cpuSeconds = (pid: number) => processCpuSeconds(pid, { children: true });

/** The node process under `ip netns exec` (the recorded pid may be the wrapper's, which execs). */
function nodePid(pid: number): number {
  const comm = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  if (comm.startsWith('node')) return pid;
  const children = fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).map(Number);
  return nodePid(children[0]!);
}

await labDown({ name: LAB }).catch(() => undefined);
await labUp({ name: LAB });
const site = siteFor(LAB);
const result: Record<string, unknown> = { entries: ENTRIES, rounds: ROUNDS, watchSeconds: WATCH_S };
try {
  await createSynthetic(host(site, 'lb1').namespace, syntheticRecords(ENTRIES, { mark: 1, address: '203.0.113.10', port: 7, server: '198.18.0.101' }));
  await rebuildMirror(site, 'lb1');

  // 1. Fetch a page and draw it, in this process.
  const api = controllerClient({ lab: LAB });
  const source = new ConsoleSource(api, api.baseUrl);
  const output = new PassThrough();
  output.resume();
  Object.assign(output, { columns: 80, rows: 24, isTTY: true });
  const input = new PassThrough();
  const screen = blessed.screen({ input, output: output as unknown as NodeJS.WriteStream, terminal: 'xterm-256color', smartCSR: true, warnings: false });
  const box = blessed.box({ top: 0, left: 0, width: '100%', height: '100%', tags: false });
  screen.append(box);
  let ui: Ui = initialUi('access');
  let data: ConsoleData = await source.refresh({ target: api.baseUrl, now: Date.now() }, ui, 24);
  const pageMs: number[] = [];
  const drawMs: number[] = [];
  const bothMs: number[] = [];
  const refreshMs: number[] = [];
  const sorts = ['client', '-timeout', 'server', '-client'];
  const filters = ['', '', 'client:198.51.100.150', 'state:est'];
  for (let i = 0; i < ROUNDS; i++) {
    ui = { ...ui, access: { offset: (i * 997) % 90_000, sort: sorts[i % sorts.length]!, filter: filters[i % filters.length]! } };
    const t0 = performance.now();
    const q = new URLSearchParams({ offset: String(ui.access.offset), limit: '17', sort: ui.access.sort, filter: ui.access.filter });
    const page = await api.get<AccessPage>(`/v1/appliances/lb1/vips/vip1/entries?${q}`);
    const t1 = performance.now();
    data = { ...data, page: { ok: page, at: Date.now() }, now: Date.now() };
    box.setContent(frame(data, ui, 80, 24).map(lineText).join('\n'));
    screen.render();
    const t2 = performance.now();
    pageMs.push(t1 - t0);
    drawMs.push(t2 - t1);
    bothMs.push(t2 - t0);
    // Every tenth round: the console's whole refresh (status of the site and the page).
    if (i % 10 === 0) {
      const r0 = performance.now();
      data = await source.refresh(data, ui, 24);
      refreshMs.push(performance.now() - r0);
    }
  }
  screen.destroy();

  // The access-table pages alone at one a second (what the new route costs the appliance).
  const lb1 = nodePid(labProcessPid(site.stateDir, 'lb1-appliance'));
  const pages0 = cpuSeconds(lb1);
  const p0 = performance.now();
  for (let i = 0; i < WATCH_S; i++) {
    const started = performance.now();
    await api.get<AccessPage>(`/v1/appliances/lb1/vips/vip1/entries?offset=${i * 17}&limit=17`);
    await sleep(Math.max(0, 1000 - (performance.now() - started)));
  }
  const pagesOnly = cpuSeconds(lb1) - pages0;
  const pagesSeconds = (performance.now() - p0) / 1000;
  api.close();
  result.pageAndFrame = {
    p50Ms: round1(pct(bothMs, 50)),
    p95Ms: round1(pct(bothMs, 95)),
    pageP95Ms: round1(pct(pageMs, 95)),
    drawP95Ms: round1(pct(drawMs, 95)),
    targetP95Ms: 50,
    note: "pages come from the appliance's snapshot (re-dumped in the background once older than 50x its dump time); the slow pages are those that queue behind the site status every tenth round, which keeps the appliance's netlink socket busy counting 100,000 entries",
    firstPageMs: round1(pageMs[0]!),
  };
  result.fullRefresh = { p50Ms: round1(pct(refreshMs, 50)), maxMs: round1(Math.max(...refreshMs)), samples: refreshMs.length };

  // 2. The real console in tmux: memory, and the appliance's CPU at one refresh a second.
  const idle0 = cpuSeconds(lb1);
  await sleep(WATCH_S * 1000);
  const idle = cpuSeconds(lb1) - idle0;
  const session = `${LAB}`;
  spawnSync('tmux', ['kill-session', '-t', session]);
  spawnSync('tmux', ['new-session', '-d', '-s', session, '-x', '80', '-y', '24', '-e', 'LANG=C.UTF-8', '-e', 'TERM=xterm-256color', `exec ${process.execPath} dist/cli.js console --lab ${LAB} --view access`]);
  let rssPeakKb = 0;
  let busy = 0;
  let statuses = 0;
  try {
    await sleep(3000); // the first snapshot
    const consolePid = Number(spawnSync('tmux', ['display-message', '-p', '-t', session, '#{pane_pid}'], { encoding: 'utf8' }).stdout.trim());
    const busy0 = cpuSeconds(lb1);
    const t0 = performance.now();
    await sleep(WATCH_S * 1000);
    busy = cpuSeconds(lb1) - busy0;
    const seconds = (performance.now() - t0) / 1000;
    const status = fs.readFileSync(`/proc/${consolePid}/status`, 'utf8');
    rssPeakKb = Number(/VmHWM:\s+(\d+)/.exec(status)![1]);
    statuses = seconds;
    const capture = spawnSync('tmux', ['capture-pane', '-p', '-t', session], { encoding: 'utf8' }).stdout;
    if (!/100,0\d\d entries/.test(capture)) throw new Error(`the console did not show the 100,000-entry table:\n${capture}`);
  } finally {
    spawnSync('tmux', ['kill-session', '-t', session]);
  }
  result.console = { rssPeakMb: round1(rssPeakKb / 1024), targetMb: 150 };
  result.applianceCpu = {
    idlePercentOfCore: round1((idle / WATCH_S) * 100),
    withConsolePercentOfCore: round1((busy / statuses) * 100),
    addedPercentOfCore: round1((busy / statuses - idle / WATCH_S) * 100),
    pagesOnlyAddedPercentOfCore: round1((pagesOnly / pagesSeconds - idle / WATCH_S) * 100),
    targetAddedPercent: 2,
    note: "the console's refresh asks the controller for the site's status, which asks each appliance for its status (nft counters and a ct-mark count of each VIP's entries) and the access-table page",
  };
} finally {
  await labDown({ name: LAB });
}

fs.mkdirSync('bench/results', { recursive: true });
fs.writeFileSync('bench/results/console.json', `${JSON.stringify(result, null, 2)}\n`);
const pf = result.pageAndFrame as Record<string, number>;
const cpu = result.applianceCpu as Record<string, number>;
const mem = result.console as Record<string, number>;
process.stdout.write(
  [
    `console with a ${ENTRIES.toLocaleString('en-US')}-entry access table`,
    `  page + frame          p50 ${pf.p50Ms} ms  p95 ${pf.p95Ms} ms (page p95 ${pf.pageP95Ms} ms, draw p95 ${pf.drawP95Ms} ms; first page ${pf.firstPageMs} ms)  target p95 <= 50 ms`,
    `  console memory        peak RSS ${mem.rssPeakMb} MB  target <= 150 MB`,
    `  appliance CPU (lb1)   idle ${cpu.idlePercentOfCore} %, with the console ${cpu.withConsolePercentOfCore} %: +${cpu.addedPercentOfCore} % of a core  target < 2 %`,
    `                        of which access-table pages alone: +${cpu.pagesOnlyAddedPercentOfCore} % (the rest: the site status, see note)`,
    '',
  ].join('\n'),
);
