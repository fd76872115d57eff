/**
 * keepalived's configuration language, as tokens: words, quoted strings and braces, each with
 * the file and line it came from. `!` and `#` start a comment anywhere outside quotes (keepalived
 * 2.2 reads `virtual_router_id 3#0` as 3). `include PATTERN` is resolved here, where keepalived
 * resolves it too: anywhere in the file, the pattern relative to the including file's folder,
 * with glob(7) wildcards, matches read in sorted order; an include cycle is an error.
 */
import { readFileSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { KeepalivedConfigError, type Position, type Warning } from './diagnostics.js';

export interface Token extends Position {
  text: string;
  /** A quoted string is never a brace, a comment or the `include` keyword. */
  quoted: boolean;
}

export interface Tokenized {
  tokens: Token[];
  warnings: Warning[];
  /** Every file read, the top one first: for messages and for tests. */
  files: string[];
}

/** At most this many files are read for one configuration, counting each include again. */
export const MAX_FILES_READ = 1000;

/** Reads `file` and every file it includes. Throws KeepalivedConfigError on broken input. */
export function tokenizeFile(file: string): Tokenized {
  const out: Tokenized = { tokens: [], warnings: [], files: [] };
  readInto(file, undefined, [], out);
  return out;
}

/** Tokens of one text, with `include` resolved relative to `file`'s folder. */
export function tokenizeText(text: string, file: string): Tokenized {
  const out: Tokenized = { tokens: [], warnings: [], files: [file] };
  lexInto(text, file, [realOrSelf(file)], out);
  return out;
}

function realOrSelf(file: string): string {
  try {
    return realpathSync(file);
  } catch {
    return file;
  }
}

function readInto(file: string, from: Position | undefined, stack: string[], out: Tokenized): void {
  const at = from ?? { file, line: 0 };
  let text: string;
  let real: string;
  try {
    real = realpathSync(file);
    text = readFileSync(real, 'utf8');
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new KeepalivedConfigError(at, `cannot read ${file}: ${why}`);
  }
  if (stack.includes(real)) {
    throw new KeepalivedConfigError(at, `include cycle: ${[...stack, real].join(' -> ')}`);
  }
  // Includes without a cycle can still multiply (each file including the next twice):
  // the expansion is bounded, not followed to 2^n files.
  if (out.files.length >= MAX_FILES_READ) {
    throw new KeepalivedConfigError(at, `more than ${MAX_FILES_READ} files read through include: the includes multiply (is a file included several times over?)`);
  }
  out.files.push(file);
  lexInto(text, file, [...stack, real], out);
}

function lexInto(text: string, file: string, stack: string[], out: Tokenized): void {
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = i + 1;
    const words = lexLine(lines[i] ?? '', file, line);
    const first = words[0];
    if (first && !first.quoted && first.text === 'include') {
      const pattern = words[1];
      if (!pattern || pattern.text === '{' || pattern.text === '}') {
        throw new KeepalivedConfigError(first, 'include needs a file name or pattern');
      }
      if (words.length > 2) {
        out.warnings.push({ file, line, message: `include takes one pattern; ignoring '${words.slice(2).map((w) => w.text).join(' ')}'` });
      }
      include(pattern, stack, out);
      continue;
    }
    out.tokens.push(...words);
  }
}

function lexLine(text: string, file: string, line: number): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (c === ' ' || c === '\t' || c === '\f' || c === '\v' || c === '\r') {
      i++;
    } else if (c === '!' || c === '#') {
      break;
    } else if (c === '{' || c === '}') {
      tokens.push({ text: c, quoted: false, file, line });
      i++;
    } else if (c === '"') {
      let value = '';
      let j = i + 1;
      for (; j < text.length && text[j] !== '"'; j++) {
        // A backslash keeps the next character, so a quoted string can hold `"`.
        if (text[j] === '\\' && j + 1 < text.length) j++;
        value += text[j];
      }
      if (j >= text.length) throw new KeepalivedConfigError({ file, line }, 'unterminated quoted string');
      tokens.push({ text: value, quoted: true, file, line });
      i = j + 1;
    } else {
      let j = i;
      while (j < text.length && !' \t\f\v\r{}"!#'.includes(text[j]!)) j++;
      tokens.push({ text: text.slice(i, j), quoted: false, file, line });
      i = j;
    }
  }
  return tokens;
}

