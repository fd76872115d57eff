/** `vipshift import-keepalived FILE [--json]`: keepalived.conf → vipshift configuration on stdout. */
import { stringify } from 'yaml';
import { KeepalivedConfigError, formatWarning } from '../keepalived/diagnostics.js';
import { importKeepalivedFile } from '../keepalived/import.js';

const USAGE = 'usage: vipshift import-keepalived FILE [--json]\n';

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
    const { config, warnings } = importKeepalivedFile(file);
    for (const w of warnings) process.stderr.write(`${formatWarning(w)}\n`);
    process.stdout.write(json ? `${JSON.stringify(config, null, 2)}\n` : stringify(config));
    return 0;
  } catch (err) {
    if (err instanceof KeepalivedConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
