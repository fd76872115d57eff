/**
 * `vipshift check`: every file kind, valid and broken, through the real command line; the
 * keepalived corpus as the box would check it (its interfaces in a namespace of its own).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { applianceConfig, controllerConfig, defaultSite, keeperConfig } from '../../src/lab/site.js';
import { broken, corpus, vipshiftCheck, writeTree } from './keepalived-corpus.js';

const dir = mkdtempSync(join(tmpdir(), 'vtcheck-'));
const run = (...args: string[]) => spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'check', ...args], { encoding: 'utf8' });
const write = (name: string, text: string) => {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
};

describe('vipshift check --config', () => {
  const site = defaultSite();
  const files = {
    appliance: write('lb1.yaml', stringify(applianceConfig(site, 'lb1'))),
    keeper: write('srv1.yaml', stringify(keeperConfig(site, 'srv1'))),
    controller: write('ctl.yaml', stringify(controllerConfig(site))),
  };

  for (const [kind, file] of Object.entries(files)) {
    it(`tells a valid ${kind} file by its identity field: exit 0, one line`, () => {
      const r = run('--config', file);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^${file}: OK: ${kind} \\S+, .*\\n$`));
    });
  }

  it('lists every problem with file:line: field and exits 1', () => {
    const text = stringify(applianceConfig(site, 'lb1')).replace(/mode: fullnat/, 'mode: fastnat').replace(/prefixLength: 24/, 'prefixLength: 40');
    const file = write('bad.yaml', text);
    const r = run('--config', file);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    const lines = r.stderr.trim().split('\n');
    expect(lines.at(-1)).toBe('2 problems');
    expect(lines.slice(0, -1)).toEqual([
      expect.stringMatching(new RegExp(`^${file}:\\d+: vips\\[0\\]\\.prefixLength: expected a prefix length in 1..32$`)),
      expect.stringMatching(new RegExp(`^${file}:\\d+: vips\\[\\d+\\]\\.mode: expected 'dnat' or 'fullnat'$`)),
    ]);
    const line = (text.split('\n').findIndex((l) => l.includes('fastnat')) + 1).toString();
    expect(lines[1]).toContain(`:${line}:`);
  });

  it('one naming rule and one URL check in every kind: a name that is no key id is refused where it is written', () => {
    const bad = { appliance: applianceConfig(site, 'lb1'), keeper: keeperConfig(site, 'srv1'), controller: controllerConfig(site) };
    bad.appliance.appliance = 'LB_1';
    bad.keeper.keeper = 'Srv1';
    bad.controller.appliances[0]!.name = 'lb_1';
    bad.controller.appliances[1]!.api = 'https://192.0.2.12:8441/v1';
    for (const [kind, config] of Object.entries(bad)) {
      const file = write(`bad-${kind}.yaml`, stringify(config));
      const r = run('--config', file);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`^${file}:\\d+: (appliance|keeper|appliances\\[0\\]\\.name): expected .*name as a key id: lower-case letters, digits and '-', starting with a letter, at most 32, got '(LB_1|Srv1|lb_1)'$`, 'm'));
    }
    const r = run('--config', join(dir, 'bad-controller.yaml'));
    expect(r.stderr).toMatch(/appliances\[1\]\.api: expected the appliance's agent URL as http:\/\/ADDRESS:PORT$/m);
  });

  it('needs --kind when the file does not say; --kind is checked', () => {
    const file = write('anon.yaml', 'api:\n  listen: 192.0.2.1:8441\n');
    expect(run('--config', file)).toMatchObject({ status: 1, stderr: expect.stringMatching(/anon.yaml:1: cannot tell the kind .* give --kind/) });
    expect(run('--config', file, '--kind', 'keeper')).toMatchObject({ status: 1, stderr: expect.stringMatching(/anon.yaml:\d+: keeper: /) });
    expect(run('--config', file, '--kind', 'toaster').status).toBe(2);
    const conf = write('keepalived.conf', 'global_defs {\n    router_id lb1\n}\n');
    expect(run('--config', conf)).toMatchObject({ status: 1, stderr: expect.stringMatching(/keepalived.conf:1: this is keepalived.conf: check it with --keepalived FILE/) });
    expect(run().status).toBe(2);
  });
});

describe('vipshift check --keepalived', () => {
  for (const [name, tree] of Object.entries(corpus)) {
    it(`the import of ${name} is a valid appliance configuration`, () => {
      const file = writeTree(tree);
      const v = vipshiftCheck(file);
      expect(v.messages).toMatch(new RegExp(`${file}: OK: appliance \\S+, `));
      expect(v.ok).toBe(true);
    });
  }

  it('a broken keepalived.conf: file:line and exit 1', () => {
    const c = broken['priority 300']!;
    const file = writeTree(c.tree);
    const v = vipshiftCheck(file);
    expect(v.status).toBe(1);
    expect(v.messages).toMatch(new RegExp(`^${file}:${c.line}: priority 300 is outside 1-255\\n1 problem\\n$`));
  });
});
