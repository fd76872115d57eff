/**
 * The one loader of every vipshift configuration file: YAML or JSON (JSON is YAML 1.2, so
 * both keep their line numbers), validated with a zod schema. Every error names the file, the
 * line and the field, e.g. `lb1.yaml:14: vips[0].mode: expected 'dnat' or 'fullnat'`.
 */
import { readFile } from 'node:fs/promises';
import { LineCounter, isMap, isPair, isScalar, isSeq, parseDocument, visit, type Document } from 'yaml';
import type { ZodType } from 'zod';
import { issueAt } from '../api/issue.js';

/** One thing wrong in a configuration file, and where. */
export interface ConfigIssue {
  file: string;
  line?: number;
  path: string;
  message: string;
}

export class ConfigError extends Error {
  constructor(readonly issues: ConfigIssue[]) {
    super(issues.map(formatIssue).join('\n'));
    this.name = 'ConfigError';
  }
}

export function formatIssue(i: ConfigIssue): string {
  const where = i.line === undefined ? i.file : `${i.file}:${i.line}`;
  return i.path ? `${where}: ${i.path}: ${i.message}` : `${where}: ${i.message}`;
}

/** `vips[0].servers[1].address` from ['vips', 0, 'servers', 1, 'address']. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

/** The line of the deepest node of `path` present in the document (a missing field: its parent). */
function lineOf(doc: Document, counter: LineCounter, path: readonly PropertyKey[]): number | undefined {
  let node: unknown = doc.contents;
  let offset = (node as { range?: [number, number, number] } | null)?.range?.[0];
  for (const key of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => (p.key as { value?: unknown } | null)?.value === key);
      if (!pair) break;
      const keyRange = (pair.key as { range?: [number, number, number] }).range;
      node = pair.value;
      offset = (node as { range?: [number, number, number] } | null)?.range?.[0] ?? keyRange?.[0] ?? offset;
    } else if (isSeq(node) && typeof key === 'number' && node.items[key] !== undefined) {
      node = node.items[key];
      offset = (node as { range?: [number, number, number] }).range?.[0] ?? offset;
    } else {
      break;
    }
  }
  return offset === undefined ? undefined : counter.linePos(offset).line;
}

/**
 * A field renamed in a release: still read under its old name `from` for a while, with a
 * warning, wherever `at` matches (`'*'` stands for any list index or key).
 */
export interface RenamedField {
  at: readonly (string | '*')[];
  from: string;
  to: string;
}

export interface ParseOptions {
  renamed?: readonly RenamedField[];
  /** Where warnings go (an old field name...); default: stderr as `file:line: warning: ...`. */
  warn?: (warning: ConfigIssue) => void;
}

const warnOnStderr = (w: ConfigIssue): void => {
  process.stderr.write(`${w.line === undefined ? w.file : `${w.file}:${w.line}`}: warning: ${w.path}: ${w.message}\n`);
};

/** The objects of `value` at `at` with their paths. */
function objectsAt(value: unknown, at: readonly (string | '*')[], path: PropertyKey[] = []): { object: Record<string, unknown>; path: PropertyKey[] }[] {
  if (value === null || typeof value !== 'object') return [];
  if (at.length === 0) return Array.isArray(value) ? [] : [{ object: value as Record<string, unknown>, path }];
  const [head, ...rest] = at;
  const entries: [PropertyKey, unknown][] = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  return entries.filter(([k]) => head === '*' || k === head).flatMap(([k, v]) => objectsAt(v, rest, [...path, k]));
}

/** At most this many aliases are expanded in one file (a "billion laughs" stops here). */
const MAX_ALIASES = 1000;

/**
 * The document as plain values. An alias without an anchor before it (YAML's toJS throws a
 * bare ReferenceError) is a ConfigError at its file, line and field, as is a document that
 * expands too many aliases.
 */
function documentValue(doc: Document, counter: LineCounter, fileName: string): unknown {
  const issues: ConfigIssue[] = [];
  visit(doc, {
    Alias(_key, node, path) {
      if (node.resolve(doc) !== undefined) return;
      const at: PropertyKey[] = [];
      path.forEach((p, i) => {
        if (isPair(p)) at.push(String(isScalar(p.key) ? p.key.value : p.key));
        else if (isSeq(p)) at.push(p.items.indexOf((path[i + 1] ?? node) as never));
      });
      issues.push({ file: fileName, line: counter.linePos(node.range?.[0] ?? 0).line, path: formatPath(at), message: `alias *${node.source} names no anchor (&${node.source}) before it` });
    },
  });
  if (issues.length > 0) throw new ConfigError(issues);
  try {
    return doc.toJS({ maxAliasCount: MAX_ALIASES });
  } catch (e) {
    throw new ConfigError([{ file: fileName, path: '', message: (e as Error).message }]);
  }
}

