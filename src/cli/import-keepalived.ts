/**
 * `vipshift import-keepalived FILE [--json]`: keepalived.conf → a complete appliance
 * configuration on stdout, each field keepalived has no word for under a comment that says
 * where its value comes from; warnings on stderr as `file:line: warning: ...`.
 */
import { Document } from 'yaml';
import { KeepalivedConfigError, formatWarning } from '../keepalived/diagnostics.js';
import { importKeepalivedFile, type ImportResult } from '../keepalived/import.js';

const USAGE = 'usage: vipshift import-keepalived FILE [--json]\n';

/** The configuration as YAML with a comment above each defaulted field. */
export function importedYaml(result: ImportResult): string {
  const doc = new Document(result.config);
  for (const d of result.defaulted) {
    const parent = doc.getIn(d.path.slice(0, -1), true) as { items?: { key: { value?: unknown; commentBefore?: string | null } }[] } | undefined;
    const pair = parent?.items?.find((p) => p.key?.value === d.path.at(-1));
    if (pair) pair.key.commentBefore = ` ${d.comment}`;
  }
  doc.commentBefore = ` vipshift appliance configuration imported from ${result.files[0] ?? 'keepalived.conf'}`;
  return doc.toString({ lineWidth: 0 });
}

export async function importKeepalived(args: string[]): Promise<number> {
  const json = args.includes('--json');
  const rest = args.filter((a) => a !== '--json');
  if (rest.includes('-h') || rest.includes('--help')) {
    process.stdout.write(USAGE);
    return 0;
  }
  const [file, ...extra] = rest;
  if (file === undefined || extra.length > 0 || file.startsWith('-')) {
    process.stderr.write(USAGE);
    return 2;
  }
  try {
    const result = importKeepalivedFile(file);
    for (const w of result.warnings) process.stderr.write(`${formatWarning(w)}\n`);
    process.stdout.write(json ? `${JSON.stringify(result.config, null, 2)}\n` : importedYaml(result));
    return 0;
  } catch (err) {
    if (err instanceof KeepalivedConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
