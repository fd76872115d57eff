/**
 * The console in a real terminal (tmux), against a real lab: a migration started from its
 * keys while connections run, the access table of the moved VIP, a filter, a controller
 * restart; `--once` against `status --json`; metrics against the kernel's own counters.
 * Needs root, tmux and a build (the lab runs dist/cli.js).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { controllerClient } from '../../src/cli/controller-client.js';
import { readState, startProcess, stopProcesses, writeState } from '../../src/lab/processes.js';
import { run } from '../../src/lab/netns.js';
import { createSynthetic, syntheticRecords } from '../helpers/console-entries.js';
import { withLab, type Lab } from '../helpers/lab.js';
import { rebuildMirror } from './helpers/replication-lab.js';

const CLI = path.resolve('dist/cli.js');
const PREFIX = 'vtcon';
const SYNTHETIC = 60_000;

const tmux = (...args: string[]) => {
  const r = spawnSync('tmux', args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tmux ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The lines of a mode table in a capture: from its title to the next blank line. */
function modeTable(capture: string, appliance: string): string {
  const lines = capture.split('\n');
  const start = lines.findIndex((l) => l.includes(`${appliance} mode table`));
  if (start < 0) return '';
  const end = lines.findIndex((l, i) => i > start && l.trim() === '');
  return lines.slice(start, end < 0 ? undefined : end).join('\n');
}

async function until(session: string, what: string, test: (capture: string) => boolean, timeoutMs = 15_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    last = tmux('capture-pane', '-p', '-t', session);
    if (test(last)) return last;
    await sleep(100);
  }
  throw new Error(`console never showed ${what}; last capture:\n${last}`);
}

