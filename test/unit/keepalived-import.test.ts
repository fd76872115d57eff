import { spawnSync } from 'node:child_process';
import { dirname, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { KeepalivedConfigError, formatWarning } from '../../src/keepalived/diagnostics.js';
import { importKeepalivedFile } from '../../src/keepalived/import.js';
import { broken, corpus, hasKeepalived, keepalivedCheck, writeTree } from './keepalived-corpus.js';

const keepalived = hasKeepalived();
if (!keepalived) console.warn('keepalived is not installed: the corpus is not checked with `keepalived -t` (apt-get install keepalived)');

function messages(file: string): string[] {
  return importKeepalivedFile(file).warnings.map(formatWarning);
}

describe('keepalived corpus is real keepalived syntax', () => {
  for (const [name, tree] of Object.entries(corpus)) {
    it.skipIf(!keepalived)(`keepalived -t accepts ${name}`, () => {
      const verdict = keepalivedCheck(writeTree(tree));
      expect(verdict.messages).toBe('');
      expect(verdict.ok).toBe(true);
    });
  }
  for (const [name, c] of Object.entries(broken)) {
    it.skipIf(!keepalived)(`keepalived -t ${c.keepalivedRejects ? 'rejects' : 'only warns about'} ${name}`, () => {
      const verdict = keepalivedCheck(writeTree(c.tree));
      expect(verdict.ok).toBe(!c.keepalivedRejects);
      expect(verdict.messages).not.toBe('');
    });
  }
});

describe('import of keepalived.conf', () => {
  it('imports two-instance active/active with sync groups, inside addresses and owners', () => {
    const { config, warnings } = importKeepalivedFile(writeTree(corpus.activeActive!));
    expect(warnings).toEqual([]);
    expect(config.appliance).toBe('lb1');
    expect(config.vrrp.syncGroups).toEqual([
      { name: 'G_vip1', instances: ['VI_vip1_ext', 'VI_vip1_int'] },
      { name: 'G_vip3', instances: ['VI_vip3_ext', 'VI_vip3_int'] },
    ]);
    expect(config.vrrp.instances.map((i) => [i.name, i.interface, i.vrid, i.priority, i.addresses])).toEqual([
      ['VI_vip1_ext', 'ext0', 10, 150, ['203.0.113.10/24']],
      ['VI_vip1_int', 'int0', 110, 150, ['198.18.0.10/24']],
      ['VI_vip3_ext', 'ext0', 12, 100, ['203.0.113.12/24']],
      ['VI_vip3_int', 'int0', 112, 100, ['198.18.0.12/24']],
    ]);
    const vi = config.vrrp.instances[0]!;
    expect(vi).toMatchObject({ advertInterval: 1, preempt: true, preemptDelay: 0, unicastPeers: [], accept: true, trackInterfaces: [] });
    expect(config.vrrp.instances[2]).toMatchObject({ name: 'VI_vip3_ext', preempt: true, preemptDelay: 2.5 });
    expect(config.vips).toEqual([
      {
        name: 'vip1',
        id: 1,
        address: '203.0.113.10',
        prefixLength: 24,
        insideAddress: '198.18.0.10',
        protocol: 'tcp',
        port: 80,
        ports: [80],
        mode: 'dnat',
        scheduler: 'roundrobin',
        backends: [{ address: '198.18.0.101', port: 80, weight: 1 }],
        servers: [{ address: '198.18.0.101', weight: 1 }],
        owner: 'lb1',
      },
      {
        name: 'vip2',
        id: 2,
        address: '203.0.113.12',
        prefixLength: 24,
        insideAddress: '198.18.0.12',
        protocol: 'tcp',
        port: 7,
        ports: [7],
        mode: 'dnat',
        scheduler: 'roundrobin',
        backends: [{ address: '198.18.0.103', port: 7, weight: 1 }],
        servers: [{ address: '198.18.0.103', weight: 1 }],
      },
    ]);
  });

  it('imports unicast peers, a fractional advert_int, tracking and per-address devices', () => {
    const file = writeTree(corpus.unicastFast!);
    const { config } = importKeepalivedFile(file);
    expect(config.appliance).toBe('lb2');
    expect(config.vrrp.instances).toEqual([
      {
        name: 'VI_fast',
        interface: 'ext0',
        vrid: 51,
        priority: 90,
        advertInterval: 0.05,
        preempt: false,
        preemptDelay: 0,
        addresses: ['203.0.113.20/24', { address: '198.18.0.20/24', dev: 'int0' }],
        unicastPeers: ['203.0.113.2', '203.0.113.4'],
        unicastSource: '203.0.113.3',
        accept: true,
        trackInterfaces: ['int0', 'mgmt0'],
      },
    ]);
    expect(messages(file)).toEqual([`${file}:23: warning: virtual_ipaddress 203.0.113.20/24: label ext0:vip is not supported; ignored`]);
  });

  it('imports a weighted pool as fullnat and warns about what it leaves out', () => {
    const file = writeTree(corpus.pool!);
    const { config } = importKeepalivedFile(file);
    expect(config.vips.map((v) => [v.address, v.port, v.protocol, v.mode, v.scheduler, v.insideAddress, v.owner])).toEqual([
      ['203.0.113.13', 80, 'tcp', 'fullnat', 'roundrobin', '198.18.0.13', 'lb1'],
      ['203.0.113.13', 53, 'udp', 'fullnat', 'sourcehash', '198.18.0.13', 'lb1'],
    ]);
    expect(config.vips[0]!.backends).toEqual([
      { address: '198.18.0.101', port: 80, weight: 3 },
      { address: '198.18.0.102', port: 80, weight: 2 },
      { address: '198.18.0.103', port: 80, weight: 1 },
    ]);
    expect(config.vips.map((v) => v.id)).toEqual([1, 2]);
    const w = messages(file);
    const at = (line: number, text: string): unknown => expect.stringMatching(new RegExp(`^${file}:${line}: warning: .*${text}`));
    expect(w).toEqual([
      at(16, 'delay_loop: health checks are not run'),
      at(19, 'persistence_timeout: persistence is not supported'),
      at(24, 'TCP_CHECK: health checks are not run'),
      at(31, 'HTTP_GET: health checks are not run'),
      at(15, 'imported as fullnat'),
      at(43, 'imported as fullnat'),
    ]);
  });

  it('follows includes with globs relative to the including file, in sorted order', () => {
    const file = writeTree(corpus.included!);
    const { config, files } = importKeepalivedFile(file);
    const etc = dirname(file);
    expect(files.map((f) => relative(etc, f))).toEqual(['keepalived.conf', 'conf.d/10-vip1.conf', 'shared/peer1.conf', 'conf.d/20-vip2.conf']);
    expect(config.vrrp.instances.map((i) => i.name)).toEqual(['VI_1', 'VI_2']);
    expect(config.vrrp.syncGroups).toEqual([{ name: 'G', instances: ['VI_1', 'VI_2'] }]);
  });

  for (const [name, c] of Object.entries(broken)) {
    it(`fails on ${name} naming the file and line`, () => {
      const top = writeTree(c.tree);
      const file = join(dirname(top), c.file);
      let error: unknown;
      try {
        importKeepalivedFile(top);
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(KeepalivedConfigError);
      const e = error as KeepalivedConfigError;
      expect([e.file, e.line]).toEqual([file, c.line]);
      expect(e.message).toMatch(new RegExp(`^${file}:${c.line}: error: `));
      expect(e.reason).toMatch(c.error);
    });
  }

  it('warns about unknown and unsupported keywords with file and line, never dropping them silently', () => {
    const file = writeTree({
      'k.conf': `global_defs {
    router_id lb1
    vrrp_version 2
    notification_email {
        ops@example.com
    }
    no_such_global 1
}
vrrp_instance VI_1 {
    interface ext0
    virtual_router_id 1
    authentication {
        auth_type PASS
        auth_pass secret
    }
    track_script {
        chk_haproxy
    }
    bogus { nested { deeper } }
    virtual_ipaddress {
        203.0.113.10/24 brd 203.0.113.255 no_track
    }
}
virtual_server fwmark 7 {
    lb_kind NAT
}
virtual_server 203.0.113.10 443 {
    lb_algo lc
    lb_kind NAT
    real_server 198.51.100.5 8443 {
    }
}
virtual_server 203.0.113.10 22 {
    lb_kind DR
    real_server 203.0.113.50 22 {
    }
}
`,
    });
    const w = messages(file);
    const at = (line: number, text: string): unknown => expect.stringMatching(new RegExp(`^${file}:${line}: warning: .*${text}`));
    expect(w).toEqual([
      at(4, 'notification_email: notifications'),
      at(7, "unknown keyword 'no_such_global' in global_defs"),
      at(12, 'authentication: VRRPv3 has no authentication'),
      at(16, 'track_script: only track_interface'),
      at(19, "unknown keyword 'bogus' in vrrp_instance"),
      at(21, 'brd 203.0.113.255 is not supported'),
      at(21, "option 'no_track' is not supported"),
      at(9, 'VI_1 is VRRPv2 in keepalived .* set vrrp_version 3'),
      at(24, "virtual_server fwmark 7: only 'virtual_server ADDRESS PORT'"),
      at(28, 'lb_algo lc is not supported'),
      at(27, 'port differs from the virtual port 443'),
      at(27, "no virtual_ipaddress on the real servers' subnet"),
      at(34, 'lb_kind DR is not supported'),
    ]);
  });
});

describe('vipshift import-keepalived', () => {
  const run = (...args: string[]) =>
    spawnSync(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'import-keepalived', ...args], { encoding: 'utf8' });

  it('prints YAML, or JSON with --json, and warnings on stderr', () => {
    const file = writeTree(corpus.unicastFast!);
    const yaml = run(file);
    expect(yaml.status).toBe(0);
    expect(yaml.stderr).toBe(`${file}:23: warning: virtual_ipaddress 203.0.113.20/24: label ext0:vip is not supported; ignored\n`);
    const json = run(file, '--json');
    expect(json.status).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual(parseYaml(yaml.stdout));
    expect(JSON.parse(json.stdout).vrrp.instances[0].advertInterval).toBe(0.05);
  });

  it('exits non-zero with file:line on broken input', () => {
    const c = broken['priority 300']!;
    const file = writeTree(c.tree);
    const r = run(file, '--json');
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(new RegExp(`^${file}:${c.line}: error: priority 300 is outside 1-255\\n$`));
  });
});
