/**
 * A check's configuration from random keys and values: whatever comes in, it is either a
 * check that resolves and runs within its bounds, or a ConfigError naming a line of the text.
 * Seeded, so a failure prints the seed and the input and reproduces.
 */
import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfigText } from '../../src/config/load.js';
import { checkOverrideSchema, checkProblem, checkSchema, resolveCheck, statusExpected } from '../../src/config/check.js';
import { prng } from '../support/prng.js';

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
