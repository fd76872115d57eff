/**
 * A backend's health check (src/health runs it), in HAProxy's words: `inter` between two
 * checks, `timeout` for one, `rise` successes in a row bring a backend up, `fall` failures in
 * a row take it down. Written per VIP (`check:`), optionally overridden per backend with any
 * subset of the same fields (`checkOverrideSchema`, merged by `resolveCheck`).
 *
 * Defaults (what a VIP gets with no `check:` at all): a TCP connect to the backend's port
 * every 2 s, 1 s to answer, down after 3 failures, up again after 2 successes. So a dead
 * server leaves the pool within fall × inter = 6 s, and one missed answer under load does
 * not take it out. Durations are milliseconds, or a string with a unit: "500ms", "2s", "1m".
 */
import { z } from 'zod';
import { ipv4, port, says } from './fields.js';

export const CHECK_TYPES = ['tcp', 'http', 'https', 'script'] as const;
export type CheckType = (typeof CHECK_TYPES)[number];

const UNIT_MS = { ms: 1, s: 1000, m: 60_000 } as const;

/** Milliseconds in [min, max] from a number (ms) or "250ms" / "2s" / "1.5s" / "1m". */
const duration = (what: string, min: number, max: number) =>
  z
    .union([z.number(), z.string()], { error: says(`expected ${what}: milliseconds, or a string like "2s" or "500ms"`) })
    .transform((v, ctx) => {
      let ms: number;
      if (typeof v === 'number') {
        ms = v;
      } else {
        const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$/.exec(v);
        if (!m) {
          ctx.addIssue({ code: 'custom', message: `expected ${what} like "2s", "500ms" or a number of milliseconds, got "${v}"` });
          return z.NEVER;
        }
        ms = Number(m[1]) * UNIT_MS[(m[2] ?? 'ms') as keyof typeof UNIT_MS];
      }
      if (!Number.isFinite(ms) || ms < min || ms > max || Math.round(ms) !== ms) {
        ctx.addIssue({ code: 'custom', message: `expected ${what} of ${min}..${max} whole milliseconds, got ${typeof v === 'number' ? v : `"${v}"`}` });
        return z.NEVER;
      }
      return ms;
    });

const count = (what: string) =>
  z
    .number({ error: says(`expected ${what}`) })
    .int({ error: `expected a whole ${what}` })
    .min(1, { error: `expected ${what} in 1..100` })
    .max(100, { error: `expected ${what} in 1..100` });

/**
 * Expected HTTP status: a code (200), a class ("2xx") or a range ("200-399").
 * Kept as written; `statusExpected` tests a code against the list.
 */
const STATUS_SPEC = 'expected a status code (200), a class ("2xx") or a range ("200-399")';
const statusSpec = z.union([z.number({ error: STATUS_SPEC }), z.string({ error: STATUS_SPEC })], { error: STATUS_SPEC }).refine(
  (s) => {
    if (typeof s === 'number') return Number.isInteger(s) && s >= 100 && s <= 599;
    if (/^[1-5]xx$/.test(s)) return true;
    const m = /^([1-5]\d\d)-([1-5]\d\d)$/.exec(s);
    return m !== null && Number(m[1]) <= Number(m[2]);
  },
  { error: STATUS_SPEC },
);
export type StatusSpec = z.infer<typeof statusSpec>;

/** The check's fields without defaults: the shape of a per-backend override. */
const fields = {
  /** false: the backend is never checked and counts as up (keepalived's real_server without a checker). */
  enabled: z.boolean({ error: 'expected true or false' }),
  type: z.enum(CHECK_TYPES, { error: says("expected 'tcp', 'http', 'https' or 'script'") }),
  /** The port checked; default the backend's port (its service), e.g. a separate health port. */
  port,
  inter: duration('an interval', 100, 3_600_000),
  timeout: duration('a timeout', 10, 600_000),
  rise: count('rise count'),
  fall: count('fall count'),
  /** The appliance's address on the internal side the checks leave from (bind before connect). */
  source: ipv4,
  /** http/https: the path of the GET. */
  path: z.string({ error: says('expected a path') }).regex(/^\/[^\s]*$/, { error: 'expected an absolute path without spaces, e.g. /health' }),
  /** http/https: the statuses that pass; default 2xx and 3xx (HAProxy's httpchk). */
  expect: z.array(statusSpec, { error: says('expected a list of status codes') }).min(1, { error: 'expected at least one status' }),
  /** http/https: the body must match this regular expression (JavaScript syntax). */
  bodyRegex: z.string({ error: says('expected a regular expression') }).refine(
    (s) => {
      try {
        new RegExp(s);
        return true;
      } catch {
        return false;
      }
    },
    { error: 'expected a valid regular expression' },
  ),
  /** http/https: the Host header; default the backend's address. */
  host: z.string({ error: says('expected a host name') }).regex(/^[A-Za-z0-9.:[\]-]{1,255}$/, { error: 'expected a host name (letters, digits, . - :)' }),
  /** https: a PEM file of the CA(s) the backend's certificate must chain to; absent: no verification. */
  ca: z.string({ error: says('expected a file path') }).min(1, { error: 'expected a file path' }),
  /** script: the program, run without a shell; exit status 0 is a pass. */
  command: z.string({ error: says('expected a program path') }).min(1, { error: 'expected a program path' }),
  /** script: its arguments; `{address}` and `{port}` are replaced by the backend's. */
  args: z.array(z.string({ error: 'expected a string' }), { error: says('expected a list of arguments') }),
};

