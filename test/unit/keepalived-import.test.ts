import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { KeepalivedConfigError, formatWarning } from '../../src/keepalived/diagnostics.js';
import { PEER_OWNER, importKeepalivedFile, type HostFacts } from '../../src/keepalived/import.js';
import { loadKeepalivedAppliance, mergeOver } from '../../src/keepalived/appliance-config.js';
import { broken, corpus, hasKeepalived, keepalivedCheck, writeTree } from './keepalived-corpus.js';

const keepalived = hasKeepalived();
if (!keepalived) console.warn('keepalived is not installed: the corpus is not checked with `keepalived -t` (apt-get install keepalived)');

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

/** The box the import runs on: ext0 has 203.0.113.2 (keepalived.conf names interfaces, not addresses). */
const host: HostFacts = { hostname: 'box1.example.net', addresses: (ifname) => (ifname === 'ext0' ? ['203.0.113.2', '203.0.113.10'] : []) };

describe('import of keepalived.conf', () => {
  it('imports two-instance active/active with sync groups, inside addresses and owners into a complete appliance configuration', () => {
    const { config, warnings, defaulted } = importKeepalivedFile(writeTree(corpus.activeActive!), host);
    expect(warnings).toEqual([]);
    expect(config.appliance).toBe('lb1');
    // The first address of ext0 that is not virtual: 203.0.113.10 is vip1.
    expect(config.api).toEqual({ listen: '203.0.113.2:8441' });
    expect(config.interfaces).toEqual({ external: 'ext0', internal: 'int0' });
    expect(config.vrrp.syncGroups).toEqual([
      { name: 'G_vip1', instances: ['VI_vip1_ext', 'VI_vip1_int'] },
      { name: 'G_vip3', instances: ['VI_vip3_ext', 'VI_vip3_int'] },
    ]);
    expect(config.vrrp.instances.map((i) => [i.name, i.interface, i.vrid, i.version, i.priority, i.addresses])).toEqual([
      ['VI_vip1_ext', 'ext0', 10, 3, 150, ['203.0.113.10/24']],
      ['VI_vip1_int', 'int0', 110, 3, 150, ['198.18.0.10/24']],
      ['VI_vip3_ext', 'ext0', 12, 3, 100, ['203.0.113.12/24']],
      ['VI_vip3_int', 'int0', 112, 3, 100, ['198.18.0.12/24']],
    ]);
    expect(config.vrrp.instances[0]).toMatchObject({ advertIntervalSeconds: 1, preempt: true, preemptDelaySeconds: 0, unicastPeers: [], accept: true, trackInterfaces: [] });
    expect(config.vrrp.instances[2]).toMatchObject({ name: 'VI_vip3_ext', preempt: true, preemptDelaySeconds: 2.5 });
    expect(config.vips).toEqual([
      { name: 'vip1', id: 1, address: '203.0.113.10', prefixLength: 24, insideAddress: '198.18.0.10', protocol: 'tcp', ports: [80], mode: 'dnat', scheduler: 'roundrobin', backends: [{ address: '198.18.0.101', weight: 1, check: { enabled: false } }], owner: 'lb1' },
      { name: 'vip2', id: 2, address: '203.0.113.12', prefixLength: 24, insideAddress: '198.18.0.12', protocol: 'tcp', ports: [7], mode: 'dnat', scheduler: 'roundrobin', backends: [{ address: '198.18.0.103', weight: 1, check: { enabled: false } }], owner: PEER_OWNER },
    ]);
    // Every field keepalived has no word for is commented.
    const commented = defaulted.map((d) => d.path.join('.'));
    for (const field of ['api.listen', 'interfaces.external', 'interfaces.internal', 'vips.0.id', 'vips.0.insideAddress', 'vips.0.mode', 'vips.0.owner', 'vips.1.owner']) {
      expect(commented).toContain(field);
    }
  });

  it('imports unicast peers, a fractional advert_int, tracking and per-address devices; the agent listens on unicast_src_ip', () => {
    const file = writeTree(corpus.unicastFast!);
    const { config } = importKeepalivedFile(file, host);
    expect(config.appliance).toBe('lb2');
    expect(config.api.listen).toBe('203.0.113.3:8441');
    expect(config.vrrp.instances).toEqual([
      {
        name: 'VI_fast',
        interface: 'ext0',
        vrid: 51,
        version: 3,
        priority: 90,
        advertIntervalSeconds: 0.05,
        preempt: false,
        preemptDelaySeconds: 0,
        addresses: ['203.0.113.20/24', { address: '198.18.0.20/24', dev: 'int0' }],
        unicastPeers: ['203.0.113.2', '203.0.113.4'],
        unicastSource: '203.0.113.3',
        accept: true,
        trackInterfaces: ['int0', 'mgmt0'],
      },
    ]);
    expect(importKeepalivedFile(file, host).warnings.map(formatWarning)).toEqual([`${file}:23: warning: virtual_ipaddress 203.0.113.20/24: label ext0:vip is not supported; ignored`]);
  });

  it('imports a weighted pool with its checks and persistence, and a UDP pool', () => {
    const file = writeTree(corpus.pool!);
    const { config, warnings } = importKeepalivedFile(file, host);
    expect(config.vips.map((v) => [v.address, v.ports, v.protocol, v.mode, v.scheduler, v.insideAddress, v.owner])).toEqual([
      ['203.0.113.13', [80], 'tcp', 'dnat', 'maglev', '198.18.0.13', 'lb1'],
      ['203.0.113.14', [53], 'udp', 'fullnat', 'sourcehash', '198.18.0.14', 'lb1'],
    ]);
    expect(config.vips[0]!.check).toBeUndefined(); // the real servers' checkers differ
    expect(config.vips[0]!.backends).toEqual([
      { address: '198.18.0.101', weight: 3, check: { type: 'tcp', inter: 6000, timeout: 3000, port: 80 } },
      { address: '198.18.0.102', weight: 2, check: { type: 'http', inter: 6000, path: '/healthz', expect: [200], timeout: 3000 } },
      { address: '198.18.0.103', weight: 1, check: { enabled: false } },
    ]);
    expect(config.vips[1]!.snatPorts).toBe('20000-29999');
    const at = (line: number, text: string): unknown => expect.stringMatching(new RegExp(`^${file}:${line}: warning: .*${text}`));
    expect(warnings.map(formatWarning)).toEqual([at(21, 'persistence_timeout: a client stays on its backend by consistent hashing'), at(45, 'already routes through another VIP')]);
  });

  it('maps TCP_CHECK, HTTP_GET, SSL_GET and MISC_CHECK, sorry_server, inhibit_on_failure, drained servers, use_vmac, VRRPv2 and notify scripts', () => {
    const file = writeTree(corpus.checkers!);
    const { config, warnings } = importKeepalivedFile(file, host);
    expect(warnings.map(formatWarning)).toEqual([expect.stringMatching(/:105: warning: .*198.18.0.101 already routes through another VIP's inside address, so this one is fullnat/)]);
    expect(config.vrrp.instances[0]).toMatchObject({ name: 'VI_web', version: 2, useVmac: true, unicastSource: '203.0.113.2', unicastPeers: ['203.0.113.3'] });
    expect(config.notify).toEqual({
      master: ['/usr/local/sbin/vip-event', 'master'],
      backup: ['/usr/local/sbin/vip-event', 'backup'],
      backendDown: ['/usr/local/sbin/backend-event', 'down'],
    });
    const [web, tls, db] = config.vips;
    expect(web).toMatchObject({
      address: '203.0.113.21',
      ports: [80, 8080], // two virtual_servers, one pool
      mode: 'dnat',
      backends: [
        { address: '198.18.0.101', weight: 5 },
        { address: '198.18.0.102', weight: 0 },
      ],
      sorryServer: { address: '198.18.0.200', port: 80 },
      onDown: 'keep',
      check: { type: 'http', inter: 3000, path: '/healthz', expect: [200], timeout: 2000, fall: 3 },
    });
    expect(tls).toMatchObject({ ports: [443], mode: 'fullnat', backends: [{ address: '198.18.0.101', port: 8443, weight: 1 }], check: { type: 'https', expect: [200, 301] } });
    expect(db!.backends.map((b) => b.check)).toEqual([
      { type: 'script', inter: 10000, command: '/usr/local/bin/pg-ready', args: ['198.18.0.111'], timeout: 5000 },
      { type: 'tcp', inter: 10000, port: 5432, timeout: 2000 },
    ]);
    expect(new Set(config.vips.map((v) => v.insideAddress)).size).toBe(3);
  });

  it('refuses with file:line what vipshift cannot do: DR/TUN, fwmark, no inside address, one address with two pools', () => {
    const refused = (body: string) => {
      const file = writeTree({ 'k.conf': `vrrp_instance VI_1 {\n    interface ext0\n    virtual_router_id 1\n    virtual_ipaddress {\n        203.0.113.10/24\n        198.18.0.10/24 dev int0\n    }\n}\n${body}` });
      try {
        importKeepalivedFile(file, host);
      } catch (e) {
        return (e as KeepalivedConfigError).problems.map((p) => p.message.replace(file, 'k.conf'));
      }
      throw new Error('not refused');
    };
    const vs = (head: string, inner: string) => `virtual_server ${head} {\n    lb_kind NAT\n${inner}}\n`;
    expect(refused(vs('203.0.113.10 80', '    lb_kind DR\n    real_server 198.18.0.1 80 {\n    }\n'))).toEqual([expect.stringMatching(/^k.conf:11: error: .*lb_kind DR is not supported/)]);
    expect(refused(vs('fwmark 7', ''))).toEqual([expect.stringMatching(/^k.conf:9: error: virtual_server fwmark 7: vipshift selects a VIP's traffic by address and port/)]);
    expect(refused(vs('203.0.113.10 80', '    real_server 192.0.2.50 80 {\n    }\n'))).toEqual([expect.stringMatching(/^k.conf:9: error: .*needs an inside address for this VIP/)]);
    expect(
      refused(vs('203.0.113.10 80', '    real_server 198.18.0.1 80 {\n    }\n') + vs('203.0.113.10 443', '    real_server 198.18.0.2 443 {\n    }\n') + vs('fwmark 1', '')),
    ).toEqual([expect.stringMatching(/^k.conf:14: error: .*already a VIP \(.*:9\) with another pool/), expect.stringMatching(/^k.conf:19: error: virtual_server fwmark/)]);
  });

  it('says which line lacks what: no address for the agent API', () => {
    const file = writeTree(corpus.activeActive!);
    expect(() => importKeepalivedFile(file, { hostname: 'x', addresses: () => [] })).toThrow(/keepalived.conf:21: error: vrrp_instance VI_vip1_ext: vipshift's agent API needs an address/);
  });

  it("router_id becomes a key id, since the appliance's name names its key (keepalived's LVS_DEVEL → lvs-devel)", () => {
    const file = writeTree({
      'k.conf': `global_defs {\n    router_id LVS_DEVEL\n}\nvrrp_instance VI_1 {\n    interface ext0\n    virtual_router_id 1\n    virtual_ipaddress {\n        203.0.113.10/24\n    }\n}\n`,
    });
    expect(importKeepalivedFile(file, host).config.appliance).toBe('lvs-devel');
  });

  it('VRRPv2: advert_int rounded to whole seconds as keepalived does; authentication warned', () => {
    const file = writeTree({
      'k.conf': `vrrp_instance VI_1 {\n    interface ext0\n    virtual_router_id 1\n    advert_int 0.3\n    authentication {\n        auth_type PASS\n        auth_pass x\n    }\n    virtual_ipaddress {\n        203.0.113.10/24\n    }\n}\n`,
    });
    const { config, warnings } = importKeepalivedFile(file, host);
    expect(config.vrrp.instances[0]).toMatchObject({ version: 2, advertIntervalSeconds: 1 });
    expect(config.appliance).toBe('box1'); // no router_id: the host name, as keepalived
    expect(warnings.map(formatWarning)).toEqual([
      expect.stringMatching(/:4: warning: advert_int 0.3 rounded to 1: VRRPv2 carries whole seconds/),
      expect.stringMatching(/:5: warning: authentication: vipshift sends VRRPv2 adverts with Auth Type 0/),
    ]);
  });

  it('follows includes with globs relative to the including file, in sorted order', () => {
    const file = writeTree(corpus.included!);
    const { config, files } = importKeepalivedFile(file, host);
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
        importKeepalivedFile(top, host);
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
    notify /etc/keepalived/notify.sh
    track_script {
        chk_haproxy
    }
    bogus { nested { deeper } }
    virtual_ipaddress {
        203.0.113.10/24 brd 203.0.113.255 no_track
        198.51.100.10/24 dev int0
    }
}
virtual_server 203.0.113.10 443 {
    lb_algo lc
    lb_kind NAT
    real_server 198.51.100.5 8443 {
        SMTP_CHECK {
        }
    }
}
`,
    });
    const at = (line: number, text: string): unknown => expect.stringMatching(new RegExp(`^${file}:${line}: warning: .*${text}`));
    expect(importKeepalivedFile(file, host).warnings.map(formatWarning)).toEqual([
      at(4, 'notification_email: e-mail notifications'),
      at(7, "unknown keyword 'no_such_global' in global_defs"),
      at(13, 'track_script: only track_interface'),
      at(16, "unknown keyword 'bogus' in vrrp_instance"),
      at(26, 'SMTP_CHECK: vipshift checks tcp, http, https and scripts'),
      at(18, 'brd 203.0.113.255 is not supported'),
      at(18, "option 'no_track' is not supported"),
      at(23, 'lb_algo lc is not supported'),
      at(12, 'runs on master, backup and fault with the event in its environment'),
    ]);
  });
});

describe('keepalived.conf → appliance: every corpus file passes the appliance schema', () => {
  for (const [name, tree] of Object.entries(corpus)) {
    it(`${name}`, async () => {
      const { config } = await loadKeepalivedAppliance(writeTree(tree), undefined, host);
      expect(config.vrrp?.instances.length).toBeGreaterThan(0);
    });
  }

  it('a vipshift file over it sets what keepalived cannot say; its errors name its own lines', async () => {
    const file = writeTree(corpus.checkers!);
    const over = join(dirname(file), 'lb1.yaml');
    writeFileSync(over, 'api:\n  listen: 192.0.2.11:8441\nvips:\n  - name: vip2\n    snatPorts: 30000-39999\n  - name: vip3\n    onDown: never\n');
    await expect(loadKeepalivedAppliance(file, over, host)).rejects.toThrow(new RegExp(`^${over}:7: vips\\[2\\]\\.onDown: expected 'keep' or 'reset'`));
    writeFileSync(over, 'api:\n  listen: 192.0.2.11:8441\nvips:\n  - name: vip2\n    snatPorts: 30000-39999\n');
    const { config } = await loadKeepalivedAppliance(file, over, host);
    expect(config.api.listen).toBe('192.0.2.11:8441');
    expect(config.vips[1]!.snatPorts).toBe('30000-39999');
    expect(mergeOver({ vips: [{ name: 'a', id: 1 }] }, { vips: [{ name: 'b', id: 2 }] })).toEqual({ vips: [{ name: 'a', id: 1 }, { name: 'b', id: 2 }] });
  });

  it("a schema problem of the imported configuration names the keepalived line it comes from", async () => {
    const file = writeTree({
      'k.conf': `global_defs {\n    router_id lb1\n}\nvrrp_instance VI_1 {\n    interface ext0\n    virtual_router_id 1\n    virtual_ipaddress {\n        203.0.113.10/24\n        198.18.0.10/24 dev int0\n    }\n}\nvirtual_server 203.0.113.10 80 {\n    lb_kind NAT\n    real_server 198.18.0.101 80 {\n        HTTP_GET {\n            url {\n                path healthz\n            }\n        }\n    }\n}\n`,
    });
    await expect(loadKeepalivedAppliance(file, undefined, host)).rejects.toThrow(new RegExp(`^${file}:12: vips\\[0\\]\\.check\\.path: expected an absolute path`));
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
    expect(JSON.parse(json.stdout).vrrp.instances[0].advertIntervalSeconds).toBe(0.05);
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
