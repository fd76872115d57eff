/**
 * The console's terminal: the one module that owns blessed. It draws the frames model.ts
 * makes (blessed redraws only the cells that changed: no flicker), turns keypresses into
 * model keys, refreshes once a second, and sends confirmed actions through source.ts.
 */
import blessed from 'blessed';
import { frame, initialUi, press, valueOf, type ConsoleData, type Key, type Ui, type View } from './model.js';
import type { Line, Style } from './format.js';
import type { ConsoleSource } from './source.js';

export interface ScreenOptions {
  mono: boolean;
  view?: View;
  refreshMs?: number;
}

// Colours that read on dark and on light backgrounds: no white, black, yellow, cyan or blue text.
const COLOUR: Record<Style, [string, string]> = {
  head: ['{bold}', '{/bold}'],
  title: ['{inverse}{bold}', '{/bold}{/inverse}'],
  ok: ['{green-fg}', '{/green-fg}'],
  warn: ['{magenta-fg}{bold}', '{/bold}{/magenta-fg}'],
  bad: ['{red-fg}{bold}', '{/bold}{/red-fg}'],
  dim: ['', ''],
  sel: ['{inverse}', '{/inverse}'],
  key: ['{bold}{underline}', '{/underline}{/bold}'],
  tab: ['', ''],
  tabOn: ['{inverse}{bold}', '{/bold}{/inverse}'],
};
const MONO: Record<Style, [string, string]> = {
  head: ['{bold}', '{/bold}'],
  title: ['{inverse}', '{/inverse}'],
  ok: ['', ''],
  warn: ['{bold}', '{/bold}'],
  bad: ['{bold}{underline}', '{/underline}{/bold}'],
  dim: ['', ''],
  sel: ['{inverse}', '{/inverse}'],
  key: ['{bold}', '{/bold}'],
  tab: ['', ''],
  tabOn: ['{inverse}', '{/inverse}'],
};

function tagged(lines: Line[], mono: boolean): string {
  const map = mono ? MONO : COLOUR;
  return lines
    .map((line) =>
      line
        .map((s) => {
          const text = blessed.escape(s.text);
          if (!s.style) return text;
          const [open, close] = map[s.style];
          return `${open}${text}${close}`;
        })
        .join(''),
    )
    .join('\n');
}

/** `next` with the migrations of `newer` (fetched later than next's status). */
function withMigrationsOf(newer: ConsoleData, next: ConsoleData): ConsoleData {
  const migrations = valueOf(newer.site)?.migrations;
  if (!migrations || !next.site || !('ok' in next.site)) return next;
  return { ...next, site: { ...next.site, ok: { ...next.site.ok, migrations } } };
}

/** Runs the console until the operator quits; resolves with the exit code. */
export function runScreen(source: ConsoleSource, options: ScreenOptions): Promise<number> {
  const screen = blessed.screen({ smartCSR: true, title: 'vipshift console', warnings: false, fullUnicode: false, autoPadding: false });
  const box = blessed.box({ top: 0, left: 0, width: '100%', height: '100%', tags: true, wrap: false });
  screen.append(box);

  let ui: Ui = initialUi(options.view);
  let data: ConsoleData = { target: source.target, now: Date.now() };
  let fetching = false;
  let again = false;
  let stopped = false;

  const draw = () => {
    if (stopped) return;
    const width = Number(screen.width) || 80;
    const height = Number(screen.height) || 24;
    data = { ...data, now: Date.now() };
    box.setContent(tagged(frame(data, ui, width, height), options.mono));
    screen.render();
  };

  // Progress is fetched on its own, also while a slow full refresh is in flight; the newer
  // of the two wins, so a step never appears to go back.
  let lightBusy = false;
  let lightAt = 0;
  let watching = false;
  const progress = async () => {
    if (lightBusy) return;
    lightBusy = true;
    try {
      const next = await source.progress(data);
      if (next !== data) lightAt = Date.now();
      data = next;
      draw();
    } finally {
      lightBusy = false;
    }
  };
  const refresh = async () => {
    if (fetching) {
      again = true;
      return;
    }
    fetching = true;
    try {
      do {
        again = false;
        const startedAt = Date.now();
        const next = await source.refresh(data, ui, Number(screen.height) || 24);
        data = lightAt > startedAt ? withMigrationsOf(data, next) : next;
        draw();
      } while (again && !stopped);
    } finally {
      fetching = false;
    }
  };

  return new Promise<number>((resolve) => {
    // A migration's steps take fractions of a second: while one runs, its progress is
    // asked four times a second between the full refreshes.
    const running = () => valueOf(data.site)?.migrations.some((m) => m.state === 'running') ?? false;
    let last = 0;
    const timer = setInterval(() => {
      if (Date.now() - last >= (options.refreshMs ?? 1000) - 20) {
        last = Date.now();
        void refresh();
      } else if (running() || watching) void progress();
    }, 250);
    const quit = () => {
      stopped = true;
      clearInterval(timer);
      screen.destroy();
      resolve(0);
    };
    screen.on('keypress', (ch: string | undefined, key: { name?: string; full?: string } | undefined) => {
      const k: Key = { name: key?.full ?? key?.name ?? ch ?? '', ...(ch ? { ch } : {}) };
      const result = press(ui, k, data, Number(screen.height) || 24);
      ui = result.ui;
      draw();
      const action = result.action;
      if (!action) return;
      if (action.kind === 'quit') return quit();
      if (action.kind === 'refresh') return void refresh();
      ui = { ...ui, message: { text: `${action.kind}: sending...`, style: 'warn' } };
      draw();
      if (action.kind === 'migrate') watching = true;
      void source.act(action).then((outcome) => {
        ui = { ...ui, message: outcome };
        // Until a status shows the migration running, follow its progress anyway.
        if (action.kind === 'migrate') setTimeout(() => (watching = false), 3000);
        // A migration is best followed on its view.
        if (action.kind === 'migrate' && outcome.style === 'ok') ui = { ...ui, view: ui.view === 'site' ? 'site' : 'migrations' };
        void refresh();
      });
    });
    screen.on('resize', draw);
    draw();
    void refresh();
  });
}
