/**
 * The console's view model, pure: what the controller told us (ConsoleData) and what the
 * operator chose (Ui) in, lines of styled text out; keys in, a new Ui and maybe an action out.
 * No I/O and no blessed here (screen.ts draws, source.ts fetches), so all of it is unit-tested.
 */
import type { SiteStatus } from '../controller/controller.js';
import { STEPS, STEP_TITLES, type MigrationProgress } from '../migration/migration.js';
import type { AccessPage } from '../nat/access-page.js';
import { SORT_KEYS } from '../nat/access-page.js';
import type { AgentVipStatus } from '../appliance/agent-api.js';
import { bar, bytes, clip, count, duration, fit, percent, plain, seg, table, type Column, type Line } from './format.js';

export const VIEWS = ['site', 'modes', 'access', 'migrations', 'plan', 'backends'] as const;
export type View = (typeof VIEWS)[number];
const VIEW_TITLES: Record<View, string> = { site: 'Site', modes: 'Modes', access: 'Access', migrations: 'Migrations', plan: 'Plan', backends: 'Backends' };

/** The controller's plan (src/controller/assignment.ts Plan), read loosely: it may be older or newer. */
export interface PlanView {
  algorithm?: string;
  moves: { vip: string; from: string; to: string; reason: string; why?: string; loads?: Record<string, { before: number; after: number }> }[];
  loads?: Record<string, { before: number; after: number }>;
  imbalance?: { before: number; after: number };
  waiting?: { vip: string; reason: string }[];
  notes?: string[];
  /** Why nothing would be carried out now although there are moves. */
  holdingBack?: string;
  mode?: string;
}

/** A fetch's outcome: a value, "the controller has no such route", or an error to show. */
export type Fetched<T> = { ok: T; at: number } | { unavailable: string } | { error: string; since: number; last?: T };

export interface ConsoleData {
  /** Where we talk to (shown in the title). */
  target: string;
  site?: Fetched<SiteStatus>;
  /** The previous good status, for rates. */
  previous?: { site: SiteStatus; at: number };
  plan?: Fetched<PlanView>;
  page?: Fetched<AccessPage>;
  /** Rebalance mode as the controller reports it, if it does. */
  rebalance?: Fetched<string>;
  /** How far the controller's clock is ahead of ours (its answers' Date), if known. */
  clockSkewMs?: number;
  now: number;
}

/** Clocks further apart than this are warned about: the APIs refuse requests beyond ±30 s. */
export const CLOCK_WARN_MS = 5_000;

export type Action =
  | { kind: 'migrate'; vip: string; to: string }
  | { kind: 'drain'; appliance: string; on: boolean }
  | { kind: 'pin'; vip: string; on: boolean }
  | { kind: 'rebalance'; mode: 'auto' | 'manual' }
  | { kind: 'quit' }
  | { kind: 'refresh' };

export interface Ui {
  view: View;
  appliance: number;
  vip: number;
  access: { offset: number; sort: string; filter: string };
  help: boolean;
  /** Text being typed: a filter or the target of a migration. */
  prompt?: { purpose: 'filter' | 'migrate'; label: string; text: string; vip?: string };
  confirm?: { question: string; action: Action };
  /** The last action's outcome or a hint. */
  message?: { text: string; style: 'ok' | 'warn' | 'bad' };
}

export const initialUi = (view: View = 'site'): Ui => ({ view, appliance: 0, vip: 0, access: { offset: 0, sort: 'client', filter: '' }, help: false });

export const valueOf = <T>(f: Fetched<T> | undefined): T | undefined => (f === undefined ? undefined : 'ok' in f ? f.ok : 'error' in f ? f.last : undefined);

const siteOf = (d: ConsoleData) => valueOf(d.site);
const applianceNames = (d: ConsoleData) => siteOf(d)?.appliances.map((a) => a.name) ?? [];
const vipNames = (d: ConsoleData) => siteOf(d)?.vips.map((v) => v.name) ?? [];
export const selectedAppliance = (d: ConsoleData, ui: Ui) => applianceNames(d)[ui.appliance];
export const selectedVip = (d: ConsoleData, ui: Ui) => vipNames(d)[ui.vip];

/** Rows of the access table that fit the body: the page size the console asks for. */
export const accessRows = (height: number) => Math.max(1, height - 7);

// --- keys --------------------------------------------------------------------------------

export interface Key {
  /** blessed's key name: 'up', 'enter', 'escape', 'backspace', 'pagedown', 'tab', or the character. */
  name: string;
  /** The printable character, if any. */
  ch?: string;
}

const wrap = (i: number, n: number) => (n === 0 ? 0 : (i + n) % n);

