/**
 * An appliance configuration straight from keepalived.conf (`vipshift appliance --keepalived`,
 * `vipshift check --keepalived`): the import, a small vipshift file over it for what keepalived
 * cannot say, and the appliance schema's validation, every problem named by the keepalived
 * line (or the vipshift file's line) it comes from.
 */
import { ConfigError, readConfigDocument, type LocatedDocument } from '../config/load.js';
import { validateApplianceConfig, type ApplianceConfig } from '../config/appliance.js';
import { KeepalivedConfigError, type Warning } from './diagnostics.js';
import { hostFacts, importKeepalivedFile, type HostFacts, type ImportResult } from './import.js';

export interface KeepalivedAppliance {
  config: ApplianceConfig;
  /** The imported configuration with the vipshift file merged over it, before validation. */
  merged: unknown;
  imported: ImportResult;
  warnings: Warning[];
}

/** Lists merged by name: an entry of the vipshift file changes the imported one of its name, or adds one. */
const BY_NAME = new Set(['vips', 'instances', 'syncGroups']);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `over` on top of `base`: objects field by field, lists of named entries by name, anything else replaced. */
export function mergeOver(base: unknown, over: unknown, key = ''): unknown {
  if (isObject(base) && isObject(over)) {
    const out: Record<string, unknown> = { ...base };
    for (const [k, v] of Object.entries(over)) out[k] = k in base ? mergeOver(base[k], v, k) : v;
    return out;
  }
  if (BY_NAME.has(key) && Array.isArray(base) && Array.isArray(over)) {
    const out = [...base];
    for (const entry of over) {
      const at = isObject(entry) ? out.findIndex((b) => isObject(b) && b.name === entry.name) : -1;
      if (at >= 0) out[at] = mergeOver(out[at], entry);
      else out.push(entry);
    }
    return out;
  }
  return over;
}

/** Translate a path of the merged configuration into the vipshift file's own (named lists may sit elsewhere there). */
function overlayPath(merged: unknown, overlay: unknown, path: readonly PropertyKey[]): PropertyKey[] | undefined {
  const out: PropertyKey[] = [];
  let m = merged;
  let o = overlay;
  for (const key of path) {
    if (typeof key === 'number' && Array.isArray(m) && Array.isArray(o)) {
      const name = isObject(m[key]) ? (m[key] as Record<string, unknown>).name : undefined;
      const j = o.findIndex((e) => isObject(e) && e.name === name);
      if (j < 0) return out.length > 0 ? out : undefined;
      out.push(j);
      m = m[key];
      o = o[j];
    } else if (isObject(m) && isObject(o) && typeof key === 'string' && key in o) {
      out.push(key);
      m = m[key];
      o = o[key];
    } else return out.length > 0 ? out : undefined;
  }
  return out;
}

/**
 * keepalived.conf (and an optional vipshift YAML/JSON file over it) → a validated appliance
 * configuration. Throws ConfigError listing every problem with file:line (and the field).
 */
export async function loadKeepalivedAppliance(file: string, overlayFile?: string, host: HostFacts = hostFacts): Promise<KeepalivedAppliance> {
  let imported: ImportResult;
  try {
    imported = importKeepalivedFile(file, host);
  } catch (e) {
    if (!(e instanceof KeepalivedConfigError)) throw e;
    throw new ConfigError(e.problems.map((p) => ({ file: p.file, line: p.line, path: '', message: p.reason })));
  }
  const overlay: LocatedDocument | undefined = overlayFile ? await readConfigDocument(overlayFile) : undefined;
  if (overlay && overlay.value !== null && !isObject(overlay.value)) {
    throw new ConfigError([{ file: overlayFile!, line: 1, path: '', message: 'expected a mapping of appliance configuration fields' }]);
  }
  const merged = overlay?.value ? mergeOver(imported.config, overlay.value) : imported.config;
  const config = validateApplianceConfig(merged, (path) => {
    const inOverlay = overlay ? overlayPath(merged, overlay.value, path) : undefined;
    if (inOverlay && overlayFile) {
      const line = overlay!.lineOf(inOverlay);
      return { file: overlayFile, ...(line === undefined ? {} : { line }) };
    }
    // The keepalived statement that made the deepest part of the path.
    const origin = imported.origins
      .filter((o) => o.path.length <= path.length && o.path.every((k, i) => k === path[i]))
      .sort((a, b) => b.path.length - a.path.length)[0];
    return origin ? { file: origin.at.file, line: origin.at.line } : { file };
  });
  return { config, merged, imported, warnings: imported.warnings };
}