function include(pattern: Token, stack: string[], out: Tokenized): void {
  const full = isAbsolute(pattern.text) ? pattern.text : join(dirname(pattern.file), pattern.text);
  if (!hasWildcard(full)) {
    readInto(full, pattern, stack, out);
    return;
  }
  let matches: string[];
  try {
    matches = expandGlob(full);
  } catch (err) {
    // An impossible bracket range such as [z-a].
    throw new KeepalivedConfigError(pattern, `bad include pattern ${full}: ${(err as Error).message}`);
  }
  if (matches.length === 0) {
    // An empty conf.d is normal; keepalived carries on too.
    out.warnings.push({ file: pattern.file, line: pattern.line, message: `include pattern ${full} matches no file` });
  }
  for (const m of matches) readInto(m, pattern, stack, out);
}

function hasWildcard(s: string): boolean {
  return /[*?[]/.test(s);
}

/** Regular files matching a glob(7) pattern (`*`, `?`, `[...]` per path segment), sorted. */
export function expandGlob(pattern: string): string[] {
  const absolute = pattern.startsWith('/');
  const segments = pattern.split('/').filter((s) => s !== '' && s !== '.');
  let paths = [absolute ? '/' : ''];
  for (const [n, segment] of segments.entries()) {
    const last = n === segments.length - 1;
    const next: string[] = [];
    for (const base of paths) {
      const names = hasWildcard(segment) ? listDir(base).filter(globMatcher(segment)).sort() : [segment];
      for (const name of names) {
        const p = base + name;
        if (last ? isFile(p) : isDirectory(p)) next.push(last ? p : `${p}/`);
      }
    }
    paths = next;
  }
  return paths;
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir === '' ? '.' : dir);
  } catch {
    return [];
  }
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** One position of a glob segment: `*`, or one character that a test admits. */
type GlobItem = { star: true } | { star: false; test: (c: string) => boolean };

/**
 * A predicate for one path segment of a glob(7) pattern. Matched without regular
 * expressions, in at most (pattern × name) steps: a pattern of many `*` on a long name cannot
 * backtrack exponentially.
 */
export function globMatcher(segment: string): (name: string) => boolean {
  const items: GlobItem[] = [];
  for (let i = 0; i < segment.length; i++) {
    const c = segment[i]!;
    if (c === '*') {
      if (!items.at(-1)?.star) items.push({ star: true });
    } else if (c === '?') items.push({ star: false, test: () => true });
    else if (c === '\\' && i + 1 < segment.length) {
      const literal = segment[++i]!;
      items.push({ star: false, test: (x) => x === literal });
    } else if (c === '[' && bracketEnd(segment, i) >= 0) {
      const close = bracketEnd(segment, i);
      let body = segment.slice(i + 1, close);
      const negated = body.startsWith('!') || body.startsWith('^');
      if (negated) body = body.slice(1);
      const ranges: [string, string][] = [];
      for (let k = 0; k < body.length; k++) {
        if (body[k + 1] === '-' && k + 2 < body.length) {
          if (body[k]! > body[k + 2]!) throw new Error(`the range ${body[k]}-${body[k + 2]} in '${segment}' runs backwards`);
          ranges.push([body[k]!, body[k + 2]!]);
          k += 2;
        } else ranges.push([body[k]!, body[k]!]);
      }
      items.push({ star: false, test: (x) => ranges.some(([lo, hi]) => x >= lo && x <= hi) !== negated });
      i = close;
    } else items.push({ star: false, test: (x) => x === c });
  }
  const dotOk = segment.startsWith('.');
  // As glob(7): a leading dot is matched only by a pattern that starts with one.
  return (name) => (dotOk || !name.startsWith('.')) && matchItems(items, name);
}

/** Greedy matching that backs up only to the last `*` seen: linear in practice, never exponential. */
function matchItems(items: GlobItem[], name: string): boolean {
  let p = 0;
  let n = 0;
  let starAt = -1;
  let starName = 0;
  while (n < name.length) {
    const item = items[p];
    if (item && !item.star && item.test(name[n]!)) {
      p++;
      n++;
    } else if (item?.star) {
      starAt = p++;
      starName = n;
    } else if (starAt >= 0) {
      p = starAt + 1;
      n = ++starName;
    } else return false;
  }
  while (items[p]?.star) p++;
  return p === items.length;
}

/** Index of the `]` closing the bracket expression at `open`, or -1. A `]` first is literal. */
function bracketEnd(s: string, open: number): number {
  let j = open + 1;
  if (s[j] === '!' || s[j] === '^') j++;
  if (s[j] === ']') j++;
  for (; j < s.length; j++) if (s[j] === ']') return j;
  return -1;
}