/** A key pressed: the new Ui, and an action when the operator has confirmed one. */
export function press(ui: Ui, key: Key, data: ConsoleData, height = 24): { ui: Ui; action?: Action } {
  // blessed reports a carriage return twice, as 'enter' and then 'return': act on 'enter' only.
  if (key.name === 'return') return { ui };
  const k = key.ch && key.ch.length === 1 && key.ch >= ' ' ? key.ch : key.name;
  if (ui.confirm) {
    if (k === 'y' || k === 'Y') return { ui: { ...ui, confirm: undefined, message: { text: `${ui.confirm.question.replace(/\?$/, '')}: sent`, style: 'ok' } }, action: ui.confirm.action };
    return { ui: { ...ui, confirm: undefined, message: { text: 'cancelled', style: 'warn' } } };
  }
  if (ui.prompt) return typing(ui, ui.prompt, key, data);
  if (ui.help) return { ui: { ...ui, help: false } };
  const next = { ...ui, message: undefined };
  const apps = applianceNames(data);
  const vips = vipNames(data);
  switch (k) {
    case 'q':
    case 'C-c':
      return { ui, action: { kind: 'quit' } };
    case '?':
    case 'f1':
      return { ui: { ...next, help: true } };
    case 'tab':
      return { ui: { ...next, view: VIEWS[wrap(VIEWS.indexOf(ui.view) + 1, VIEWS.length)]! } };
    case 'S-tab':
      return { ui: { ...next, view: VIEWS[wrap(VIEWS.indexOf(ui.view) - 1, VIEWS.length)]! } };
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
      return { ui: { ...next, view: VIEWS[Number(k) - 1]! } };
    case 'up':
    case 'k':
      return { ui: { ...next, vip: wrap(ui.vip - 1, vips.length), access: { ...ui.access, offset: 0 } }, action: { kind: 'refresh' } };
    case 'down':
    case 'j':
      return { ui: { ...next, vip: wrap(ui.vip + 1, vips.length), access: { ...ui.access, offset: 0 } }, action: { kind: 'refresh' } };
    case 'left':
    case 'h':
      return { ui: { ...next, appliance: wrap(ui.appliance - 1, apps.length), access: { ...ui.access, offset: 0 } }, action: { kind: 'refresh' } };
    case 'right':
    case 'l':
      return { ui: { ...next, appliance: wrap(ui.appliance + 1, apps.length), access: { ...ui.access, offset: 0 } }, action: { kind: 'refresh' } };
  }
  if (ui.view === 'access') {
    const rows = accessRows(height);
    const matched = valueOf(data.page)?.matched ?? 0;
    const last = Math.max(0, Math.floor((matched - 1) / rows) * rows);
    const at = (offset: number) => ({ ui: { ...next, access: { ...ui.access, offset: Math.max(0, Math.min(last, offset)) } }, action: { kind: 'refresh' } as Action });
    switch (k) {
      case 'pagedown':
      case 'n':
      case ' ':
        return at(ui.access.offset + rows);
      case 'pageup':
      case 'b':
        return at(ui.access.offset - rows);
      case 'home':
      case 'g':
        return at(0);
      case 'end':
      case 'G':
        return at(last);
      case 's': {
        const desc = ui.access.sort.startsWith('-');
        const key = desc ? ui.access.sort.slice(1) : ui.access.sort;
        const nextKey = SORT_KEYS[wrap(SORT_KEYS.indexOf(key as (typeof SORT_KEYS)[number]) + 1, SORT_KEYS.length)]!;
        return { ui: { ...next, access: { ...ui.access, offset: 0, sort: desc ? `-${nextKey}` : nextKey } }, action: { kind: 'refresh' } };
      }
      case 'r':
        return {
          ui: { ...next, access: { ...ui.access, offset: 0, sort: ui.access.sort.startsWith('-') ? ui.access.sort.slice(1) : `-${ui.access.sort}` } },
          action: { kind: 'refresh' },
        };
      case '/':
        return { ui: { ...next, prompt: { purpose: 'filter', label: 'filter (client:, server:, state:, or any text): ', text: ui.access.filter } } };
    }
  }
  const vip = selectedVip(data, ui);
  const appliance = selectedAppliance(data, ui);
  const site = siteOf(data);
  switch (k) {
    case 'm': {
      if (!vip || !site) return { ui: { ...next, message: { text: 'no VIP to migrate (no status yet)', style: 'warn' } } };
      const owner = site.vips.find((v) => v.name === vip)?.owner;
      const to = apps.find((a) => a !== owner) ?? '';
      return { ui: { ...next, prompt: { purpose: 'migrate', label: `migrate ${vip} (on ${owner}) to appliance: `, text: to, vip } } };
    }
    case 'd': {
      if (!appliance || !site) return { ui: { ...next, message: { text: 'no appliance selected', style: 'warn' } } };
      const on = !(site.appliances.find((a) => a.name === appliance)?.maintenance ?? false);
      const question = on ? `Drain ${appliance} (maintenance: its VIPs move away)?` : `End maintenance of ${appliance}?`;
      return { ui: { ...next, confirm: { question, action: { kind: 'drain', appliance, on } } } };
    }
    case 'p': {
      if (!vip || !site) return { ui: { ...next, message: { text: 'no VIP selected', style: 'warn' } } };
      const on = !(site.vips.find((v) => v.name === vip)?.pinned ?? false);
      return { ui: { ...next, confirm: { question: on ? `Pin ${vip} to its appliance?` : `Unpin ${vip}?`, action: { kind: 'pin', vip, on } } } };
    }
    case 'R': {
      const mode = valueOf(data.rebalance) === 'auto' ? 'manual' : 'auto';
      return { ui: { ...next, confirm: { question: `Switch rebalancing to ${mode}?`, action: { kind: 'rebalance', mode } } } };
    }
  }
  return { ui: next };
}

