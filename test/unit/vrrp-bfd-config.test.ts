/** The optional `bfd` block of a VRRP instance: off by default, defaults when present, errors with file and line. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { VrrpConfigError, loadVrrpConfigFile, parseVrrpConfig } from '../../src/vrrp/config.js';

const dir = mkdtempSync(join(tmpdir(), 'vipshift-bfd-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const base = { interface: 'ext0', addresses: ['203.0.113.10/24'] };

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    if (e instanceof VrrpConfigError) return e.problems;
    throw e;
  }
  throw new Error('no error');
}

describe('vrrp bfd configuration', () => {
  it('is off unless asked for; an empty block takes 50 ms × 3', () => {
    const c = parseVrrpConfig({ instances: [{ ...base, name: 'a', vrid: 1 }, { ...base, name: 'b', vrid: 2, bfd: {} }] });
    expect(c.instances[0]?.bfd).toBeUndefined();
    expect(c.instances[1]?.bfd).toEqual({ minTxMs: 50, minRxMs: 50, multiplier: 3 });
  });

  it('refuses bad timers and different timers on one interface, naming the field', () => {
    expect(problems(() => parseVrrpConfig({ instances: [{ ...base, name: 'a', vrid: 1, bfd: { detectMult: 3 } }] }))).toEqual([
      'vrrp.instances[0].bfd: Unrecognized key: "detectMult"',
    ]);
    const p = problems(() => parseVrrpConfig({ instances: [{ ...base, name: 'a', vrid: 1, bfd: { minTxMs: 5, multiplier: 0 } }] }));
    expect(p).toEqual([expect.stringMatching(/^vrrp\.instances\[0\]\.bfd\.minTxMs: .*10/), expect.stringMatching(/^vrrp\.instances\[0\]\.bfd\.multiplier: .*1/)]);
    expect(
      problems(() =>
        parseVrrpConfig({ instances: [{ ...base, name: 'a', vrid: 1, bfd: {} }, { ...base, name: 'b', vrid: 2, bfd: { minTxMs: 100 } }, { ...base, interface: 'int0', name: 'c', vrid: 2, bfd: { minTxMs: 100 } }] }),
      ),
    ).toEqual([expect.stringMatching(/^vrrp\.instances\[1\]\.bfd: BFD timers 100\/50\/3 .* instance #0's 50\/50\/3 on ext0/)]);
  });

  it('reports the file and the line of a bad bfd block', () => {
    const file = join(dir, 'bfd.yaml');
    writeFileSync(file, ['vrrp:', '  instances:', '    - name: a', '      interface: ext0', '      vrid: 1', '      addresses: [203.0.113.10/24]', '      bfd:', '        minRxMs: 0.5', ''].join('\n'));
    expect(problems(() => loadVrrpConfigFile(file))).toEqual([expect.stringMatching(new RegExp(`^${file}:8: vrrp\\.instances\\[0\\]\\.bfd\\.minRxMs: `))]);
  });
});
