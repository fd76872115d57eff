/**
 * A check's configuration from random keys and values: whatever comes in, it is either a
 * check that resolves and runs within its bounds, or a ConfigError naming a line of the text.
 * Then whole appliance and keeper files with random backends' fields (address, port, weight,
 * a `state` that is no field, per-backend checks) and VIP fields (scheduler, sorryServer,
 * onDown, check, mode, snatPorts), random and damaged, through the one loader; and backend
 * changes made to them. Seeded, so a failure prints the seed and the input and reproduces.
 */
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfigText } from '../../src/config/load.js';
import { checkOverrideSchema, checkProblem, checkSchema, resolveCheck, statusExpected } from '../../src/config/check.js';
import { prng } from '../support/prng.js';
import { backendKey, parseApplianceConfig, type VipConfig } from '../../src/config/appliance.js';
import { parseKeeperConfig } from '../../src/config/keeper.js';
import { editVipBackends } from '../../src/config/edit.js';
import { checkRecords } from '../../src/config/vip-records.js';
import { healthTargets } from '../../src/health/targets.js';
import { poolTable } from '../../src/nat/pool.js';
import { buildRuleset } from '../../src/nat/ruleset.js';
import { floodCommands } from '../../src/nat/flood.js';

const KEYS = ['enabled', 'type', 'port', 'inter', 'timeout', 'rise', 'fall', 'source', 'path', 'expect', 'bodyRegex', 'host', 'ca', 'command', 'args', 'intervall', '__proto__', 'constructor'];
const VALUES = [
  'tcp', 'http', 'https', 'script', 'icmp', 'true', 'false', '0', '1', '2', '3', '100', '-1', '1e3', '0.5', '65535', '65536', '"2s"', '"500ms"', '"1.5s"', '"1m"',
  '"2 hours"', '"0s"', '"-1s"', '""', '/health', '"/a b"', '198.18.0.2', '198.18.0.256', '[200, "2xx", "300-399"]', '["599-100"]', '[999]', '[]', '"a("',
  '"^ok$"', 'www.example', '/etc/ssl/ca.pem', '/bin/true', '["{address}", "{port}"]', '[1, 2]', 'null', '~', '{}', '{ a: 1 }', '[[]]',
];

function randomCheck(random: () => number): string {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(random() * xs.length)]!;
  const lines: string[] = [];
  const n = Math.floor(random() * 7);
  for (let i = 0; i < n; i++) lines.push(`${pick(KEYS)}: ${pick(VALUES)}`);
  if (random() < 0.1) lines.push(pick(['- x', ': :', '{', 'a: [', '\t', '"']));
  return `${lines.join('\n')}\n`;
}

describe('check configuration fuzz', () => {
  it('yields a sound check or a ConfigError with a line, for 3,000 random inputs', () => {
    const seed = 20261203;
    const random = prng(seed);
    let accepted = 0;
    for (let i = 0; i < 3000; i++) {
      const text = randomCheck(random);
      for (const schema of [checkSchema, checkOverrideSchema] as const) {
        try {
          const parsed = parseConfigText(text, 'c.yaml', schema as typeof checkSchema);
          accepted++;
          const check = resolveCheck(schema === checkSchema ? parsed : undefined, schema === checkSchema ? undefined : parsed);
          expect(check.inter).toBeGreaterThanOrEqual(100);
          expect(check.timeout).toBeGreaterThanOrEqual(10);
          expect(check.rise).toBeGreaterThanOrEqual(1);
          expect(check.fall).toBeGreaterThanOrEqual(1);
          if (schema === checkSchema) expect(checkProblem(check)).toBeUndefined();
          else checkProblem(check);
          statusExpected(check.expect, 200);
          if (check.bodyRegex !== undefined) new RegExp(check.bodyRegex);
        } catch (err) {
          if (!(err instanceof ConfigError)) throw new Error(`seed ${seed}, input ${i}: ${JSON.stringify(text)}: ${(err as Error).stack}`);
          for (const issue of err.issues) {
            expect(issue.file).toBe('c.yaml');
            if (issue.line !== undefined) expect(issue.line).toBeGreaterThanOrEqual(1);
            expect(issue.message.length).toBeGreaterThan(0);
          }
        }
      }
    }
    // The vocabulary makes valid checks too, not only errors.
    expect(accepted).toBeGreaterThan(50);
  });
});

// ---- whole files: the backends' fields, through the one loader ----