function typing(ui: Ui, prompt: NonNullable<Ui['prompt']>, key: Key, data: ConsoleData): { ui: Ui; action?: Action } {
  if (key.name === 'escape') return { ui: { ...ui, prompt: undefined, message: { text: 'cancelled', style: 'warn' } } };
  if (key.name === 'enter' || key.name === 'linefeed') {
    const text = prompt.text.trim();
    if (prompt.purpose === 'filter') return { ui: { ...ui, prompt: undefined, access: { ...ui.access, filter: text, offset: 0 } }, action: { kind: 'refresh' } };
    const site = siteOf(data);
    if (!site?.appliances.some((a) => a.name === text)) {
      return { ui: { ...ui, prompt: undefined, message: { text: `no appliance named '${text}' (${applianceNames(data).join(', ')})`, style: 'bad' } } };
    }
    const vip = prompt.vip!;
    const from = site.vips.find((v) => v.name === vip)?.owner;
    return { ui: { ...ui, prompt: undefined, confirm: { question: `Migrate ${vip} ${from} -> ${text} with its live connections?`, action: { kind: 'migrate', vip, to: text } } } };
  }
  if (key.name === 'backspace') return { ui: { ...ui, prompt: { ...prompt, text: prompt.text.slice(0, -1) } } };
  if (key.name === 'C-u') return { ui: { ...ui, prompt: { ...prompt, text: '' } } };
  if (key.ch && key.ch.length === 1 && key.ch >= ' ' && prompt.text.length < 120) return { ui: { ...ui, prompt: { ...prompt, text: prompt.text + key.ch } } };
  return { ui };
}

// --- the frame ---------------------------------------------------------------------------

/**
 * The whole screen as `height` lines of at most `width` characters (height Infinity: as many
 * lines as the view has, for --once).
 */
export function frame(data: ConsoleData, ui: Ui, width: number, height: number): Line[] {
  const top = [tabs(ui, width), connection(data, width)];
  const bottom = footer(ui, width);
  const bodyHeight = Number.isFinite(height) ? Math.max(1, height - top.length - bottom.length) : Infinity;
  let body = ui.help ? help() : viewBody(data, ui, width, bodyHeight);
  if (Number.isFinite(bodyHeight)) {
    body = body.slice(0, bodyHeight);
    while (body.length < bodyHeight) body.push([]);
  }
  return [...top, ...body, ...bottom].map((l) => clip(l, width));
}

function viewBody(data: ConsoleData, ui: Ui, width: number, height: number): Line[] {
  switch (ui.view) {
    case 'site': {
      // A taller terminal shows the mode tables and migrations under the site.
      const lines = siteView(data, ui, width);
      if (height - lines.length > 8) lines.push([], ...modesView(data, ui, width));
      if (height - lines.length > 8) lines.push([], ...migrationsView(data, width));
      return lines;
    }
    case 'modes':
      return modesView(data, ui, width);
    case 'access':
      return accessView(data, ui, width, height);
    case 'migrations':
      return migrationsView(data, width);
    case 'plan':
      return planView(data, width);
    case 'backends':
      return backendsView(data, ui, width);
  }
}

function tabs(ui: Ui, width: number): Line {
  const line: Line = [seg(' vipshift ', 'title'), seg(' ')];
  VIEWS.forEach((v, i) => {
    line.push(seg(` ${i + 1} ${VIEW_TITLES[v]} `, v === ui.view ? 'tabOn' : 'tab'));
  });
  return clip(line, width);
}

function connection(data: ConsoleData, width: number): Line {
  const f = data.site;
  const clock = new Date(data.now).toISOString().slice(11, 19);
  if (!f) return clip([seg(`${clock} connecting to ${data.target}...`, 'warn')], width);
  if ('error' in f) {
    const since = new Date(f.since).toISOString().slice(11, 19);
    return clip([seg(`${clock} `), seg(`controller unreachable since ${since}, retrying: ${f.error}`, 'bad')], width);
  }
  if ('unavailable' in f) return clip([seg(`${clock} `), seg(f.unavailable, 'bad')], width);
  const rebalance = data.rebalance && 'ok' in data.rebalance ? data.rebalance.ok : 'not available';
  const skew = data.clockSkewMs;
  const warning =
    skew !== undefined && Math.abs(skew) > CLOCK_WARN_MS
      ? [seg(`  clock ${Math.round(Math.abs(skew) / 1000)} s ${skew > 0 ? 'behind' : 'ahead of'} the controller's: requests fail beyond 30 s, check the time client`, 'warn')]
      : [];
  const cp = f.ok.controllers;
  // Several controllers: which one answers and who leads (the connection follows the leader).
  const leader = cp && cp.store === 'etcd' ? `  talking to ${cp.self}, leader ${cp.leader?.name ?? 'NONE (no migration can start)'}` : '';
  return clip([seg(`${clock} `), seg('controller ok', 'ok'), ...warning, seg(`  rebalance: ${rebalance}${leader}  ${data.target}`, 'dim')], width);
}

