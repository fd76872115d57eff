/**
 * `make console-screenshot`: docs/console.png, the console in tmux in the middle of a
 * migration (vip1 lb1 -> lb2 with 150,000 entries and live connections), captured with
 * `tmux capture-pane -e`, turned into HTML here and into a PNG by headless Chromium
 * (Debian's `chromium`). Needs root (the lab) and a build.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { labDown, labUp, siteFor } from '../src/lab/lab.js';
import { host } from '../src/lab/site.js';
import { startTraffic } from '../src/lab/traffic.js';
import { createSynthetic, syntheticRecords } from '../test/helpers/console-entries.js';

const LAB = 'vtconshot';
const COLS = 100;
const ROWS = 34;
const OUT = path.resolve('docs/console.png');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const tmux = (...args: string[]) => spawnSync('tmux', args, { encoding: 'utf8' }).stdout ?? '';

// xterm's 16 colours, as a dark terminal draws them.
const PALETTE = ['#1d1f21', '#cc6666', '#8fbc5a', '#e0c060', '#6f9fd8', '#c397d8', '#70c0b1', '#d0d0d0', '#707880', '#ff7b7b', '#b5e07a', '#f0d070', '#8fbfff', '#e0a8ff', '#8ae0d0', '#ffffff'];
const FG = '#d0d0d0';
const BG = '#1d1f21';

function xterm256(n: number): string {
  if (n < 16) return PALETTE[n]!;
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return `rgb(${v},${v},${v})`;
  }
  const i = n - 16;
  const c = (x: number) => (x === 0 ? 0 : 55 + x * 40);
  return `rgb(${c(Math.floor(i / 36))},${c(Math.floor(i / 6) % 6)},${c(i % 6)})`;
}

const escapeHtml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** ANSI SGR (what capture-pane -e emits) to HTML spans. */
export function ansiToHtml(ansi: string): string {
  let fg: string | undefined;
  let bg: string | undefined;
  let bold = false;
  let underline = false;
  let inverse = false;
  let out = '';
  const span = (text: string) => {
    if (!text) return;
    let f = fg ?? FG;
    let b = bg ?? BG;
    if (inverse) [f, b] = [b, f];
    const style = [`color:${f}`, b !== BG ? `background:${b}` : '', bold ? 'font-weight:bold' : '', underline ? 'text-decoration:underline' : ''].filter(Boolean).join(';');
    out += `<span style="${style}">${escapeHtml(text)}</span>`;
  };
  const re = /\x1b\[([0-9;]*)m/g;
  let last = 0;
  for (let m = re.exec(ansi); m; m = re.exec(ansi)) {
    span(ansi.slice(last, m.index));
    last = re.lastIndex;
    const codes = m[1] === '' ? [0] : m[1]!.split(';').map(Number);
    for (let i = 0; i < codes.length; i++) {
      const c = codes[i]!;
      if (c === 0) [fg, bg, bold, underline, inverse] = [undefined, undefined, false, false, false];
      else if (c === 1) bold = true;
      else if (c === 4) underline = true;
      else if (c === 7) inverse = true;
      else if (c === 22) bold = false;
      else if (c === 24) underline = false;
      else if (c === 27) inverse = false;
      else if (c >= 30 && c <= 37) fg = PALETTE[c - 30];
      else if (c >= 90 && c <= 97) fg = PALETTE[c - 90 + 8];
      else if (c === 39) fg = undefined;
      else if (c >= 40 && c <= 47) bg = PALETTE[c - 40];
      else if (c >= 100 && c <= 107) bg = PALETTE[c - 100 + 8];
      else if (c === 49) bg = undefined;
      else if ((c === 38 || c === 48) && codes[i + 1] === 5) {
        const colour = xterm256(codes[i + 2]!);
        if (c === 38) fg = colour;
        else bg = colour;
        i += 2;
      } else if ((c === 38 || c === 48) && codes[i + 1] === 2) {
        const colour = `rgb(${codes[i + 2]},${codes[i + 3]},${codes[i + 4]})`;
        if (c === 38) fg = colour;
        else bg = colour;
        i += 4;
      }
    }
  }
  span(ansi.slice(last));
  return out;
}

async function main(): Promise<void> {
  await labDown({ name: LAB }).catch(() => undefined);
  await labUp({ name: LAB });
  const session = LAB;
  const work = mkdtempSync(path.join(tmpdir(), 'vipshift-shot-'));
  const site = siteFor(LAB);
  const traffic = startTraffic(host(site, 'client').namespace, { address: '203.0.113.10', port: 7, connections: 50, intervalMs: 100, durationMs: 30_000 });
  try {
    await createSynthetic(host(site, 'lb1').namespace, syntheticRecords(150_000, { mark: 1, address: '203.0.113.10', port: 7, server: '198.18.0.101' }));
    await traffic.established;
    spawnSync('tmux', ['kill-session', '-t', session]);
    tmux('new-session', '-d', '-s', session, '-x', String(COLS), '-y', String(ROWS), '-e', 'LANG=C.UTF-8', '-e', 'NCURSES_NO_UTF8_ACS=1', '-e', 'TERM=xterm-256color', `${process.execPath} ${path.resolve('dist/cli.js')} console --lab ${LAB}`);
    await sleep(3000);
    tmux('send-keys', '-t', session, 'm');
    await sleep(300);
    tmux('send-keys', '-t', session, 'Enter');
    await sleep(300);
    tmux('send-keys', '-t', session, 'y');
    // The frame to keep: step 3 under way with some entries moved, vip1 migrating on lb2.
    let capture = '';
    const deadline = Date.now() + 20_000;
    for (;;) {
      const text = tmux('capture-pane', '-p', '-t', session);
      if (/\[>\] 3 move the entries/.test(text) && /\[#+\.+\] [1-9][\d,]*\//.test(text) && /vip1 +migrating/.test(text)) {
        capture = tmux('capture-pane', '-p', '-e', '-t', session);
        break;
      }
      if (Date.now() > deadline) throw new Error(`no mid-migration frame within 20 s; last:\n${text}`);
      await sleep(50);
    }
    const html = `<!doctype html><meta charset="utf-8"><style>body{margin:0;background:${BG}}pre{margin:0;padding:12px;font:14px/1.25 "DejaVu Sans Mono",monospace;color:${FG}}</style><pre>${ansiToHtml(capture)}</pre>`;
    const file = path.join(work, 'console.html');
    writeFileSync(file, html);
    const width = Math.ceil(COLS * 8.45 + 24);
    const height = Math.ceil(ROWS * 17.5 + 24);
    const r = spawnSync(
      'chromium',
      ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--user-data-dir=${path.join(work, 'profile')}`, '--hide-scrollbars', `--window-size=${width},${height}`, `--screenshot=${OUT}`, `file://${file}`],
      { encoding: 'utf8', timeout: 60_000 },
    );
    if (r.status !== 0) throw new Error(`chromium: ${r.stderr}`);
    process.stdout.write(`${OUT} (${width}x${height})\n`);
  } finally {
    spawnSync('tmux', ['kill-session', '-t', session]);
    await traffic.stop().catch(() => undefined);
    await labDown({ name: LAB });
    rmSync(work, { recursive: true, force: true });
  }
}

await main();