const BACKEND_KEYS = ['port', 'weight', 'check', 'state', 'weigth'];
/** Per field: values that are right, then values that are wrong (picked one time in five). */
const BACKEND_VALUES: Record<string, [readonly string[], readonly string[]]> = {
  address: [['198.18.0.101'], ['198.18.0.300', '"x"', '1', 'null']],
  port: [['80', '8443', '65535'], ['0', '65536', '-1', '1.5', '"80"', '[80]']],
  weight: [['0', '1', '2', '256'], ['257', '-1', '0.5', '"1"', 'true', 'null']],
  check: [['{}', '{ type: http, path: /health }', '{ type: script, command: /bin/true, timeout: 500ms }'], ['{ fall: 0 }', '{ inter: 50 }', '{ expect: [999] }', '{ host: 1 }', '[]', 'tcp']],
  state: [[], ['up', 'down', 'drained']],
  weigth: [[], ['1']],
};
const VIP_FIELDS: Record<string, [readonly string[], readonly string[]]> = {
  scheduler: [['roundrobin', 'sourcehash', 'maglev'], ['leastconn', '1', '[]']],
  sorryServer: [['{ address: 198.18.0.200 }', '{ address: 198.18.0.200, port: 8080 }'], ['{ address: 198.18.0.200, port: 0 }', '{ port: 80 }', '198.18.0.200', '{ address: 198.18.0.200, weight: 1 }']],
  onDown: [['keep', 'reset'], ['inhibit', 'true', '[]']],
  check: [['{ type: tcp }', '{ type: http, path: /h, expect: ["2xx"], host: www.example, inter: 1s, timeout: 500ms, rise: 2, fall: 3 }', '{ type: script, command: /bin/true, args: ["{address}"] }'], ['{ type: https, bodyRegex: "a(" }', '{ type: script }', '{ rise: 0 }', '{ inter: "2 hours" }', '{ timeout: 5s, inter: 1s }', 'http']],
};

function randomVip(random: () => number, i: number): string {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(random() * xs.length)]!;
  const value = ([good, bad]: [readonly string[], readonly string[]]) => (good.length > 0 && (bad.length === 0 || random() < 0.8) ? pick(good) : pick(bad));
  const mode = random() < 0.95 ? pick(['fullnat', 'dnat']) : pick(['nat', '1']);
  const lines = [`  - name: v${i}`, `    id: ${i + 1}`, `    address: 203.0.113.${10 + i}`, `    insideAddress: 198.18.0.${10 + i}`, `    ports: [${random() < 0.9 ? pick(['80', '80, 443']) : pick(['0', '', '80, 80'])}]`, '    owner: lb1', `    mode: ${mode}`];
  for (const [key, values] of Object.entries(VIP_FIELDS)) if (random() < 0.3) lines.push(`    ${key}: ${value(values)}`);
  if (mode === 'fullnat' && random() < 0.95) lines.push(`    snatPorts: ${random() < 0.9 ? `"${20000 + i * 1000}-${20999 + i * 1000}"` : pick(['"30000-20000"', '"0-10"', '"20000"', '1'])}`);
  if (mode === 'dnat' && random() < 0.05) lines.push('    snatPorts: "20000-29999"');
  const n = random() < 0.1 ? 0 : 1 + Math.floor(random() * 4);
  lines.push(n > 0 ? '    backends:' : '    backends: []');
  for (let b = 0; b < n; b++) {
    const fields = [`address: ${random() < 0.95 ? `198.18.0.${101 + b + i * 10}` : value(BACKEND_VALUES.address!)}`];
    for (const key of BACKEND_KEYS) if (random() < (BACKEND_VALUES[key]![0].length > 0 ? 0.3 : 0.03)) fields.push(`${key}: ${value(BACKEND_VALUES[key]!)}`);
    lines.push(`      - { ${fields.join(', ')} }`);
  }
  return lines.join('\n');
}

function randomFile(random: () => number, kind: 'appliance' | 'keeper'): string {
  const head = kind === 'appliance' ? 'appliance: lb1\napi: { listen: "192.0.2.11:8441" }\ninterfaces: { external: e0, internal: i0 }\nfailover: { standby: false }\n' : 'keeper: srv1\napi: { listen: "192.0.2.21:8442" }\ndatabase: /var/lib/vipshift/keeper.sqlite\n';
  const vips = Array.from({ length: 1 + Math.floor(random() * 2) }, (_, i) => randomVip(random, i));
  return `${head}vips:\n${vips.join('\n')}\n`;
}

/** A valid file's text damaged: a line dropped, doubled or cut, a character changed, the end gone. */
function mutate(random: () => number, text: string): string {
  const lines = text.split('\n');
  const at = Math.floor(random() * lines.length);
  switch (Math.floor(random() * 5)) {
    case 0:
      lines.splice(at, 1);
      return lines.join('\n');
    case 1:
      lines.splice(at, 0, lines[at] ?? '');
      return lines.join('\n');
    case 2:
      lines[at] = (lines[at] ?? '').slice(0, Math.floor(random() * (lines[at] ?? '').length));
      return lines.join('\n');
    case 3: {
      const i = Math.floor(random() * text.length);
      return text.slice(0, i) + '{}[]:,-"\'#&*!|>%@`0 \t\n'[Math.floor(random() * 24)] + text.slice(i + 1);
    }
    default:
      return text.slice(0, Math.floor(random() * text.length));
  }
}