function footer(ui: Ui, width: number): Line[] {
  let status: Line;
  if (ui.confirm) status = [seg(`${ui.confirm.question} `, 'warn'), seg('y', 'key'), seg('/'), seg('n', 'key')];
  else if (ui.prompt) status = [seg(ui.prompt.label, 'warn'), seg(`${ui.prompt.text}_`), seg('  enter ok, esc cancel', 'dim')];
  else if (ui.message) status = [seg(ui.message.text, ui.message.style)];
  else status = [];
  const keys: Line = [];
  const hint = (k: string, what: string) => keys.push(seg(k, 'key'), seg(` ${what}  `, 'dim'));
  hint('?', 'help');
  hint('tab', 'view');
  if (ui.view === 'access') {
    hint('pgdn/pgup', 'page');
    hint('s', 'sort');
    hint('/', 'filter');
  } else {
    hint('m', 'migrate');
    hint('d', 'drain');
    hint('p', 'pin');
    hint('R', 'rebalance');
  }
  hint('q', 'quit');
  return [clip(status, width), clip(keys, width)];
}

export function help(): Line[] {
  const k = (key: string, what: string): Line => [seg(fit(key, 16), 'key'), seg(what)];
  return [
    [seg('Keys', 'head')],
    k('1..6, tab', 'views: Site, Modes (mode tables), Access (access table), Migrations, Plan, Backends'),
    k('up/down, j/k', 'choose a VIP (marked >)'),
    k('left/right, h/l', 'choose an appliance (marked >)'),
    k('m', 'migrate the chosen VIP to an appliance (asks which, then confirm)'),
    k('d', 'drain the chosen appliance (maintenance) or end its maintenance'),
    k('p', 'pin / unpin the chosen VIP'),
    k('R', 'switch rebalancing between auto and manual'),
    [seg('Access view', 'head')],
    k('pgdn/pgup, n/b', 'next / previous page; g/G first / last'),
    k('s, r', 'sort by the next column; reverse the order'),
    k('/', 'filter: client:ADDR server:ADDR state:NAME or any text; empty clears'),
    k('q', 'quit'),
    [],
    plain('Every action asks for confirmation (y/n) and then shows its progress.'),
    plain('Any key closes this help.'),
  ];
}

// --- views -------------------------------------------------------------------------------

interface ApplianceRow {
  name: string;
  selected: boolean;
  reachable: boolean;
  error?: string;
  vrrp: string;
  vips: number;
  live: number;
  pps?: number;
  bps?: number;
  load?: number;
  maintenance?: boolean;
  /** The conntrack table: share of nf_conntrack_max in use, full or not. */
  table?: { used: number; full: boolean };
}

/** Packets/s and bytes/s of an appliance from two status samples (counters summed over its VIPs). */
export function rates(now: SiteStatus, before: SiteStatus | undefined, seconds: number, appliance: string): { pps?: number; bps?: number } {
  if (!before || seconds <= 0) return {};
  const sum = (s: SiteStatus, k: 'packets' | 'bytes') => s.appliances.find((a) => a.name === appliance)?.vips.reduce((t, v) => t + v[k], 0);
  const p1 = sum(now, 'packets');
  const p0 = sum(before, 'packets');
  const b1 = sum(now, 'bytes');
  const b0 = sum(before, 'bytes');
  if (p1 === undefined || p0 === undefined || b1 === undefined || b0 === undefined) return {};
  // A counter that went down was reset (the appliance restarted): no rate this time.
  if (p1 < p0 || b1 < b0) return {};
  return { pps: (p1 - p0) / seconds, bps: (b1 - b0) / seconds };
}

