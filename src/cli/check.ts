/**
 * `vipshift check`: validates a configuration without running anything, like `keepalived -t`
 * or `haproxy -c`. Exit 0 and one summary line, or every problem as file:line: field: message
 * and exit 1 (2: wrong usage).
 *
 *   vipshift check --config FILE [--kind appliance|keeper|controller]   (kind: from the file)
 *   vipshift check --keepalived FILE [--config VIPSHIFT_FILE]           (the appliance it would run)
 */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { parse as parseYaml } from 'yaml';
import { parseApplianceConfig } from '../config/appliance.js';
import { parseControllerConfig } from '../config/controller.js';
import { parseKeeperConfig } from '../config/keeper.js';
import { ConfigError, formatIssue } from '../config/load.js';
import { formatWarning } from '../keepalived/diagnostics.js';
import { loadKeepalivedAppliance } from '../keepalived/appliance-config.js';

const USAGE = `usage: vipshift check --config FILE [--kind appliance|keeper|controller]
       vipshift check --keepalived FILE [--config VIPSHIFT_FILE]
`;

const KINDS = ['appliance', 'keeper', 'controller'] as const;
type Kind = (typeof KINDS)[number];

/** The kind of a file is its identity field: `appliance: lb1`, `keeper: srv1`, `controller: ctl`. */
function detectKind(text: string): Kind | undefined {
  let root: unknown;
  try {
    root = parseYaml(text);
  } catch {
    return undefined; // the parser of the kind reports the syntax error with its line
  }
  if (typeof root !== 'object' || root === null) return undefined;
  const found = KINDS.filter((k) => k in root);
  return found.length === 1 ? found[0] : undefined;
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** A configuration of `kind` from `text`: its one-line summary. Throws ConfigError. */
function checkText(kind: Kind, text: string, file: string): string {
  switch (kind) {
    case 'appliance': {
      const c = parseApplianceConfig(text, file);
      return applianceSummary(c);
    }
    case 'keeper': {
      const c = parseKeeperConfig(text, file);
      return `keeper ${c.keeper}, ${plural(c.vips.length, 'VIP')}, API ${c.api.listen}`;
    }
    case 'controller': {
      const c = parseControllerConfig(text, file);
      return `controller ${c.controller}, ${plural(c.appliances.length, 'appliance')}, ${plural(c.vips.length, 'VIP')}`;
    }
  }
}

function applianceSummary(c: ReturnType<typeof parseApplianceConfig>): string {
  const vrrp = c.vrrp ? `, ${plural(c.vrrp.instances.length, 'VRRP instance')}${c.vrrp.syncGroups.length ? ` in ${plural(c.vrrp.syncGroups.length, 'sync group')}` : ''}` : '';
  const backends = c.vips.reduce((n, v) => n + v.backends.length, 0);
  return `appliance ${c.appliance}, ${plural(c.vips.length, 'VIP')} with ${plural(backends, 'backend')}${vrrp}, API ${c.api.listen}`;
}

function report(err: unknown): number {
  if (!(err instanceof ConfigError)) throw err;
  for (const issue of err.issues) process.stderr.write(`${formatIssue(issue)}\n`);
  process.stderr.write(`${plural(err.issues.length, 'problem')}\n`);
  return 1;
}

export async function check(args: string[]): Promise<number> {
  let values: { config?: string; keepalived?: string; kind?: string; help?: boolean };
  try {
    ({ values } = parseArgs({ args, options: { config: { type: 'string' }, keepalived: { type: 'string' }, kind: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (err) {
    process.stderr.write(`vipshift check: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (values.kind !== undefined && !KINDS.includes(values.kind as Kind)) {
    process.stderr.write(`vipshift check: --kind must be ${KINDS.join(', ')}\n${USAGE}`);
    return 2;
  }
  if (values.keepalived) {
    if (values.kind !== undefined && values.kind !== 'appliance') {
      process.stderr.write(`vipshift check: keepalived.conf makes an appliance configuration\n${USAGE}`);
      return 2;
    }
    try {
      const { config, warnings } = await loadKeepalivedAppliance(values.keepalived, values.config);
      for (const w of warnings) process.stderr.write(`${formatWarning(w)}\n`);
      process.stdout.write(`${values.keepalived}: OK: ${applianceSummary(config)}${warnings.length ? ` (${plural(warnings.length, 'warning')})` : ''}\n`);
      return 0;
    } catch (err) {
      return report(err);
    }
  }
  if (!values.config) {
    process.stderr.write(`vipshift check: --config or --keepalived is required\n${USAGE}`);
    return 2;
  }
  const file = values.config;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    return report(new ConfigError([{ file, path: '', message: `cannot read: ${(e as Error).message}` }]));
  }
  const kind = (values.kind as Kind | undefined) ?? detectKind(text);
  if (!kind) {
    const keepalived = /^\s*(global_defs|vrrp_instance|vrrp_sync_group|virtual_server)\b/m.test(text);
    const message = keepalived
      ? 'this is keepalived.conf: check it with --keepalived FILE'
      : `cannot tell the kind of configuration (one of the fields ${KINDS.join(', ')} names it): give --kind`;
    return report(new ConfigError([{ file, line: 1, path: '', message }]));
  }
  try {
    process.stdout.write(`${file}: OK: ${checkText(kind, text, file)}\n`);
    return 0;
  } catch (err) {
    return report(err);
  }
}