/** What a valid file's VIPs feed at once: pools (any health), the ruleset, the checks, the record rules. */
function useVips(vips: readonly VipConfig[], random: () => number): void {
  for (const vip of vips) {
    const healths = new Map(vip.backends.map((b) => [backendKey(b), { up: random() < 0.6, reason: 'fuzz' }]));
    const pool = poolTable(vip, healths);
    expect(pool.slots.every((t) => t >= 0 && t < pool.targets.length)).toBe(true);
  }
  for (const t of healthTargets(vips)) {
    expect(t.check.inter).toBeGreaterThanOrEqual(100);
    expect(t.check.timeout).toBeLessThanOrEqual(t.check.inter);
  }
  checkRecords(Buffer.alloc(0), vips);
}

describe('configuration files fuzz: the backends\' fields', () => {
  it('random appliance and keeper files, and damaged valid ones, give a valid configuration or a ConfigError naming file, line or field', () => {
    const seed = 20261204;
    const random = prng(seed);
    const valid: string[] = [];
    let accepted = 0;
    let refused = 0;
    const one = (text: string, kind: 'appliance' | 'keeper', label: string): void => {
      const file = `${kind}.yaml`;
      try {
        if (kind === 'appliance') {
          const config = parseApplianceConfig(text, file, { warn: () => undefined });
          useVips(config.vips, random);
          buildRuleset(config, new Map(config.vips.map((v) => [v.name, 'normal' as const])), { hold: 'drop', queueNumber: 0 });
          floodCommands(config, 'vipshift');
        } else useVips(parseKeeperConfig(text, file).vips, random);
        accepted++;
        if (valid.length < 200) valid.push(text);
      } catch (err) {
        if (!(err instanceof ConfigError)) throw new Error(`seed ${seed}, ${label}: ${JSON.stringify(text)}: ${(err as Error).stack}`);
        refused++;
        for (const issue of err.issues) {
          expect(issue.file).toBe(file);
          expect(issue.message.length).toBeGreaterThan(0);
          // Where: the field, or at least the line of a file that is not YAML.
          expect(issue.path !== '' || (issue.line ?? 0) >= 1, `${label}: ${err.message}`).toBe(true);
          if (issue.line !== undefined) expect(issue.line).toBeGreaterThanOrEqual(1);
        }
      }
    };
    for (let i = 0; i < 1500; i++) {
      const kind = i % 2 === 0 ? 'appliance' : 'keeper';
      one(randomFile(random, kind), kind, `random ${i}`);
    }
    expect(accepted).toBeGreaterThan(100);
    for (let i = 0; i < 1500; i++) {
      const base = valid[i % valid.length]!;
      one(mutate(random, base), base.startsWith('keeper') ? 'keeper' : 'appliance', `mutation ${i}`);
    }
    expect(refused).toBeGreaterThan(500);
  });

  it('backend changes on random valid files give the edited configuration or a ConfigError, never anything else', () => {
    const seed = 20261205;
    const random = prng(seed);
    const actions = ['add', 'remove', 'weight', 'drain'] as const;
    let edited = 0;
    for (let i = 0; i < 600; i++) {
      const kind = i % 2 === 0 ? 'appliance' : 'keeper';
      const text = randomFile(random, kind);
      const parse: (t: string, f: string) => { vips: VipConfig[] } = kind === 'appliance' ? (t, f) => parseApplianceConfig(t, f, { warn: () => undefined }) : parseKeeperConfig;
      try {
        parse(text, 'f.yaml');
      } catch {
        continue;
      }
      const change = {
        action: actions[Math.floor(random() * 4)]!,
        address: `198.18.0.${101 + Math.floor(random() * 14)}`,
        ...(random() < 0.5 ? { port: [80, 8443, 0, 70000][Math.floor(random() * 4)]! } : {}),
        ...(random() < 0.6 ? { weight: [0, 1, 5, 256, 257, -1][Math.floor(random() * 6)]! } : {}),
      };
      try {
        const r = editVipBackends(parse, text, 'f.yaml', `v${Math.floor(random() * 2)}`, change);
        expect(parse(r.text, 'f.yaml')).toEqual(r.config);
        edited++;
      } catch (err) {
        if (!(err instanceof ConfigError)) throw new Error(`seed ${seed}, edit ${i} ${JSON.stringify(change)} of ${JSON.stringify(text)}: ${(err as Error).stack}`);
      }
    }
    expect(edited).toBeGreaterThan(10);
  });
});