function siteView(data: ConsoleData, ui: Ui, width: number): Line[] {
  const site = siteOf(data);
  if (!site) return [plain('no status from the controller yet')];
  const prev = data.previous;
  const at = data.site && 'ok' in data.site ? data.site.at : data.now;
  const plan = valueOf(data.plan);
  const rows: ApplianceRow[] = site.appliances.map((a, i) => {
    const present = a.vips.filter((v) => v.mode !== 'absent');
    return {
      name: a.name,
      selected: i === ui.appliance,
      reachable: a.reachable,
      ...(a.error ? { error: a.error } : {}),
      // Per VRID: m(aster), b(ackup), f(ault), i(nitialize).
      // (an instance per interface: one entry per VRID and state).
      vrrp: a.vrrp?.length ? [...new Set(a.vrrp.map((r) => `${r.vrid}${r.state.slice(0, 1)}`))].join(' ') : '-',
      vips: present.length,
      live: present.reduce((t, v) => t + v.entries, 0),
      ...(prev ? rates(site, prev.site, (at - prev.at) / 1000, a.name) : {}),
      ...(plan?.loads?.[a.name] ? { load: plan.loads[a.name]!.before } : {}),
      ...(a.maintenance !== undefined ? { maintenance: a.maintenance } : {}),
      ...(a.conntrack ? { table: { used: a.conntrack.entries / Math.max(1, a.conntrack.max), full: a.conntrack.full } } : {}),
    };
  });
  const columns: Column<ApplianceRow>[] = [
    { title: 'APPLIANCE', width: 11, value: (r) => `${r.selected ? '>' : ' '}${r.name}` },
    { title: 'HEALTH', width: 6, value: (r) => (r.reachable ? 'up' : 'DOWN'), style: (r) => (r.reachable ? 'ok' : 'bad') },
    { title: 'VRRP', width: 15, min: 5, drop: 2, value: (r) => r.vrrp },
    { title: 'VIPS', width: 4, align: 'right', value: (r) => String(r.vips) },
    { title: 'LIVE', width: 8, align: 'right', value: (r) => count(r.live) },
    { title: 'PKT/S', width: 8, align: 'right', value: (r) => count(r.pps) },
    { title: 'BYTES/S', width: 9, align: 'right', drop: 3, value: (r) => (r.bps === undefined ? '-' : `${bytes(r.bps)}`) },
    { title: 'LOAD/CAP', width: 8, align: 'right', drop: 1, value: (r) => percent(r.load) },
    { title: 'MAINT', width: 5, value: (r) => (r.maintenance === undefined ? '-' : r.maintenance ? 'yes' : 'no'), style: (r) => (r.maintenance ? 'warn' : undefined) },
    {
      title: 'CT TABLE',
      width: 8,
      align: 'right',
      drop: 2,
      value: (r) => (r.table === undefined ? '-' : r.table.full ? 'FULL' : percent(r.table.used)),
      style: (r) => (r.table?.full ? 'bad' : r.table && r.table.used > 0.8 ? 'warn' : undefined),
    },
  ];
  const lines = table(columns, rows, width);
  for (const a of site.appliances) {
    if (a.conntrack?.full) lines.push(clip([seg(`  ${a.name}: conntrack table full (${a.conntrack.entries} of ${a.conntrack.max}): new connections refused (${a.conntrack.refused}), established ones go on`, 'bad')], width));
  }
  for (const r of rows) if (r.error) lines.push(clip([seg(`  ${r.name}: ${r.error}`, 'bad')], width));
  lines.push([]);
  const running = site.migrations.filter((m) => m.state === 'running');
  const vipColumns: Column<SiteStatus['vips'][number] & { i: number }>[] = [
    { title: 'VIP', width: 9, value: (v) => `${v.i === ui.vip ? '>' : ' '}${v.name}` },
    { title: 'ADDRESS', width: 15, drop: 2, value: (v) => site.appliances.flatMap((a) => a.vips).find((s) => s.name === v.name)?.address ?? '-' },
    { title: 'OWNER', width: 8, value: (v) => v.owner },
    { title: 'MODE', width: 10, value: (v) => v.mode, style: (v) => modeStyle(v.mode) },
    { title: 'ENTRIES', width: 9, align: 'right', value: (v) => count(v.entries) },
    { title: 'PIN', width: 3, drop: 1, value: (v) => (v.pinned ? 'yes' : 'no') },
    {
      title: 'NOTE',
      width: 24,
      min: 8,
      drop: 3,
      value: (v) => {
        const m = running.find((r) => r.vip === v.name);
        return m ? `${m.from} -> ${m.to} ${m.step}` : '';
      },
      style: () => 'warn',
    },
  ];
  lines.push(...table(vipColumns, site.vips.map((v, i) => ({ ...v, i })), width));
  for (const m of running) lines.push([], ...migrationProgress(m, site, width, data.now));
  return lines;
}

const modeStyle = (mode: string) => (mode === 'normal' ? 'ok' : mode === 'migrating' ? 'warn' : mode === 'unknown' ? 'bad' : 'dim');

/**
 * Each appliance's mode table (patent figs. 7, 8): the VIPs it has, normal or migrating; absent
 * VIPs are not in it. A VIP held `migrating` with no migration to or from this appliance is a
 * standby's (failover.standby, the default): shown as `standby`, not as a migration.
 */
