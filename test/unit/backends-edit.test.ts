import { describe, expect, it } from 'vitest';
import { editBackends, parseBackendName } from '../../src/config/edit.js';
import { ConfigError } from '../../src/config/load.js';

const text = `# lb1: the site's first appliance
appliance: lb1
api: { listen: "192.0.2.11:8441" }
interfaces: { external: ext0, internal: int0 }
vips:
  - name: web
    id: 4
    address: 203.0.113.13
    insideAddress: 198.18.0.13
    ports: [443]
    mode: fullnat
    snatPorts: "20000-29999"
    owner: lb1
    backends:
      - { address: 198.18.0.101, port: 8443 }  # the old one
      - address: 198.18.0.102
        port: 8443
        weight: 2
`;

const refusal = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error('expected a refusal');
};

describe('backend changes written into the configuration', () => {
  it('adds, weights, drains and removes, keeping comments and everything else', () => {
    const added = editBackends(text, 'lb1.yaml', 'web', { action: 'add', address: '198.18.0.103', port: 8443, weight: 3 });
    expect(added.config.vips[0]!.backends.map((b) => [b.address, b.weight])).toEqual([['198.18.0.101', 1], ['198.18.0.102', 2], ['198.18.0.103', 3]]);
    expect(added.text).toContain('# lb1: the site\'s first appliance');
    expect(added.text).toContain('# the old one');
    const drained = editBackends(added.text, 'lb1.yaml', 'web', { action: 'drain', address: '198.18.0.101', port: 8443 });
    expect(drained.config.vips[0]!.backends[0]!.weight).toBe(0);
    const weighted = editBackends(drained.text, 'lb1.yaml', 'web', { action: 'weight', address: '198.18.0.102', weight: 7 });
    expect(weighted.config.vips[0]!.backends[1]!.weight).toBe(7);
    const removed = editBackends(weighted.text, 'lb1.yaml', 'web', { action: 'remove', address: '198.18.0.101', port: 8443 });
    expect(removed.config.vips[0]!.backends.map((b) => b.address)).toEqual(['198.18.0.102', '198.18.0.103']);
    expect(removed.text).toContain('# lb1: the site\'s first appliance');
  });

  it('edits a file still using `servers`', () => {
    const old = text.replace('    backends:', '    servers:');
    const r = editBackends(old, 'lb1.yaml', 'web', { action: 'add', address: '198.18.0.104' });
    expect(r.config.vips[0]!.backends).toHaveLength(3);
    expect(r.text).toContain('servers:');
  });

  it('refuses an unknown VIP or backend, a duplicate, a bad weight, the last backend: nothing written', () => {
    expect(refusal(() => editBackends(text, 'lb1.yaml', 'nope', { action: 'drain', address: '198.18.0.101' }))).toBe("lb1.yaml: vips: no VIP named 'nope'");
    expect(refusal(() => editBackends(text, 'lb1.yaml', 'web', { action: 'remove', address: '198.18.0.109' }))).toBe('lb1.yaml: vips[0].backends: VIP web has no backend 198.18.0.109');
    expect(refusal(() => editBackends(text, 'lb1.yaml', 'web', { action: 'add', address: '198.18.0.102', port: 8443 }))).toMatch(/^lb1\.yaml:\d+: vips\[0\]\.backends\[2\]\.address: backend 198\.18\.0\.102:8443 already listed as backends\[1\]$/);
    expect(refusal(() => editBackends(text, 'lb1.yaml', 'web', { action: 'weight', address: '198.18.0.102', port: 8443, weight: 300 }))).toBe('lb1.yaml: weight: expected a weight in 0..256 (0 drains)');
    const one = editBackends(text, 'lb1.yaml', 'web', { action: 'remove', address: '198.18.0.101', port: 8443 }).text;
    expect(refusal(() => editBackends(one, 'lb1.yaml', 'web', { action: 'remove', address: '198.18.0.102', port: 8443 }))).toMatch(/vips\[0\]\.backends: a VIP has at least one backend/);
  });

  it('reads ADDRESS and ADDRESS:PORT', () => {
    expect(parseBackendName('198.18.0.1')).toEqual({ address: '198.18.0.1' });
    expect(parseBackendName('198.18.0.1:8443')).toEqual({ address: '198.18.0.1', port: 8443 });
    expect(() => parseBackendName('srv1:80')).toThrow(/ADDRESS or ADDRESS:PORT/);
  });
});
