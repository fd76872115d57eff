import { describe, expect, it } from 'vitest';
import { bar, count, lineText, table, type Column } from '../../src/console/format.js';
import { frame, initialUi, press, rates, type ConsoleData, type Key, type Ui } from '../../src/console/model.js';
import type { SiteStatus } from '../../src/controller/controller.js';
import type { MigrationProgress } from '../../src/migration/migration.js';
import type { AccessPage } from '../../src/nat/access-page.js';
import { humanLine } from '../../src/log/logger.js';

const vip = (name: string, mode: 'normal' | 'migrating' | 'absent', entries = 0, extra = {}) => ({
  name,
  address: `203.0.113.${10 + Number(name.slice(3)) - 1}`,
  mode,
  entries,
  packets: 1000,
  bytes: 100_000,
  rejected: 2,
  synproxied: 0,
  limitedVip: 0,
  limitedSource: 0,
  newConnections: 10,
  unavailable: 0,
  backends: [],
  held: 0,
  released: 0,
  overflowed: 0,
  dropped: 0,
  ...extra,
});

const running: MigrationProgress = {
  id: '5733eaf3-0000-0000-0000-000000000000',
  vip: 'vip1',
  from: 'lb1',
  to: 'lb2',
  state: 'running',
  step: 'move_entries',
  startedAt: '2026-01-01T10:00:00.000Z',
  steps: { prepare_ms: 12, move_address_ms: 30 },
  entries: { moved: 500, total: 1000 },
  released: 0,
};

function site(migrating = true): SiteStatus {
  return {
    vips: [
      { name: 'vip1', owner: 'lb1', mode: migrating ? 'migrating' : 'normal', entries: 1000, pinned: false, lastMovedAt: null, traffic: null, load: null },
      { name: 'vip2', owner: 'lb1', mode: 'normal', entries: 0, pinned: false, lastMovedAt: null, traffic: null, load: null },
    ],
    appliances: [
      { name: 'lb1', appliance: 'lb1', reachable: true, up: true, maintenance: false, capacity: 1, vrrp: [], vips: [vip('vip1', 'normal', 1000), vip('vip2', 'normal')] },
      { name: 'lb2', appliance: 'lb2', reachable: true, up: true, maintenance: false, capacity: 1, vrrp: [], vips: [vip('vip1', migrating ? 'migrating' : 'absent', 500, { held: 42 }), vip('vip2', 'absent')] },
    ],
    migrations: migrating ? [running] : [{ ...running, state: 'aborted', step: 'move_address', error: 'step move_address did not finish within 10000 ms', totalMs: 10_050 }],
    rebalance: 'auto',
  };
}

const data = (s = site(), extra: Partial<ConsoleData> = {}): ConsoleData => ({ target: 'unix:/ctl.sock', site: { ok: s, at: Date.parse('2026-01-01T10:00:01Z') }, now: Date.parse('2026-01-01T10:00:01Z'), ...extra });
const text = (d: ConsoleData, ui: Ui, w = 80, h = 24) => frame(d, ui, w, h).map(lineText);
const keys = (ui: Ui, d: ConsoleData, ...ks: Key[]) => ks.reduce<{ ui: Ui; action?: unknown }>((r, k) => press(r.ui, k, d), { ui });