function modesView(data: ConsoleData, ui: Ui, width: number): Line[] {
  const site = siteOf(data);
  if (!site) return [plain('no status from the controller yet')];
  const lines: Line[] = [];
  const running = site.migrations.filter((m) => m.state === 'running');
  type Row = AgentVipStatus & { shown: string };
  const columns: Column<Row>[] = [
    { title: '  VIP', width: 10, value: (v) => `  ${v.name}` },
    { title: 'MODE', width: 9, value: (v) => v.shown, style: (v) => modeStyle(v.shown) },
    { title: 'ENTRIES', width: 8, align: 'right', value: (v) => count(v.entries) },
    { title: 'HELD NOW', width: 8, align: 'right', value: (v) => count(v.held), style: (v) => (v.held > 0 ? 'warn' : undefined) },
    { title: 'RELEASED', width: 8, align: 'right', value: (v) => count(v.released) },
    { title: 'OVERFLOW', width: 8, align: 'right', value: (v) => count(v.overflowed), style: (v) => (v.overflowed > 0 ? 'bad' : undefined) },
    { title: 'REJECTED', width: 8, align: 'right', value: (v) => count(v.rejected) },
    { title: 'SYNPROXY', width: 9, align: 'right', drop: 2, value: (v) => count(v.synproxied), style: (v) => (v.synproxied > 0 ? 'warn' : undefined) },
    { title: 'LIMITED', width: 8, align: 'right', drop: 2, value: (v) => count(v.limitedVip + v.limitedSource), style: (v) => (v.limitedVip + v.limitedSource > 0 ? 'warn' : undefined) },
    { title: 'PACKETS', width: 10, align: 'right', drop: 1, value: (v) => count(v.packets) },
  ];
  site.appliances.forEach((a, i) => {
    if (lines.length > 0) lines.push([]);
    const title = `${i === ui.appliance ? '>' : ' '}${a.name} mode table`;
    if (!a.reachable) {
      lines.push([seg(title, 'head'), seg(`  unreachable: ${a.error ?? ''}`, 'bad')]);
      return;
    }
    const inMigration = (vip: string) => running.some((m) => m.vip === vip && (m.from === a.name || m.to === a.name));
    const present = a.vips
      .filter((v) => v.mode !== 'absent')
      .map((v): Row => ({ ...v, shown: v.mode === 'migrating' && !inMigration(v.name) ? 'standby' : v.mode }));
    lines.push([seg(title, 'head'), seg(`  ${present.length} VIP${present.length === 1 ? '' : 's'}`, 'dim')]);
    if (present.length === 0) lines.push(plain('  (empty: no VIP is this appliance\'s)'));
    else lines.push(...table(columns, present, width));
  });
  return lines;
}

function accessView(data: ConsoleData, ui: Ui, width: number, height: number): Line[] {
  const appliance = selectedAppliance(data, ui);
  const vip = selectedVip(data, ui);
  if (!appliance || !vip) return [plain('no status from the controller yet')];
  const f = data.page;
  const page = valueOf(f);
  const sortDesc = ui.access.sort.startsWith('-');
  const sortKey = sortDesc ? ui.access.sort.slice(1) : ui.access.sort;
  const lines: Line[] = [[seg(`Access table of ${vip} on ${appliance}`, 'head'), seg('  (left/right: appliance, up/down: VIP)', 'dim')]];
  if (f && 'unavailable' in f) return [...lines, [seg(`not available: ${f.unavailable}`, 'bad')]];
  if (f && 'error' in f) lines.push([seg(`could not fetch the page: ${f.error}`, 'bad')]);
  if (!page || page.vip !== vip) return [...lines, plain('loading...')];
  const rows = accessRows(height);
  const pages = Math.max(1, Math.ceil(page.matched / rows));
  lines.push(
    clip(
      [
        seg(`${count(page.total)} entries`),
        seg(page.filter ? `, ${count(page.matched)} match "${page.filter}"` : '', 'warn'),
        seg(`  sort ${sortKey} ${sortDesc ? 'desc' : 'asc'}  page ${Math.floor(page.offset / rows) + 1}/${pages}`),
        seg(`  snapshot ${duration(page.snapshotAgeMs)}`, 'dim'),
      ],
      width,
    ),
  );
  const fullnat = page.rows.some((r) => r.inside);
  const sorted = (title: string, key: string) => (key === sortKey ? `${title}${sortDesc ? 'v' : '^'}` : title);
  const columns: Column<AccessPage['rows'][number]>[] = [
    { title: sorted('CLIENT', 'client'), width: 20, min: 17, value: (r) => r.client },
    { title: sorted('VIP', 'vip'), width: 18, min: 15, drop: 1, value: (r) => r.vip },
    ...(fullnat ? [{ title: sorted('INSIDE', 'inside'), width: 20, min: 17, drop: 2, value: (r: AccessPage['rows'][number]) => r.inside ?? '-' }] : []),
    { title: sorted('SERVER', 'server'), width: 20, min: 17, value: (r) => r.server },
    { title: sorted('STATE', 'state'), width: 11, min: 7, value: (r) => r.tcpState, style: (r) => (r.tcpState === 'ESTABLISHED' ? 'ok' : undefined) },
    { title: sorted('TIMEOUT', 'timeout'), width: 7, align: 'right', value: (r) => `${r.timeout}s` },
  ];
  if (page.rows.length === 0) return [...lines, plain(page.total === 0 ? '(no entries: no live connection of this VIP here)' : '(no entry matches the filter)')];
  lines.push(...table(columns, page.rows, width));
  return lines;
}

