/**
 * The one loader of every vipshift configuration file: YAML or JSON (JSON is YAML 1.2, so
 * both keep their line numbers), validated with a zod schema. Every error names the file, the
 * line and the field, e.g. `lb1.yaml:14: vips[0].mode: expected 'dnat' or 'fullnat'`.
 */
import { readFile } from 'node:fs/promises';
import { LineCounter, isMap, isSeq, parseDocument, type Document } from 'yaml';
import type { ZodType } from 'zod';

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
 * Parses YAML (or JSON, a subset) and validates it with `schema`; throws ConfigError
 * listing every issue with its file, line and field. Every configuration file of
 * vipshift is read through here.
 */
export function parseConfigText<T>(text: string, fileName: string, schema: ZodType<T>): T {
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      doc.errors.map((e) => ({ file: fileName, line: counter.linePos(e.pos[0]).line, path: '', message: e.message.split('\n')[0] ?? e.message })),
    );
  }
  const result = schema.safeParse(doc.toJS());
  if (result.success) return result.data;
  const issues = result.error.issues.map((issue): ConfigIssue => {
    // An unknown key is reported on its parent; point at the key itself.
    const keys = issue.code === 'unrecognized_keys' ? (issue as { keys: string[] }).keys : [];
    const path = keys.length === 1 ? [...issue.path, keys[0] as string] : issue.path;
    const message = issue.code === 'unrecognized_keys' ? (keys.length === 1 ? 'unknown field' : `unknown fields ${keys.join(', ')}`) : issue.message;
    const line = lineOf(doc, counter, path);
    return { file: fileName, ...(line === undefined ? {} : { line }), path: formatPath(path), message };
  });
  issues.sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
  throw new ConfigError(issues);
}

export async function loadConfigFile<T>(path: string, schema: ZodType<T>): Promise<T> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new ConfigError([{ file: path, path: '', message: `cannot read: ${(e as Error).message}` }]);
  }
  return parseConfigText(text, path, schema);
}
