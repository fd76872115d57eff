/** The optional `bfd` block of a VRRP instance: off by default, defaults when present, errors with file and line. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, formatIssue } from '../../src/config/load.js';
import { parseApplianceConfig } from '../../src/config/appliance.js';
import { loadVrrpConfigFile, parseVrrpConfig } from '../../src/config/vrrp.js';

const dir = mkdtempSync(join(tmpdir(), 'vipshift-bfd-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const base = { interface: 'ext0', addresses: ['203.0.113.10/24'] };

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e.issues.map((i) => (i.file === 'vrrp section' ? `${i.path}: ${i.message}` : formatIssue(i)));
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
      'vrrp.instances[0].bfd.detectMult: unknown field',
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

  it("in an appliance's configuration too: file, line and field", () => {
    const text = [
      'appliance: lb1',
      'api: { listen: "192.0.2.11:8441" }',
      'interfaces: { external: ext0, internal: int0 }',
      'vips: []',
      'vrrp:',
      '  instances:',
      '    - { name: a, interface: ext0, vrid: 1, addresses: [203.0.113.10/24], bfd: { minTxMs: 50 } }',
      '    - name: b',
      '      interface: ext0',
      '      vrid: 2',
      '      addresses: [203.0.113.11/24]',
      '      bfd:',
      '        multiplier: 300',
      '',
    ].join('\n');
    let message = '';
    try {
      parseApplianceConfig(text, 'lb1.yaml');
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      message = (e as Error).message;
    }
    expect(message).toMatch(/^lb1\.yaml:13: vrrp\.instances\[1\]\.bfd\.multiplier: /);
    expect(parseApplianceConfig(text.replace('multiplier: 300', 'multiplier: 3'), 'lb1.yaml').vrrp?.instances[1]?.bfd).toEqual({ minTxMs: 50, minRxMs: 50, multiplier: 3 });
  });
});