/** A running migration as its four steps, with a bar of entries moved of the total. */
export function migrationProgress(m: MigrationProgress, site: SiteStatus | undefined, width: number, now: number): Line[] {
  const stepIndex = m.step === 'precopy' ? -1 : STEPS.indexOf(m.step);
  const target = site?.appliances.find((a) => a.name === m.to)?.vips.find((v) => v.name === m.vip);
  const elapsed = now - Date.parse(m.startedAt);
  const lines: Line[] = [
    [seg(`Migration ${m.vip} ${m.from} -> ${m.to}`, 'head'), seg(`  ${m.state}`, m.state === 'running' ? 'warn' : m.state === 'done' ? 'ok' : 'bad'), seg(`  id ${m.id.slice(0, 8)}`, 'dim')],
  ];
  if (m.precopy || m.step === 'precopy') {
    // Before step 1, outside the hold: the target copies the table while the source forwards.
    const ms = m.precopy?.ms;
    const running = ms === undefined && m.state === 'running';
    const style = ms !== undefined ? (m.precopy?.error ? 'dim' : 'ok') : running ? 'warn' : 'bad';
    const what = m.precopy?.error ? 'none: whole table in step 3' : ms !== undefined ? duration(ms) : running ? 'running' : '';
    lines.push([seg(`  ${ms !== undefined ? '[x]' : running ? '[>]' : '[!]'} `, style), seg(fit('0 pre-copy (no hold)', 26)), seg(fit(what, 10, 'right'), style)]);
  }
  STEPS.forEach((s, i) => {
    const ms = m.steps[`${s}_ms`];
    const state = ms !== undefined ? 'done' : i === stepIndex && m.state === 'running' ? 'running' : i === stepIndex && m.state === 'aborted' ? 'failed' : 'pending';
    const mark = state === 'done' ? '[x]' : state === 'running' ? '[>]' : state === 'failed' ? '[!]' : '[ ]';
    const style = state === 'done' ? 'ok' : state === 'running' ? 'warn' : state === 'failed' ? 'bad' : 'dim';
    const time = ms !== undefined ? duration(ms) : state === 'running' && m.state === 'running' ? 'running' : '';
    lines.push([seg(`  ${mark} `, style), seg(fit(`${i + 1} ${STEP_TITLES[s]}`, 26)), seg(fit(time, 10, 'right'), style)]);
  });
  const fraction = m.entries.total > 0 ? m.entries.moved / m.entries.total : m.state === 'done' ? 1 : 0;
  const label = ` ${count(m.entries.moved)}/${count(m.entries.total)} entries`;
  lines.push([seg('  '), seg(bar(fraction, Math.max(10, Math.min(40, width - label.length - 4))), 'ok'), seg(label)]);
  lines.push(
    plain(
      `  held now ${count(target?.held)}  released ${count(m.released || target?.released)}  ${m.totalMs !== undefined ? `total ${duration(m.totalMs)}` : `elapsed ${duration(elapsed)}`}`,
    ),
  );
  if (m.error) lines.push([seg(`  reason: ${m.error}`, 'bad')]);
  return lines.map((l) => clip(l, width));
}

function migrationsView(data: ConsoleData, width: number): Line[] {
  const site = siteOf(data);
  if (!site) return [plain('no status from the controller yet')];
  const running = site.migrations.filter((m) => m.state === 'running');
  const history = site.migrations.filter((m) => m.state !== 'running');
  const lines: Line[] = [];
  if (running.length === 0) lines.push([seg('No migration running', 'dim')]);
  for (const m of running) lines.push(...migrationProgress(m, site, width, data.now), []);
  lines.push([seg('Recent migrations', 'head')]);
  if (history.length === 0) lines.push(plain('  (none yet)'));
  const columns: Column<MigrationProgress>[] = [
    { title: '  STARTED', width: 10, value: (m) => `  ${m.startedAt.slice(11, 19)}` },
    { title: 'VIP', width: 6, value: (m) => m.vip },
    { title: 'MOVE', width: 11, value: (m) => `${m.from}->${m.to}` },
    { title: 'STATE', width: 8, value: (m) => m.state, style: (m) => (m.state === 'done' && !m.error ? 'ok' : 'bad') },
    { title: 'TIME', width: 9, align: 'right', value: (m) => duration(m.totalMs) },
    { title: 'ENTRIES', width: 8, align: 'right', value: (m) => count(m.entries.moved) },
    { title: 'RELEASED', width: 8, align: 'right', drop: 1, value: (m) => count(m.released) },
    { title: 'REASON', width: 30, min: 6, drop: 2, value: (m) => m.error ?? '', style: () => 'bad' },
  ];
  if (history.length) lines.push(...table(columns, history, width));
  // Reasons are long: each failure's in full under the table.
  for (const m of history.filter((h) => h.error)) lines.push(clip([seg(`  ${m.startedAt.slice(11, 19)} ${m.vip}: ${m.error}`, 'bad')], width));
  return lines;
}

