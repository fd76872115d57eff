import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/load.js';
import { parseApplianceConfig } from '../../src/config/appliance.js';

const good = `appliance: lb1
api: { listen: "192.0.2.11:8441" }
interfaces: { external: ext0, internal: int0 }
hold: { policy: queue, queueLength: 4096 }
vips:
  - name: vip1
    id: 1
    address: 203.0.113.10
    insideAddress: 198.18.0.10
    prefixLength: 24
    protocol: tcp
    ports: [7, 80]
    mode: dnat
    backends: [{ address: 198.18.0.101, weight: 1 }]
    owner: lb1
  - name: vip4
    id: 4
    address: 203.0.113.13
    insideAddress: 198.18.0.13
    ports: [7, 80]
    mode: fullnat
    backends: [{ address: 198.18.0.101 }, { address: 198.18.0.102 }, { address: 198.18.0.103 }]
    scheduler: roundrobin
    snatPorts: "20000-29999"
    owner: lb1
`;

/** The error lines a configuration text produces. */
function errorsOf(text: string, file = 'lb1.yaml'): string[] {
  try {
    parseApplianceConfig(text, file);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message.split('\n');
  }
  throw new Error('expected the configuration to be refused');
}

describe('appliance configuration', () => {
  it('reads the site configuration with its defaults', () => {
    const c = parseApplianceConfig(good, 'lb1.yaml');
    expect(c.appliance).toBe('lb1');
    expect(c.vips.map((v) => v.name)).toEqual(['vip1', 'vip4']);
    expect(c.vips[1]?.protocol).toBe('tcp');
    expect(c.vips[1]?.backends.map((s) => s.weight)).toEqual([1, 1, 1]);
    expect(c.hold.queueNumber).toBe(0);
  });

  it('reads the same configuration as JSON', () => {
    const yamlConfig = parseApplianceConfig(good, 'lb1.yaml');
    const json = JSON.stringify(yamlConfig, null, 2);
    expect(parseApplianceConfig(json, 'lb1.json')).toEqual(yamlConfig);
  });

  it('names file, line and field of a wrong mode', () => {
    expect(errorsOf(good.replace('mode: dnat', 'mode: dnatt'))).toEqual(["lb1.yaml:13: vips[0].mode: expected 'dnat' or 'fullnat'"]);
  });

  it('gives JSON errors their line too', () => {
    const json = JSON.stringify(parseApplianceConfig(good, 'x'), null, 2).replace('"203.0.113.13"', '"203.0.113.300"');
    const line = json.split('\n').findIndex((l) => l.includes('203.0.113.300')) + 1;
    expect(errorsOf(json, 'lb1.json')).toEqual([`lb1.json:${line}: vips[1].address: expected an IPv4 address (a.b.c.d)`]);
  });

  it('reports ports out of range, bad addresses and unknown fields, each at its line', () => {
    const text = good
      .replace('ports: [7, 80]\n    mode: fullnat', 'ports: [7, 70000]\n    mode: fullnat')
      .replace('{ address: 198.18.0.102 }', '{ address: 198.18.0.1022 }')
      .replace('    owner: lb1\n  - name: vip4', '    owner: lb1\n    colour: red\n  - name: vip4');
    expect(errorsOf(text)).toEqual([
      'lb1.yaml:16: vips[0].colour: unknown field',
      'lb1.yaml:21: vips[1].ports[1]: expected a port in 1..65535',
      'lb1.yaml:23: vips[1].backends[1].address: expected an IPv4 address (a.b.c.d)',
    ]);
  });

  it('refuses duplicate names and ids', () => {
    const text = good.replace('name: vip4\n    id: 4', 'name: vip1\n    id: 1');
    expect(errorsOf(text)).toEqual([
      "lb1.yaml:16: vips[1].name: name 'vip1' already used by vips[0]",
      'lb1.yaml:17: vips[1].id: id 1 already used by vips[0]',
    ]);
  });

  it('takes a pool behind a dnat VIP and wants snatPorts for fullnat', () => {
    const text = good
      .replace('backends: [{ address: 198.18.0.101, weight: 1 }]', 'backends: [{ address: 198.18.0.101 }, { address: 198.18.0.104 }]')
      .replace('    snatPorts: "20000-29999"\n', '');
    expect(errorsOf(text)).toEqual(['lb1.yaml:16: vips[1].snatPorts: is required for a fullnat VIP (e.g. "20000-29999")']);
  });

  it('refuses an empty pool and a reversed SNAT range', () => {
    const text = good.replace(/backends: \[\{ address: 198.18.0.101 \}, .*\]/, 'backends: []').replace('"20000-29999"', '"29999-20000"');
    expect(errorsOf(text)).toEqual([
      'lb1.yaml:22: vips[1].backends: a VIP has at least one backend (weight 0 drains one) or a sorryServer',
      'lb1.yaml:24: vips[1].snatPorts: expected first-last with 1 <= first <= last <= 65535, got "29999-20000"',
    ]);
  });

  it('says which field is missing', () => {
    expect(errorsOf(good.replace('    owner: lb1\n  - name: vip4', '  - name: vip4'))).toEqual(['lb1.yaml:6: vips[0].owner: is required']);
  });

  it('reports YAML syntax errors with their line', () => {
    const [first] = errorsOf(good.replace('ports: [7, 80]\n    mode: dnat', 'ports: [7, 80\n    mode: dnat'));
    expect(first).toMatch(/^lb1\.yaml:1[23]: /);
  });
});