async function metrics(lab: Lab, target: string): Promise<Map<string, number>> {
  const r = await lab.exec('ctl', [process.execPath, CLI, 'metrics', '--target', target, '--lab', lab.name]);
  if (r.code !== 0) throw new Error(`metrics of ${target}: ${r.stderr}`);
  const out = new Map<string, number>();
  for (const line of r.stdout.split('\n')) {
    const m = /^(\S+) (\S+)$/.exec(line);
    if (m && !line.startsWith('#')) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

describe('vipshift console under tmux, in the lab', () => {
  it('migrates vip1 lb1 -> lb2 from its keys while connections run, shows the access table, rides out a controller restart', async () => {
    // Leftover tmux sessions of a crashed run.
    for (const s of spawnSync('tmux', ['list-sessions', '-F', '#{session_name}'], { encoding: 'utf8' }).stdout?.split('\n') ?? []) {
      if (s.startsWith(PREFIX)) spawnSync('tmux', ['kill-session', '-t', s]);
    }
    // The controller waits 2 s inside step 3 (its test hook), so that a console refreshing
    // once a second surely draws vip1 migrating on lb2, whatever the machine's speed.
    process.env.VIPSHIFT_TEST_PAUSE_STEP = 'move_entries:2000';
    onTestFinished(() => {
      delete process.env.VIPSHIFT_TEST_PAUSE_STEP;
    });
    await withLab({ prefix: PREFIX }, async (lab) => {
      const session = `${PREFIX}${randomBytes(3).toString('hex')}`;
      // The operator moves vip1 here, not the controller's automatic rebalancing.
      const operator = controllerClient({ lab: lab.name });
      await operator.post("/v1/rebalance", { mode: "manual" });
      operator.close();
      // Made-up entries make step 3 last long enough to be watched; live connections are the real test.
      await createSynthetic(lab.ns('lb1'), syntheticRecords(SYNTHETIC, { mark: 1, address: '203.0.113.10', port: 7, server: '198.18.0.101' }));
      await rebuildMirror(lab.site, 'lb1');
      const traffic = lab.traffic({ address: '203.0.113.10', port: 7, connections: 40, intervalMs: 100, durationMs: 25_000 });
      try {
        const up = await traffic.established;
        expect(up.active).toBe(40);
        tmux('new-session', '-d', '-s', session, '-x', '100', '-y', '40', '-e', 'LANG=C.UTF-8', '-e', 'NCURSES_NO_UTF8_ACS=1', '-e', 'TERM=xterm-256color', `${process.execPath} ${CLI} console --lab ${lab.name}`);
        let screen = await until(session, 'the site with vip1 on lb1', (c) => /controller ok/.test(c) && /vip1 +normal/.test(modeTable(c, 'lb1')));
        // lb2 holds vip1 as its standby (the default), no migration running.
        expect(modeTable(screen, 'lb2')).toMatch(/vip1 +standby/);

        // m: migrate the chosen VIP (vip1), the proposed target is lb2; enter, then confirm.
        tmux('send-keys', '-t', session, 'm');
        await until(session, 'the migrate prompt', (c) => /migrate vip1 \(on lb1\) to appliance: lb2_/.test(c));
        tmux('send-keys', '-t', session, 'Enter');
        await until(session, 'the confirmation', (c) => /Migrate vip1 lb1 -> lb2 with its live connections\? y\/n/.test(c));
        tmux('send-keys', '-t', session, 'y');

        // While it runs: vip1 migrating on lb2, and the progress moving on.
        const seen: string[] = [];
        screen = await until(session, 'vip1 migrating on lb2', (c) => {
          const step = /\[>\] (\d) /.exec(c)?.[1];
          if (step) seen.push(`${step} ${/(\d[\d,]*)\/[\d,]+ entries/.exec(c)?.[1]}`);
          return /Migration vip1 lb1 -> lb2 +running/.test(c) && /vip1 +migrating/.test(modeTable(c, 'lb2'));
        });
        screen = await until(session, 'vip1 normal on lb2 and lb1 its standby', (c) => {
          const step = /\[>\] (\d) /.exec(c)?.[1];
          if (step) seen.push(`${step} ${/(\d[\d,]*)\/[\d,]+ entries/.exec(c)?.[1]}`);
          return /vip1 +normal/.test(modeTable(c, 'lb2')) && /vip1 +standby/.test(modeTable(c, 'lb1'));
        });
        // Progress advanced: more than one distinct step / count was on screen.
        expect(new Set(seen).size, JSON.stringify(seen) + screen).toBeGreaterThan(1);

        // The access table of vip1 on lb2 lists the live connections (the client is 198.51.100.10).
        tmux('send-keys', '-t', session, '3', 'l');
        screen = await until(session, "vip1's access table on lb2", (c) => /Access table of vip1 on lb2/.test(c) && /[\d,]+ entries/.test(c) && /198\.51\.100\./.test(c));
        const total = Number(/([\d,]+) entries/.exec(screen)![1]!.replace(/,/g, ''));
        expect(total).toBeGreaterThanOrEqual(SYNTHETIC + 40);
        // Filter on the real client: only the live connections are left.
        tmux('send-keys', '-t', session, '/', ...'client:198.51.100.10:'.split(''), 'Enter');
        screen = await until(session, 'the filtered table', (c) => /match "client:198\.51\.100\.10:"/.test(c));
        const matched = Number(/([\d,]+) match/.exec(screen)![1]!.replace(/,/g, ''));
        expect(matched).toBeGreaterThanOrEqual(40);
        expect(matched).toBeLessThan(total);
        const rows = screen.split('\n').filter((l) => /^198\.51\.100\.\d+:\d+ /.test(l));
        expect(rows.length).toBeGreaterThan(0);
        for (const row of rows) expect(row).toMatch(/^198\.51\.100\.10:\d+ +203\.0\.113\.10:7 +198\.18\.0\.101:7 +ESTABLISHED/);

        // The controller restarts: the console says so, then reconnects by itself.
        tmux('send-keys', '-t', session, '1');
        const stateDir = lab.info.stateDir;
        const state = readState(stateDir)!;
        const old = state.processes.find((p) => p.name === 'controller')!;
        await stopProcesses([old], { group: false });
        screen = await until(session, 'the controller unreachable', (c) => /controller unreachable since/.test(c));
        expect(screen).not.toMatch(/at .*\.js:\d+/); // no stack trace
        const restarted = startProcess({ name: 'controller', namespace: old.namespace, command: old.command, logDir: stateDir });
        writeState(stateDir, { ...state, processes: state.processes.map((p) => (p === old ? restarted.record : p)) });
        screen = await until(session, 'the controller back', (c) => /controller ok/.test(c) && /vip1 +normal/.test(modeTable(c, 'lb2')));
        tmux('send-keys', '-t', session, 'q');
      } finally {
        spawnSync('tmux', ['kill-session', '-t', session]);
        await traffic.stop().catch(() => undefined);
      }
      const summary = await traffic.done;
      expect(summary.connections.failed, JSON.stringify(summary).slice(0, 1500)).toBe(0);

      // --once agrees with status --json: owners, modes, entry counts.
      const json = JSON.parse((await run(process.execPath, [CLI, 'status', '--json', '--lab', lab.name])).stdout) as { vips: { name: string; owner: string; mode: string; entries: number }[] };
      const once = await run(process.execPath, [CLI, 'console', '--once', '--lab', lab.name, '--width', '100']);
      expect(once.code).toBe(0);
      for (const v of json.vips) {
        const row = new RegExp(`^[ >]${v.name} +\\S+ +(\\S+) +(\\S+) +([\\d,]+)`, 'm').exec(once.stdout);
        expect(row, `${v.name} in:\n${once.stdout}`).not.toBeNull();
        expect([row![1], row![2]]).toEqual([v.owner, v.mode]);
        // Entries move as connections close: within a few of each other.
        expect(Math.abs(Number(row![3]!.replace(/,/g, '')) - v.entries)).toBeLessThanOrEqual(5);
      }

      // Metrics of lb2 agree with its kernel: nft counters and conntrack's count of vip1's mark.
      const m = await metrics(lab, 'http://192.0.2.12:8441');
      const nft = JSON.parse((await lab.exec('lb2', ['nft', '-j', 'list', 'counter', 'ip', 'vipshift', 'traffic_vip1'])).stdout) as { nftables: { counter?: { packets: number; bytes: number } }[] };
      const counter = nft.nftables.find((x) => x.counter)!.counter!;
      const ct = await lab.exec('lb2', ['conntrack', '-L', '-m', '1']);
      const marked = ct.stdout.split('\n').filter((l) => l.trim()).length;
      const all = Number((await lab.exec('lb2', ['conntrack', '-C'])).stdout.trim());
      const entries = m.get('vipshift_vip_entries{appliance="lb2",vip="vip1"}')!;
      expect(Math.abs(entries - marked)).toBeLessThanOrEqual(2);
      expect(entries).toBeLessThanOrEqual(all);
      // Traffic is over: the counters stand still, except for a straggling FIN or two.
      expect(Math.abs(m.get('vipshift_vip_packets_total{appliance="lb2",vip="vip1"}')! - counter.packets)).toBeLessThanOrEqual(4);
      expect(m.get('vipshift_vip_bytes_total{appliance="lb2",vip="vip1"}')!).toBeGreaterThan(0);
      expect(m.get('vipshift_hold_released_total{appliance="lb2",vip="vip1"}')!).toBeGreaterThanOrEqual(0);
      expect(m.get('vipshift_vip_mode{appliance="lb2",vip="vip1",mode="normal"}')).toBe(1);
      expect(m.get('vipshift_vip_mode{appliance="lb1",vip="vip1",mode="migrating"}')).toBeUndefined(); // lb1's metrics are lb1's
      const lb1 = await metrics(lab, 'http://192.0.2.11:8441');
      // lb1 holds vip1 as its standby (the default).
      expect(lb1.get('vipshift_vip_mode{appliance="lb1",vip="vip1",mode="migrating"}')).toBe(1);
      expect(lb1.get('vipshift_vip_entries{appliance="lb1",vip="vip1"}')).toBe(0);
      // The restarted controller has not seen a migration; its metrics are served all the same.
      const ctl = await metrics(lab, 'http://192.0.2.2:8440');
      expect(ctl.get('vipshift_migrations_running')).toBe(0);

      // Unauthenticated: refused, and counted.
      const plain = await lab.httpGet('ctl', 'http://192.0.2.12:8441/metrics');
      expect(plain.status).toBe(401);
      const after = await metrics(lab, 'http://192.0.2.12:8441');
      const refused = [...after].filter(([k]) => k.startsWith('vipshift_api_requests_refused_total')).reduce((t, [, v]) => t + v, 0);
      expect(refused).toBeGreaterThanOrEqual(1);
    });
  }, 180_000);
});