function planView(data: ConsoleData, width: number): Line[] {
  const f = data.plan;
  if (!f) return [plain('loading the plan...')];
  if ('unavailable' in f) return [[seg('Plan: not available', 'warn')], plain(`  ${f.unavailable}`)];
  const plan = valueOf(f);
  const lines: Line[] = [];
  if ('error' in f) lines.push([seg(`could not fetch the plan: ${f.error}`, 'bad')]);
  if (!plan) return lines;
  lines.push([seg(`Plan (${plan.algorithm ?? 'assignment'})`, 'head'), seg(plan.imbalance ? `  imbalance ${percent(plan.imbalance.before)} -> ${percent(plan.imbalance.after)}` : '', 'dim')]);
  if (plan.mode) lines.push(plain(`  rebalancing: ${plan.mode}`));
  if (plan.holdingBack) lines.push([seg(`  holding back: ${plan.holdingBack}`, 'warn')]);
  if (plan.moves.length === 0) lines.push(plain('  nothing to move'));
  for (const m of plan.moves) {
    const loads = Object.entries(m.loads ?? {})
      .map(([a, l]) => `${a} ${percent(l.before)}->${percent(l.after)}`)
      .join(', ');
    lines.push([seg(`  ${m.vip} ${m.from} -> ${m.to}`, 'warn'), seg(`  ${m.reason}  ${loads}`)]);
    if (m.why) lines.push([seg(`    ${m.why}`, 'dim')]);
  }
  if (plan.loads) {
    lines.push([], [seg('Loads of capacity (before -> after)', 'head')]);
    for (const [a, l] of Object.entries(plan.loads)) lines.push(plain(`  ${fit(a, 10)} ${fit(percent(l.before), 6, 'right')} -> ${fit(percent(l.after), 6, 'right')}`));
  }
  if (plan.waiting?.length) {
    lines.push([], [seg('Waiting', 'head')]);
    for (const w of plan.waiting) lines.push(plain(`  ${w.vip}: ${w.reason}`));
  }
  for (const n of plan.notes ?? []) lines.push([seg(`  note: ${n}`, 'dim')]);
  return lines.map((l) => clip(l, width));
}

type BackendRow = AgentVipStatus['backends'][number] & { vip: string; first: boolean };

const backendStyle = (state: string) => (state === 'up' ? 'ok' : state === 'down' ? 'bad' : 'warn');

/**
 * The chosen appliance's backends, VIP by VIP: the pool's state (up, down by its check,
 * drained by weight 0) and weight, live connections, and the health check's last word here
 * (its age, latency and reason). A standby checks the backends of the VIPs it does not hold.
 */
function backendsView(data: ConsoleData, ui: Ui, width: number): Line[] {
  const site = siteOf(data);
  const appliance = selectedAppliance(data, ui);
  const a = site?.appliances.find((x) => x.name === appliance);
  if (!site || !a) return [plain('no status from the controller yet')];
  const lines: Line[] = [[seg(`Backends on ${a.name}`, 'head'), seg('  (left/right: appliance)', 'dim')]];
  if (!a.reachable) return [...lines, [seg(`unreachable: ${a.error ?? ''}`, 'bad')]];
  const rows: BackendRow[] = a.vips.flatMap((v) => (v.backends ?? []).map((b, i) => ({ ...b, vip: v.name, first: i === 0 })));
  if (rows.length === 0) return [...lines, plain('(no backend reported)')];
  const age = (b: BackendRow) => (b.check?.lastCheck ? `${duration(Math.max(0, data.now - b.check.lastCheck.at))} ago` : '-');
  const columns: Column<BackendRow>[] = [
    { title: 'VIP', width: 7, value: (b) => (b.first ? b.vip : '') },
    { title: 'BACKEND', width: 21, min: 15, value: (b) => (b.port === undefined ? b.address : `${b.address}:${b.port}`) },
    { title: 'STATE', width: 7, value: (b) => b.state, style: (b) => backendStyle(b.state) },
    { title: 'WEIGHT', width: 6, align: 'right', value: (b) => String(b.weight) },
    { title: 'CONNS', width: 7, align: 'right', value: (b) => count(b.connections) },
    { title: 'CHECK', width: 9, drop: 3, value: (b) => (b.check ? `${b.check.type}:${b.check.checkPort}` : 'off') },
    { title: 'LAST', width: 9, align: 'right', drop: 2, value: age },
    { title: 'LATENCY', width: 8, align: 'right', drop: 1, value: (b) => duration(b.check?.lastCheck?.latencyMs) },
    {
      title: 'REASON',
      width: 30,
      min: 8,
      drop: 4,
      value: (b) => (b.state === 'up' && b.check?.lastCheck && b.check.lastCheck.outcome !== 'pass' ? `${b.check.failuresInRow} failing: ${b.check.lastCheck.reason}` : b.reason),
      style: (b) => (b.check?.lastCheck && b.check.lastCheck.outcome !== 'pass' ? 'warn' : undefined),
    },
  ];
  lines.push(...table(columns, rows, width));
  return lines;
}