type CheckFields = { [K in keyof typeof fields]?: z.output<(typeof fields)[K]> };

export const CHECK_DEFAULTS = {
  enabled: true,
  type: 'tcp',
  inter: 2000,
  timeout: 1000,
  rise: 2,
  fall: 3,
  path: '/',
  expect: ['2xx', '3xx'] as StatusSpec[],
  args: [] as string[],
} as const satisfies CheckFields;

/** Fields that only some types take, and what a check of the type must have. */
function refineCheck(check: CheckFields, ctx: z.RefinementCtx, resolved: boolean): void {
  const type = check.type;
  if (type === undefined) return;
  const only = (field: keyof CheckFields, types: readonly CheckType[]) => {
    if (check[field] !== undefined && !types.includes(type)) {
      ctx.addIssue({ code: 'custom', path: [field], message: `only ${types.join('/')} checks take ${field} (this check is ${type})` });
    }
  };
  for (const f of ['path', 'expect', 'bodyRegex', 'host'] as const) only(f, ['http', 'https']);
  only('ca', ['https']);
  only('command', ['script']);
  only('args', ['script']);
  only('port', ['tcp', 'http', 'https']);
  only('source', ['tcp', 'http', 'https']);
  if (resolved && type === 'script' && check.command === undefined) ctx.addIssue({ code: 'custom', path: ['command'], message: 'is required for a script check' });
  if (check.timeout !== undefined && check.inter !== undefined && check.timeout > check.inter) {
    // A check still running at the next tick would be skipped; say so instead.
    ctx.addIssue({ code: 'custom', path: ['timeout'], message: `must not exceed inter (${check.timeout} ms > ${check.inter} ms)` });
  }
}

/** A backend's `check:`: any subset of the fields, over its VIP's check. */
const anySubset = z.strictObject(fields).partial();
export const checkOverrideSchema = anySubset.superRefine((c, ctx) => refineCheck(c, ctx, false));

/** A VIP's `check:`. Every field optional; the defaults above fill the rest. */
export const checkSchema = anySubset
  .extend({
    enabled: fields.enabled.default(CHECK_DEFAULTS.enabled),
    type: fields.type.default(CHECK_DEFAULTS.type),
    inter: fields.inter.default(CHECK_DEFAULTS.inter),
    timeout: fields.timeout.default(CHECK_DEFAULTS.timeout),
    rise: fields.rise.default(CHECK_DEFAULTS.rise),
    fall: fields.fall.default(CHECK_DEFAULTS.fall),
  })
  .superRefine((c, ctx) => refineCheck(c, ctx, true));

/** A VIP's check as parsed (defaults applied). */
export type CheckConfig = z.output<typeof checkSchema>;
/** A check as written in a file. */
export type CheckConfigInput = z.input<typeof checkSchema>;
export type CheckOverride = z.output<typeof checkOverrideSchema>;

/**
 * A check with every field settled: the VIP's check (or the defaults) with the backend's
 * override on top, the type-specific defaults filled in.
 */
export interface ResolvedCheck {
  enabled: boolean;
  type: CheckType;
  /** Absent: the backend's port. */
  port?: number;
  inter: number;
  timeout: number;
  rise: number;
  fall: number;
  source?: string;
  path: string;
  expect: StatusSpec[];
  bodyRegex?: string;
  host?: string;
  ca?: string;
  command?: string;
  args: string[];
}

/** The check a backend runs: its VIP's (default when absent) with its own override on top. */
export function resolveCheck(vipCheck: CheckConfig | undefined, override?: CheckOverride): ResolvedCheck {
  const base = vipCheck ?? checkSchema.parse({});
  const merged: Record<string, unknown> = { ...base };
  // A backend switching type drops the VIP's fields of the other type.
  if (override?.type !== undefined && override.type !== base.type) {
    for (const f of ['path', 'expect', 'bodyRegex', 'host', 'ca', 'command', 'args']) delete merged[f];
  }
  for (const [k, v] of Object.entries(override ?? {})) if (v !== undefined) merged[k] = v;
  const out = merged as Partial<ResolvedCheck> & Pick<ResolvedCheck, 'enabled' | 'type' | 'inter' | 'timeout' | 'rise' | 'fall'>;
  return {
    ...out,
    path: out.path ?? CHECK_DEFAULTS.path,
    expect: out.expect ?? CHECK_DEFAULTS.expect,
    args: out.args ?? CHECK_DEFAULTS.args,
  };
}

/** Whether a backend's check after the override is complete: a message naming what is missing, or undefined. */
export function checkProblem(check: ResolvedCheck): string | undefined {
  if (!check.enabled) return undefined;
  if (check.type === 'script' && check.command === undefined) return 'command: is required for a script check';
  if (check.timeout > check.inter) return `timeout: must not exceed inter (${check.timeout} ms > ${check.inter} ms)`;
  return undefined;
}

/** Whether an HTTP status passes a check's `expect` list. */
export function statusExpected(expect: readonly StatusSpec[], status: number): boolean {
  return expect.some((s) => {
    if (typeof s === 'number') return s === status;
    if (s.endsWith('xx')) return Math.floor(status / 100) === Number(s[0]);
    const [a, b] = s.split('-').map(Number) as [number, number];
    return status >= a && status <= b;
  });
}
