/**
 * The console's building blocks, pure: styled lines, numbers for people, tables that fit
 * the terminal's width by dropping their least important columns, progress bars.
 */

/** Meaning, not colour: screen.ts maps these to colours, or to bold/underline/inverse in monochrome. */
export type Style = 'head' | 'title' | 'ok' | 'warn' | 'bad' | 'dim' | 'sel' | 'key' | 'tab' | 'tabOn';
export interface Segment {
  text: string;
  style?: Style;
}
export type Line = Segment[];

export const seg = (text: string, style?: Style): Segment => (style ? { text, style } : { text });
export const plain = (text: string): Line => [seg(text)];
export const lineText = (line: Line): string => line.map((s) => s.text).join('');

/** Cuts a line to `width` characters, keeping styles. */
export function clip(line: Line, width: number): Line {
  const out: Line = [];
  let left = width;
  for (const s of line) {
    if (left <= 0) break;
    out.push(s.text.length <= left ? s : { ...s, text: s.text.slice(0, left) });
    left -= s.text.length;
  }
  return out;
}

export function fit(text: string, width: number, align: 'left' | 'right' = 'left'): string {
  if (text.length > width) return width <= 1 ? text.slice(0, width) : `${text.slice(0, width - 1)}~`;
  return align === 'left' ? text.padEnd(width) : text.padStart(width);
}

export function count(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '-';
  return Math.round(n).toLocaleString('en-US');
}

export function bytes(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '-';
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let u = 0;
  while (Math.abs(n) >= 1000 && u < units.length - 1) {
    n /= 1000;
    u++;
  }
  return `${u === 0 ? Math.round(n) : n.toFixed(1)} ${units[u]}`;
}

export function duration(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return '-';
  if (ms < 1000) return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

export function percent(x: number | undefined): string {
  return x === undefined || !Number.isFinite(x) ? '-' : `${Math.round(x * 100)} %`;
}

/** `[#######.......]` */
export function bar(fraction: number, width: number): string {
  const inner = Math.max(1, width - 2);
  const f = Math.min(1, Math.max(0, Number.isFinite(fraction) ? fraction : 0));
  const filled = Math.round(f * inner);
  return `[${'#'.repeat(filled)}${'.'.repeat(inner - filled)}]`;
}

export interface Column<R> {
  title: string;
  /** Width the column wants; it may get less down to `min`. */
  width: number;
  min?: number;
  align?: 'left' | 'right';
  /** Lower goes first when the terminal is too narrow; 0 never goes. */
  drop?: number;
  value(row: R): string;
  style?(row: R): Style | undefined;
}

/**
 * A header line and one line per row, within `width`: columns with the lowest `drop` go first,
 * then columns shrink towards their `min`, then the last line is clipped.
 */
export function table<R>(columns: Column<R>[], rows: R[], width: number, selected?: number): Line[] {
  let cols = [...columns];
  const total = (cs: Column<R>[], shrink = false) => cs.reduce((s, c) => s + (shrink ? (c.min ?? c.width) : c.width) + 1, -1);
  while (total(cols, true) > width) {
    const droppable = cols.filter((c) => (c.drop ?? 0) > 0);
    if (droppable.length === 0) break;
    const victim = droppable.reduce((a, b) => ((b.drop ?? 0) < (a.drop ?? 0) ? b : a));
    cols = cols.filter((c) => c !== victim);
  }
  const widths = cols.map((c) => c.width);
  let excess = total(cols) - width;
  for (let i = cols.length - 1; i >= 0 && excess > 0; i--) {
    const give = Math.min(excess, widths[i]! - (cols[i]!.min ?? widths[i]!));
    widths[i]! -= give;
    excess -= give;
  }
  const head: Line = [seg(cols.map((c, i) => fit(c.title, widths[i]!, c.align)).join(' '), 'head')];
  const body = rows.map((r, ri): Line => {
    const line: Line = [];
    cols.forEach((c, i) => {
      if (i > 0) line.push(seg(' '));
      const style = ri === selected ? 'sel' : c.style?.(r);
      line.push(seg(fit(c.value(r), widths[i]!, c.align), style));
    });
    return line;
  });
  return [head, ...body].map((l) => clip(l, width));
}