/**
 * Parses YAML (or JSON, a subset) and validates it with `schema`; throws ConfigError
 * listing every issue with its file, line and field. Every configuration file of
 * vipshift is read through here.
 */
export function parseConfigText<T>(text: string, fileName: string, schema: ZodType<T>, options: ParseOptions = {}): T {
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => ({ file: fileName, line: counter.linePos(e.pos[0]).line, path: '', message: e.message.split('\n')[0] ?? e.message })),
    );
  }
  const input = documentValue(doc, counter, fileName);
  const renameIssues: ConfigIssue[] = [];
  /** Where a field was read under its old name: the document has that name there. */
  const renamedAt: { path: PropertyKey[]; from: string }[] = [];
  for (const r of options.renamed ?? []) {
    for (const { object, path } of objectsAt(input, r.at)) {
      if (!Object.hasOwn(object, r.from)) continue;
      const at = [...path, r.from];
      const line = lineOf(doc, counter, at);
      const where = { file: fileName, ...(line === undefined ? {} : { line }), path: formatPath(at) };
      if (Object.hasOwn(object, r.to)) {
        renameIssues.push({ ...where, message: `'${r.from}' is the old name of '${r.to}': give only '${r.to}'` });
        continue;
      }
      (options.warn ?? warnOnStderr)({ ...where, message: `'${r.from}' is now '${r.to}' (read as '${r.to}' for this release)` });
      object[r.to] = object[r.from];
      delete object[r.from];
      renamedAt.push({ path: [...path, r.to], from: r.from });
    }
  }
  if (renameIssues.length > 0) throw new ConfigError(renameIssues);
  return validateConfig(input, schema, (path) => {
    const renamed = renamedAt.find((r) => r.path.every((k, i) => path[i] === k));
    const inDocument = renamed ? [...path.slice(0, renamed.path.length - 1), renamed.from, ...path.slice(renamed.path.length)] : path;
    const line = lineOf(doc, counter, inDocument);
    return { file: fileName, ...(line === undefined ? {} : { line }) };
  });
}

/** Where a field of a configuration came from: a file, and its line when known. */
export type Locate = (path: readonly PropertyKey[]) => { file: string; line?: number };

/**
 * Validates an already built configuration (one made from another format, such as
 * keepalived.conf) with `schema`; `locate` says where each field came from, so that every
 * issue still names a file and a line.
 */
export function validateConfig<T>(value: unknown, schema: ZodType<T>, locate: Locate): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issues = result.error.issues.map((issue): ConfigIssue => {
    const { path, message } = issueAt(issue);
    return { ...locate(path), path: formatPath(path), message };
  });
  issues.sort((a, b) => (a.file === b.file ? (a.line ?? 0) - (b.line ?? 0) : a.file < b.file ? -1 : 1));
  throw new ConfigError(issues);
}

/** A parsed YAML/JSON file and where each of its fields stands, for configurations built from several sources. */
export interface LocatedDocument {
  value: unknown;
  /** The line of the deepest node of `path` present in the file; undefined when none is. */
  lineOf(path: readonly PropertyKey[]): number | undefined;
}

/** Reads a YAML or JSON file for merging into another configuration; syntax errors name file and line. */
export async function readConfigDocument(path: string): Promise<LocatedDocument> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new ConfigError([{ file: path, path: '', message: `cannot read: ${(e as Error).message}` }]);
  }
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(doc.errors.map((e) => ({ file: path, line: counter.linePos(e.pos[0]).line, path: '', message: e.message.split('\n')[0] ?? e.message })));
  }
  return { value: documentValue(doc, counter, path), lineOf: (p) => lineOf(doc, counter, p) };
}

export async function loadConfigFile<T>(path: string, schema: ZodType<T>, options: ParseOptions = {}): Promise<T> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new ConfigError([{ file: path, path: '', message: `cannot read: ${(e as Error).message}` }]);
  }
  return parseConfigText(text, path, schema, options);
}
