import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { ConfigError, formatIssue } from '../../src/config/load.js';
import { loadVrrpConfigFile, parseVrrpConfig } from '../../src/config/vrrp.js';

const dir = mkdtempSync(join(tmpdir(), 'vipshift-vrrp-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function load(text: string) {
  const file = join(dir, `c${Math.random().toString(16).slice(2)}.yaml`);
  writeFileSync(file, text);
  return { file, run: () => loadVrrpConfigFile(file) };
}

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    if (e instanceof ConfigError) return e.issues.map((i) => (i.file === 'vrrp section' ? `${i.path}: ${i.message}` : formatIssue(i)));
    throw e;
  }
  throw new Error('no error');
}

describe('vrrp configuration', () => {
  it('vrrp_version: 3 by default; 2 takes whole seconds 1..255, 3 at most 40.95', () => {
    const one = (over: object) => ({ instances: [{ name: 'vip1', interface: 'ext0', vrid: 10, addresses: ['203.0.113.10/24'], ...over }] });
    expect(parseVrrpConfig(one({})).instances[0]?.version).toBe(3);
    expect(parseVrrpConfig(one({ version: 2, advertIntervalSeconds: 120 })).instances[0]).toMatchObject({ version: 2, advertIntervalSeconds: 120 });
    expect(problems(() => parseVrrpConfig(one({ version: 2, advertIntervalSeconds: 0.5 })))).toEqual(['vrrp.instances[0].advertIntervalSeconds: whole seconds (1..255) in VRRPv2 (RFC 3768 §5.3.7)']);
    expect(problems(() => parseVrrpConfig(one({ advertIntervalSeconds: 41 })))).toEqual(['vrrp.instances[0].advertIntervalSeconds: at most 40.95 seconds in VRRPv3 (RFC 5798 §5.2.7)']);
    expect(problems(() => parseVrrpConfig(one({ version: 1 }))).join()).toMatch(/instances\[0\]\.version: expected 2 or 3/);
  });

  it('fills keepalived-like defaults and normalises addresses', () => {
    const c = parseVrrpConfig({
      instances: [
        { name: 'vip1', interface: 'ext0', vrid: 10, addresses: ['203.0.113.10/24', { address: '198.18.0.10', dev: 'int0' }], advertIntervalSeconds: 0.05 },
      ],
      syncGroups: [{ name: 'g', instances: ['vip1'] }],
    });
    expect(c.instances[0]).toMatchObject({
      priority: 100,
      advertIntervalSeconds: 0.05,
      preempt: true,
      preemptDelaySeconds: 0,
      accept: false,
      unicastPeers: [],
      garpRepeat: 5,
      addresses: [{ address: '203.0.113.10/24' }, { address: '198.18.0.10/32', dev: 'int0' }],
    });
  });

  it('names the field of each problem', () => {
    const p = problems(() =>
      parseVrrpConfig({
        instances: [
          { name: 'a', interface: 'ext0', vrid: 256, priority: 0, advertIntervalSeconds: 0.015, addresses: ['203.0.113.300'] },
          { name: 'a', interface: 'ext0', vrid: 12, addresses: ['203.0.113.10'], unicastPeers: ['x'], bogus: 1 },
        ],
        syncGroups: [{ name: 'g', instances: ['nope'] }],
      }),
    );
    expect(p.join('\n')).toMatch(/vrrp\.instances\[0\]\.vrid: .*255/);
    expect(p.join('\n')).toMatch(/vrrp\.instances\[0\]\.priority/);
    expect(p.join('\n')).toMatch(/vrrp\.instances\[0\]\.advertIntervalSeconds: must be a whole number of centiseconds/);
    expect(problems(() => parseVrrpConfig({ instances: [{ name: 'a', interface: 'ext0', vrid: 1, advertIntervalSeconds: 0.005, addresses: ['203.0.113.10'] }] }))).toEqual([
      'vrrp.instances[0].advertIntervalSeconds: Too small: expected number to be >=0.01',
    ]);
    expect(p.join('\n')).toMatch(/vrrp\.instances\[0\]\.addresses\[0\]/);
    expect(p.join('\n')).toMatch(/vrrp\.instances\[1\]\.unicastPeers\[0\]/);
    expect(p.join('\n')).toMatch(/bogus/);
  });

  it('refuses duplicate names, duplicate VRIDs on an interface and unknown sync group members', () => {
    const inst = (name: string, vrid: number) => ({ name, interface: 'ext0', vrid, addresses: ['203.0.113.10'] });
    const p = problems(() =>
      parseVrrpConfig({ instances: [inst('a', 1), inst('a', 2), inst('b', 1)], syncGroups: [{ name: 'g', instances: ['a', 'zz'] }, { name: 'h', instances: ['a'] }] }),
    );
    expect(p).toEqual([
      "vrrp.instances[1].name: duplicate instance name 'a'",
      'vrrp.instances[2].vrid: VRID 1 already used on ext0 by instance #0',
      "vrrp.syncGroups[0].instances[1]: no instance named 'zz'",
      "vrrp.syncGroups[1].instances[0]: 'a' is already in sync group 'g'",
    ]);
  });

  it('reports file and line for a YAML file', () => {
    const { file, run } = load(['appliance: lb1', 'vrrp:', '  instances:', '    - name: vip1', '      interface: ext0', '      vrid: 300', '      addresses: [203.0.113.10/24]', ''].join('\n'));
    expect(problems(run)).toEqual([`${file}:6: vrrp.instances[0].vrid: Too big: expected number to be <=255`]);
  });

  it('reports the line of a YAML syntax error and a missing section', () => {
    const bad = load('vrrp:\n  instances: [\n');
    expect(problems(bad.run)[0]).toMatch(new RegExp(`^${bad.file}:\\d+: `));
    const none = load('appliance: lb1\n');
    expect(problems(none.run)).toEqual([`${none.file}:1: vrrp: is required (the file has no 'vrrp' section)`]);
  });

  it('reads the times under their old names with a warning naming file:line and the new name', () => {
    const { file, run } = load('vrrp:\n  instances:\n    - { name: v, interface: ext0, vrid: 1, addresses: [203.0.113.10/24] }\n    - name: w\n      interface: ext0\n      vrid: 2\n      addresses: [203.0.113.11/24]\n      advertInterval: 0.5\n      preemptDelay: 3\n');
    const stderr = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const config = run();
    const lines = stderr.mock.calls.map((c) => c[0]);
    stderr.mockRestore();
    expect(config.instances[1]).toMatchObject({ advertIntervalSeconds: 0.5, preemptDelaySeconds: 3 });
    expect(lines).toEqual([
      `${file}:8: warning: vrrp.instances[1].advertInterval: 'advertInterval' is now 'advertIntervalSeconds' (read as 'advertIntervalSeconds' for this release)\n`,
      `${file}:9: warning: vrrp.instances[1].preemptDelay: 'preemptDelay' is now 'preemptDelaySeconds' (read as 'preemptDelaySeconds' for this release)\n`,
    ]);
  });

  it('reads JSON too', () => {
    const { run } = load(JSON.stringify({ vrrp: { instances: [{ name: 'v', interface: 'ext0', vrid: 1, addresses: ['203.0.113.10/24'] }] } }));
    expect(run().instances).toHaveLength(1);
  });
});