describe('backends', () => {
  it('reads the old `servers` as `backends` for one release, warning at its line', () => {
    const warnings: string[] = [];
    const c = parseApplianceConfig(good.replace('backends: [{ address: 198.18.0.101, weight: 1 }]', 'servers: [{ address: 198.18.0.101, weight: 1 }]'), 'lb1.yaml', {
      warn: (w) => warnings.push(`${w.file}:${w.line}: ${w.path}: ${w.message}`),
    });
    expect(c.vips[0]!.backends).toEqual([{ address: '198.18.0.101', weight: 1 }]);
    expect(warnings).toEqual(["lb1.yaml:14: vips[0].servers: 'servers' is now 'backends' (read as 'backends' for this release)"]);
    // An error inside the old name still points at its line.
    expect(errorsOf(good.replace('backends: [{ address: 198.18.0.101, weight: 1 }]', 'servers: [{ address: 198.18.0.1011 }]'))).toEqual([
      'lb1.yaml:14: vips[0].backends[0].address: expected an IPv4 address (a.b.c.d)',
    ]);
    expect(errorsOf(good.replace('    owner: lb1\n  - name: vip4', '    servers: []\n    owner: lb1\n  - name: vip4'))).toEqual([
      "lb1.yaml:15: vips[0].servers: 'servers' is the old name of 'backends': give only 'backends'",
    ]);
  });

  it('takes ports, weights 0..256, a sorry server, onDown and checks; refuses what is out of range, each at its line', () => {
    const text = good.replace(
      'backends: [{ address: 198.18.0.101, weight: 1 }]',
      'backends: [{ address: 198.18.0.101, port: 8443, weight: 0 }, { address: 198.18.0.104, weight: 256, check: { fall: 5 } }]\n    sorryServer: { address: 198.18.0.109, port: 8080 }\n    onDown: reset\n    check: { type: tcp, inter: 500ms, timeout: 400ms }',
    );
    const c = parseApplianceConfig(text, 'lb1.yaml');
    expect(c.vips[0]).toMatchObject({ onDown: 'reset', sorryServer: { address: '198.18.0.109', port: 8080 }, check: { type: "tcp", inter: 500, timeout: 400 } });
    expect(c.vips[0]!.backends).toEqual([
      { address: '198.18.0.101', port: 8443, weight: 0 },
      { address: '198.18.0.104', weight: 256, check: { fall: 5 } },
    ]);
    expect(c.vips[1]!.onDown).toBe('keep');
    expect(
      errorsOf(
        good
          .replace('backends: [{ address: 198.18.0.101, weight: 1 }]', 'backends: [{ address: 198.18.0.101, weight: 257 }, { address: 198.18.0.101, port: 0 }]\n    onDown: drop')
          .replace('scheduler: roundrobin', 'scheduler: leastconn'),
      ),
    ).toEqual([
      'lb1.yaml:14: vips[0].backends[0].weight: expected a weight in 0..256 (0 drains)',
      'lb1.yaml:14: vips[0].backends[1].port: expected a port in 1..65535',
      "lb1.yaml:15: vips[0].onDown: expected 'keep' or 'reset'",
      "lb1.yaml:24: vips[1].scheduler: expected 'roundrobin', 'sourcehash' or 'maglev'",
    ]);
  });

  it('refuses a backend listed twice and a dnat backend in two dnat VIPs', () => {
    const text = good.replace('backends: [{ address: 198.18.0.101, weight: 1 }]', 'backends: [{ address: 198.18.0.105 }, { address: 198.18.0.105 }]');
    expect(errorsOf(text)).toEqual(['lb1.yaml:14: vips[0].backends[1].address: backend 198.18.0.105 already listed as backends[0]']);
    const two = good.replace(/  - name: vip4[\s\S]*$/, '  - name: vip5\n    id: 5\n    address: 203.0.113.14\n    insideAddress: 198.18.0.14\n    ports: [80]\n    mode: dnat\n    backends: [{ address: 198.18.0.101 }]\n    owner: lb1\n');
    expect(errorsOf(two)).toEqual(['lb1.yaml:22: vips[1].backends[0].address: dnat backend 198.18.0.101 already used by vips[0]']);
  });

  it('an alias without its anchor, or too many aliases, is an error at file:line:field, not a bare ReferenceError', () => {
    expect(errorsOf(good.replace('    ports: [7, 80]\n    mode: dnat', '    ports: *webports\n    mode: dnat'))).toEqual([
      'lb1.yaml:12: vips[0].ports: alias *webports names no anchor (&webports) before it',
    ]);
    // An anchor used before it is set is as unknown as one never set.
    expect(errorsOf(`appliance: *name\nx: &name lb1\n`)[0]).toBe('lb1.yaml:1: appliance: alias *name names no anchor (&name) before it');
    const laughs = ['a: &a [x, x, x, x, x, x, x, x, x, x]', ...'bcdefghij'.split('').map((c, i) => `${c}: &${c} [${Array(10).fill(`*${'abcdefghij'[i]}`).join(', ')}]`)].join('\n');
    expect(errorsOf(`${laughs}\n`)[0]).toMatch(/^lb1\.yaml: .*alias/i);
    // Aliases that resolve are fine.
    expect(parseApplianceConfig(good.replace('    ports: [7, 80]\n    mode: dnat', '    ports: &webports [7, 80]\n    mode: dnat').replace(/(  - name: vip4\n(?:.*\n){3})    ports: \[7, 80\]/, '$1    ports: *webports'), 'lb1.yaml').vips[1]?.ports).toEqual([7, 80]);
  });
});