describe('console view model', () => {
  it('fits every frame in 80x24, whatever the view', () => {
    for (const view of ['site', 'modes', 'access', 'migrations', 'plan', 'backends'] as const) {
      const lines = text(data(), initialUi(view));
      expect(lines).toHaveLength(24);
      for (const l of lines) expect(l.length).toBeLessThanOrEqual(80);
    }
  });

  it('shows a running migration as its four steps with entries moved of total and packets held', () => {
    const out = text(data(), initialUi('migrations')).join('\n');
    expect(out).toMatch(/Migration vip1 lb1 -> lb2 +running/);
    expect(out).toMatch(/\[x\] 1 prepare.*12 ms/);
    expect(out).toMatch(/\[>\] 3 move the entries/);
    expect(out).toMatch(/\[#{15,}\.{15,}\] 500\/1,000 entries/);
    expect(out).toMatch(/held now 42/);
  });

  it('lists a failed migration with its reason, and a mode table without the VIPs an appliance does not have', () => {
    const d = data(site(false));
    expect(text(d, initialUi('migrations')).join('\n')).toMatch(/vip1: step move_address did not finish within 10000 ms/);
    const modes = text(d, initialUi('modes'));
    const lb2 = modes.findIndex((l) => l.includes('lb2 mode table'));
    expect(modes[lb2]).toMatch(/0 VIPs/);
    expect(modes.slice(lb2).join('\n')).not.toMatch(/vip1/);
  });

  it('says the controller is unreachable, keeps the last status, and never throws', () => {
    const d: ConsoleData = { target: 'unix:/ctl.sock', site: { error: 'connect ENOENT /ctl.sock', since: 0, last: site() }, now: 5000 };
    const lines = text(d, initialUi('site'));
    expect(lines[1]).toMatch(/controller unreachable since 00:00:00, retrying: connect ENOENT/);
    expect(lines.join('\n')).toMatch(/vip1/);
    expect(text({ target: 'x', now: 0 }, initialUi('access'))[2]).toMatch(/no status/);
  });

  it('migrates by keys only after the target is named and the question confirmed', () => {
    const d = data(site(false));
    let r = keys(initialUi(), d, { name: 'm', ch: 'm' });
    expect(r.ui.prompt?.text).toBe('lb2'); // the other appliance, proposed
    r = keys(r.ui, d, { name: 'backspace' }, { name: '3', ch: '3' }, { name: 'enter' });
    expect(r.ui.message?.text).toMatch(/no appliance named 'lb3'/);
    r = keys(initialUi(), d, { name: 'm', ch: 'm' }, { name: 'enter' }, { name: 'return' });
    expect(r.action).toBeUndefined();
    expect(r.ui.confirm?.question).toMatch(/Migrate vip1 lb1 -> lb2/);
    expect(keys(r.ui, d, { name: 'n', ch: 'n' }).action).toBeUndefined();
    expect(keys(r.ui, d, { name: 'y', ch: 'y' }).action).toEqual({ kind: 'migrate', vip: 'vip1', to: 'lb2' });
  });

  it('pages, sorts and filters the access table by keys', () => {
    const page: AccessPage = {
      vip: 'vip1', total: 1000, matched: 1000, offset: 0, limit: 17, sort: 'client', filter: '',
      rows: [{ client: '198.51.100.10:4000', vip: '203.0.113.10:7', server: '198.18.0.101:7', tcpState: 'ESTABLISHED', timeout: 299 }],
      snapshotAt: '', snapshotAgeMs: 300, dumpMs: 2,
    };
    const d = data(site(), { page: { ok: page, at: 0 } });
    let r = keys(initialUi('access'), d, { name: 'pagedown' }, { name: 'pagedown' });
    expect(r.ui.access.offset).toBe(34);
    r = keys(r.ui, d, { name: 'G', ch: 'G' });
    expect(r.ui.access.offset).toBe(986); // the last page of 17 rows
    r = keys(r.ui, d, { name: 's', ch: 's' }, { name: 'r', ch: 'r' });
    expect(r.ui.access).toMatchObject({ sort: '-vip', offset: 0 });
    r = keys(r.ui, d, { name: '/', ch: '/' }, ...[...'state:est'].map((ch) => ({ name: ch, ch })), { name: 'enter' });
    expect(r.ui.access.filter).toBe('state:est');
    expect(r.action).toEqual({ kind: 'refresh' });
    const screen = text(d, r.ui).join('\n');
    expect(screen).toMatch(/Access table of vip1 on lb1/);
    expect(screen).toMatch(/198\.51\.100\.10:4000 +203\.0\.113\.10:7 +198\.18\.0\.101:7 +ESTABLISHED +299s/);
  });

  it('says "not available" for what the controller does not offer', () => {
    const d = data(site(), { plan: { unavailable: 'the controller has no such route (GET /v1/plan: no route GET /v1/plan)' } });
    expect(text(d, initialUi('plan')).join('\n')).toMatch(/Plan: not available/);
  });

  it('computes rates from two samples and none across a counter reset', () => {
    const a = site();
    const b = structuredClone(a);
    b.appliances[0]!.vips[0]!.packets += 500;
    expect(rates(b, a, 2, 'lb1').pps).toBe(250);
    expect(rates(a, b, 2, 'lb1')).toEqual({});
  });
});

describe('format', () => {
  it('drops the least important columns first when narrow', () => {
    const cols: Column<{ a: string }>[] = [
      { title: 'A', width: 10, value: (r) => r.a },
      { title: 'OPTIONAL', width: 30, drop: 1, value: () => 'x' },
    ];
    expect(lineText(table(cols, [{ a: 'keep' }], 30)[0]!)).not.toMatch(/OPTIONAL/);
    expect(lineText(table(cols, [{ a: 'keep' }], 60)[0]!)).toMatch(/OPTIONAL/);
    expect(bar(0.5, 12)).toBe('[#####.....]');
    expect(count(1234567)).toBe('1,234,567');
  });
});

describe('human log lines', () => {
  it('puts time, level, process and migration first, then the fields', () => {
    const line = humanLine(JSON.stringify({ level: 30, time: Date.parse('2026-01-01T10:00:00.123Z'), name: 'controller', migration: '5733eaf3-aaaa', vip: 'vip1', msg: 'step done', step: 'prepare', ms: 19 }));
    expect(line).toBe('10:00:00.123 INFO  controller migration 5733eaf3 vip1: step done  step=prepare ms=19');
    expect(humanLine('not json')).toBe('not json');
  });
});

describe('clock skew', () => {
  it('is warned on the connection line beyond 5 s, and not below', () => {
    const ui = initialUi('site');
    expect(text(data(site(), { clockSkewMs: 12_400 }), ui, 200)[1]).toMatch(/clock 12 s behind the controller's: requests fail beyond 30 s, check the time client/);
    expect(text(data(site(), { clockSkewMs: -7_000 }), ui, 200)[1]).toMatch(/clock 7 s ahead of the controller's/);
    expect(text(data(site(), { clockSkewMs: 900 }), ui, 200)[1]).not.toMatch(/clock/);
  });
});

describe('backends view', () => {
  it('shows each backend of the chosen appliance: state, weight, connections, the last check', () => {
    const now = Date.parse('2026-01-01T10:00:01Z');
    const check = (state: 'up' | 'down', outcome: 'pass' | 'fail' | 'timeout', reason: string, failuresInRow = 0) => ({
      type: 'tcp' as const,
      checkPort: 80,
      inter: 2000,
      state,
      reason: state === 'down' ? `3 failed checks: ${reason}` : reason,
      lastCheck: { at: now - 1500, outcome, reason, latencyMs: 0.42 },
      passesInRow: 0,
      failuresInRow,
      checks: { pass: 10, fail: 3, timeout: 0 },
      transitions: 1,
      since: now - 5000,
      applied: true,
    });
    const backends = [
      { address: '198.18.0.101', weight: 1, state: 'up' as const, reason: 'connect ok', connections: 120, check: check('up', 'pass', 'connect ok') },
      { address: '198.18.0.102', port: 8080, weight: 3, state: 'down' as const, reason: '3 failed checks: connect refused', connections: 4, check: check('down', 'fail', 'connect refused', 3) },
      { address: '198.18.0.103', weight: 0, state: 'drained' as const, reason: 'weight 0', connections: 7, check: check('up', 'timeout', 'no answer in 1000 ms', 1) },
      { address: '198.18.0.104', weight: 1, state: 'up' as const, reason: 'not checked', connections: 0 },
    ];
    const s = site(false);
    s.appliances[0]!.vips[0] = vip('vip1', 'normal', 131, { backends });
    const lines = text(data(s), initialUi('backends'), 120, 24);
    expect(lines[2]).toMatch(/^Backends on lb1/);
    expect(lines[3]).toMatch(/^VIP\s+BACKEND\s+STATE\s+WEIGHT\s+CONNS\s+CHECK\s+LAST\s+LATENCY\s+REASON/);
    expect(lines[4]).toMatch(/^vip1\s+198\.18\.0\.101\s+up\s+1\s+120\s+tcp:80\s+1\.5 s ago\s+0\.4 ms\s+connect ok/);
    expect(lines[5]).toMatch(/^\s+198\.18\.0\.102:8080\s+down\s+3\s+4\s+tcp:80 .* 3 failed checks: connect/);
    expect(lines[6]).toMatch(/198\.18\.0\.103\s+drained\s+0\s+7 .*weight 0/);
    expect(lines[7]).toMatch(/198\.18\.0\.104\s+up\s+1\s+0\s+off\s+-\s+-\s+not checked/);
    // The backends of the other appliance: right arrow.
    const next = keys(initialUi('backends'), data(s), { name: 'right' }).ui;
    expect(text(data(s), next, 100, 24)[2]).toMatch(/^Backends on lb2/);
    expect(keys(initialUi(), data(s), { name: '6', ch: '6' }).ui.view).toBe('backends');
  });
});
