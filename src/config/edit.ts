/**
 * Changes to a VIP's backends written into a box's own configuration file (an appliance's, a
 * keeper's: both list the VIPs), so the file stays the one truth: a restart or a reload
 * reads what the operator changed at run time, also while the controller is away. The YAML
 * document is edited in place (comments, order and layout of everything else are kept), the
 * result is validated as a whole before anything is written, and the file is replaced
 * atomically (write aside, fsync, rename).
 */
import { open, readFile, rename } from 'node:fs/promises';
import { isMap, isSeq, parseDocument, type YAMLMap } from 'yaml';
import { z } from 'zod';
import { ConfigError } from './load.js';
import { MAX_WEIGHT, findBackend, parseApplianceConfig, type ApplianceConfig, type VipConfig } from './appliance.js';

export type BackendAction = 'add' | 'remove' | 'weight' | 'drain';

export interface BackendChange {
  action: BackendAction;
  address: string;
  /** Absent: the backend configured without a port (it serves every port of the VIP). */
  port?: number;
  /** For add (default 1) and weight. */
  weight?: number;
}

/** A backend change as the APIs take it (the controller's, an appliance's, a keeper's). */
export const backendChangeSchema = z
  .object({
    action: z.enum(['add', 'remove', 'weight', 'drain']),
    address: z.ipv4(),
    /** Absent: the backend configured without a port. */
    port: z.number().int().min(1).max(65535).optional(),
    weight: z.number().int().min(0).max(MAX_WEIGHT).optional(),
  })
  .strict()
  .refine((b) => b.action !== 'weight' || b.weight !== undefined, { message: 'is required to set a weight', path: ['weight'] });

/** A configuration that lists VIPs, parsed from a file's text (ConfigError with file:line:field). */
export type VipsConfigParser<T extends { vips: VipConfig[] }> = (text: string, fileName: string) => T;

const parseAppliance: VipsConfigParser<ApplianceConfig> = (text, fileName) => parseApplianceConfig(text, fileName, { warn: () => undefined });

/** `ADDRESS` or `ADDRESS:PORT` (the CLI's form) as an address and a port. */
export function parseBackendName(text: string): { address: string; port?: number } {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})(?::(\d{1,5}))?$/.exec(text);
  if (!m) throw new Error(`expected ADDRESS or ADDRESS:PORT, got '${text}'`);
  return m[2] === undefined ? { address: m[1]! } : { address: m[1]!, port: Number(m[2]) };
}

const refuse = (file: string, path: string, message: string): never => {
  throw new ConfigError([{ file, path, message }]);
};

/**
 * The appliance configuration text with `change` made to VIP `vip`'s backends, and the
 * configuration it parses to. Throws ConfigError (file, field) when the VIP or the backend is
 * not there, or when the result would not be a valid configuration; `text` is then unchanged.
 */
export function editBackends(text: string, fileName: string, vip: string, change: BackendChange): { text: string; config: ApplianceConfig } {
  return editVipBackends(parseAppliance, text, fileName, vip, change);
}

/** editBackends for any configuration that lists VIPs (`parse` reads and validates it). */
export function editVipBackends<T extends { vips: VipConfig[] }>(parse: VipsConfigParser<T>, text: string, fileName: string, vip: string, change: BackendChange): { text: string; config: T } {
  const before = parse(text, fileName);
  const vipIndex = before.vips.findIndex((v) => v.name === vip);
  if (vipIndex < 0) return refuse(fileName, 'vips', `no VIP named '${vip}'`);
  const vipConfig = before.vips[vipIndex]!;
  const doc = parseDocument(text);
  const vips = doc.get('vips');
  const node = isSeq(vips) ? vips.items[vipIndex] : undefined;
  if (!isMap(node)) return refuse(fileName, `vips[${vipIndex}]`, 'is not a map');
  // The backends' list, under its old name if the file still uses it.
  const field = node.has('backends') ? 'backends' : node.has('servers') ? 'servers' : 'backends';
  const list = node.get(field);
  if (!isSeq(list)) return refuse(fileName, `vips[${vipIndex}].${field}`, 'is not a list');
  const name = change.port === undefined ? change.address : `${change.address}:${change.port}`;
  const existing = change.action === 'add' ? undefined : findBackend(vipConfig, change.address, change.port);
  const at = existing ? vipConfig.backends.indexOf(existing) : -1;
  if (change.action !== 'add' && at < 0) return refuse(fileName, `vips[${vipIndex}].${field}`, `VIP ${vip} has no backend ${name}`);
  if (change.weight !== undefined && !(Number.isInteger(change.weight) && change.weight >= 0 && change.weight <= MAX_WEIGHT)) {
    return refuse(fileName, 'weight', `expected a weight in 0..${MAX_WEIGHT} (0 drains)`);
  }
  switch (change.action) {
    case 'add': {
      const entry: Record<string, unknown> = { address: change.address };
      if (change.port !== undefined) entry.port = change.port;
      if (change.weight !== undefined) entry.weight = change.weight;
      list.add(doc.createNode(entry));
      break;
    }
    case 'remove':
      list.delete(at);
      break;
    case 'weight':
    case 'drain': {
      const weight = change.action === 'drain' ? 0 : change.weight;
      if (weight === undefined) return refuse(fileName, 'weight', 'is required');
      (list.items[at] as YAMLMap).set('weight', weight);
      break;
    }
  }
  const edited = doc.toString();
  return { text: edited, config: parse(edited, fileName) };
}

/** A box's configuration file: read it, and replace it atomically. */
export class ConfigFile<T extends { vips: VipConfig[] }> {
  constructor(
    readonly path: string,
    readonly parse: VipsConfigParser<T>,
  ) {}

  async read(): Promise<{ text: string; config: T }> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (e) {
      throw new ConfigError([{ file: this.path, path: '', message: `cannot read: ${(e as Error).message}` }]);
    }
    return { text, config: this.parse(text, this.path) };
  }

  async write(text: string): Promise<void> {
    const aside = `${this.path}.new`;
    const file = await open(aside, 'w', 0o600);
    try {
      await file.writeFile(text);
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(aside, this.path);
  }
}

/** The appliance's configuration file (warnings are the appliance's to log at start). */
export class ApplianceConfigFile extends ConfigFile<ApplianceConfig> {
  constructor(path: string) {
    super(path, (text, fileName) => parseApplianceConfig(text, fileName));
  }
}
