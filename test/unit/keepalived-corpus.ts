/**
 * keepalived.conf files the keepalived tests write, and keepalived's own verdict on them
 * (`keepalived -t`, the config test of Debian's keepalived 2.2). keepalived refuses a
 * configuration naming an interface that does not exist, so the check runs in a fresh network
 * namespace of its own (unshare: no name, gone when the process ends) holding ext0, int0 and
 * mgmt0 as veth pairs.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

/** A relative path → file text; the first entry is the file to import. */
export type ConfigTree = Record<string, string>;

export function writeTree(tree: ConfigTree, dir = mkdtempSync(join(tmpdir(), 'vtkpa-'))): string {
  for (const [path, text] of Object.entries(tree)) {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), text);
  }
  return join(dir, Object.keys(tree)[0]!);
}

export function hasKeepalived(): boolean {
  return spawnSync('keepalived', ['-v'], { encoding: 'utf8' }).error === undefined;
}

export interface KeepalivedVerdict {
  ok: boolean;
  status: number | null;
  messages: string;
}

const LINKS = 'ip link add ext0 type veth peer name int0 && ip link add mgmt0 type veth peer name mgmt0p';

/** `keepalived -t -f FILE` in a throwaway network namespace with the site's interface names. */
export function keepalivedCheck(file: string): KeepalivedVerdict {
  const r = spawnSync('unshare', ['--user', '--map-root-user', '--net', 'sh', '-c', `${LINKS} && exec keepalived -t -f "$1"`, 'sh', file], {
    encoding: 'utf8',
  });
  if (r.error) throw r.error;
  return { ok: r.status === 0, status: r.status, messages: `${r.stdout}${r.stderr}` };
}

/**
 * `vipshift check --keepalived FILE` where keepalived runs: in a namespace holding the site's
 * interfaces, ext0 with this box's address (the import puts the agent API on it).
 */
export function vipshiftCheck(file: string, ...more: string[]): KeepalivedVerdict {
  const cli = join(import.meta.dirname, '../../src/cli.ts');
  const r = spawnSync(
    'unshare',
    ['--user', '--map-root-user', '--net', 'sh', '-c', `${LINKS} && ip addr add 203.0.113.2/24 dev ext0 && ip link set ext0 up && ip link set int0 up && exec "$0" --import tsx "$@"`, process.execPath, cli, 'check', '--keepalived', file, ...more],
    { encoding: 'utf8', cwd: join(import.meta.dirname, '../..') },
  );
  if (r.error) throw r.error;
  return { ok: r.status === 0, status: r.status, messages: `${r.stdout}${r.stderr}` };
}

/** Two appliances, each master of one VIP and backup of the other; a VIP and its inside address in one sync group. */
export const activeActive: ConfigTree = {
  'keepalived.conf': `! lb1 of the site: master of vip1, backup of vip3
global_defs {
   router_id lb1
   vrrp_version 3
}

vrrp_sync_group G_vip1 {
    group {
        VI_vip1_ext
        VI_vip1_int
    }
}

vrrp_sync_group G_vip3 {
    group {
        VI_vip3_ext
        VI_vip3_int
    }
}

vrrp_instance VI_vip1_ext {
    state MASTER
    interface ext0
    virtual_router_id 10
    priority 150
    advert_int 1
    virtual_ipaddress {
        203.0.113.10/24 dev ext0
    }
}

vrrp_instance VI_vip1_int {
    state MASTER
    interface int0
    virtual_router_id 110
    priority 150
    advert_int 1
    virtual_ipaddress {
        198.18.0.10/24
    }
}

vrrp_instance VI_vip3_ext {   # lb2 is master of vip3
    state BACKUP
    interface ext0
    virtual_router_id 12
    priority 100
    preempt_delay 2.5
    advert_int 1
    virtual_ipaddress {
        203.0.113.12/24
    }
}

vrrp_instance VI_vip3_int {
    state BACKUP
    interface int0
    virtual_router_id 112
    priority 100
    advert_int 1
    virtual_ipaddress {
        198.18.0.12/24
    }
}

virtual_server 203.0.113.10 80 {
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 198.18.0.101 80 {
        weight 1
    }
}

virtual_server 203.0.113.12 7 {
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 198.18.0.103 7 {
    }
}
`,
};

/** No multicast on the segment: unicast peers, a 50 ms advertisement interval, tracking. */
export const unicastFast: ConfigTree = {
  'keepalived.conf': `global_defs {
    router_id "lb2"
    vrrp_version 3
}
vrrp_instance VI_fast {
    state BACKUP
    interface ext0
    virtual_router_id 51
    priority 90
    advert_int 0.05
    nopreempt
    accept
    unicast_src_ip 203.0.113.3
    unicast_peer {
        203.0.113.2
        203.0.113.4
    }
    track_interface {
        int0
        mgmt0
    }
    virtual_ipaddress {
        203.0.113.20/24 dev ext0 label ext0:vip
        198.18.0.20/24 dev int0
    }
}
`,
};

/** A pool of three servers with weights, a TCP and an HTTP check, persistence; a UDP pool on a second address. */
export const pool: ConfigTree = {
  'keepalived.conf': `global_defs {
    router_id lb1
    vrrp_version 3
}
vrrp_instance VI_pool {
    state MASTER
    interface ext0
    virtual_router_id 13
    priority 200
    virtual_ipaddress {
        203.0.113.13/24
        198.18.0.13/24 dev int0
        203.0.113.14/24
        198.18.0.14/24 dev int0
    }
}
virtual_server 203.0.113.13 80 {
    delay_loop 6
    lb_algo wrr
    lb_kind NAT
    persistence_timeout 50
    protocol TCP

    real_server 198.18.0.101 80 {
        weight 3
        TCP_CHECK {
            connect_timeout 3
            connect_port 80
        }
    }
    real_server 198.18.0.102 80 {
        weight 2
        HTTP_GET {
            url {
                path /healthz
                status_code 200
            }
            connect_timeout 3
        }
    }
    real_server 198.18.0.103 80 {
        weight 1
    }
}
virtual_server 203.0.113.14 53 {
    lb_algo sh
    lb_kind NAT
    protocol UDP
    real_server 198.18.0.101 53 {
    }
    real_server 198.18.0.102 53 {
    }
}
`,
};

/** The configuration split over files: a glob relative to the including file, nested. */
export const included: ConfigTree = {
  'etc/keepalived.conf': `global_defs {
    router_id lb1
    vrrp_version 3
}
include conf.d/*.conf
`,
  'etc/conf.d/10-vip1.conf': `vrrp_instance VI_1 {
    interface ext0
    virtual_router_id 1
    virtual_ipaddress {
        203.0.113.10/24
    }
}
include ../shared/peer?.conf
`,
  'etc/conf.d/20-vip2.conf': `vrrp_instance VI_2 {
    interface ext0
    virtual_router_id 2
    virtual_ipaddress {
        203.0.113.11/24
    }
}
`,
  'etc/conf.d/.hidden.conf': `this is not read: glob(7) leaves dot files out
`,
  'etc/shared/peer1.conf': `vrrp_sync_group G {
    group {
        VI_1
        VI_2
    }
}
`,
};

/**
 * An LVS-NAT site as keepalived runs it: VRRPv2 (keepalived's default) with a virtual MAC,
 * unicast peers, a sync group moving the VIPs with the servers' gateway, notify scripts, and
 * every checker vipshift runs (TCP_CHECK, HTTP_GET, SSL_GET, MISC_CHECK) with a sorry server,
 * inhibit_on_failure and a drained server; the web VIP serves two ports from one pool.
 */
export const checkers: ConfigTree = {
  'keepalived.conf': `global_defs {
    router_id lb1
}
vrrp_sync_group G_web {
    group {
        VI_web
        VI_gw
    }
    notify_master "/usr/local/sbin/vip-event master"
    notify_backup "/usr/local/sbin/vip-event backup"
}
vrrp_instance VI_web {
    state MASTER
    interface ext0
    virtual_router_id 21
    priority 150
    advert_int 1
    use_vmac
    vmac_xmit_base
    unicast_src_ip 203.0.113.2
    unicast_peer {
        203.0.113.3
    }
    virtual_ipaddress {
        203.0.113.21/24
        203.0.113.22/24
        203.0.113.23/24
    }
}
vrrp_instance VI_gw {
    state MASTER
    interface int0
    virtual_router_id 121
    priority 150
    advert_int 1
    unicast_peer {
        198.18.0.3
    }
    virtual_ipaddress {
        198.18.0.21/24
        198.18.0.22/24
        198.18.0.23/24
    }
}
virtual_server 203.0.113.21 80 {
    delay_loop 3
    lb_algo wrr
    lb_kind NAT
    protocol TCP
    sorry_server 198.18.0.200 80
    real_server 198.18.0.101 80 {
        weight 5
        inhibit_on_failure
        HTTP_GET {
            url {
                path /healthz
                status_code 200
            }
            connect_timeout 2
            retry 3
        }
    }
    real_server 198.18.0.102 80 {
        weight 0
        HTTP_GET {
            url {
                path /healthz
                status_code 200
            }
            connect_timeout 2
            retry 3
        }
    }
}
virtual_server 203.0.113.21 8080 {
    delay_loop 3
    lb_algo wrr
    lb_kind NAT
    protocol TCP
    sorry_server 198.18.0.200 80
    real_server 198.18.0.101 8080 {
        weight 5
        inhibit_on_failure
        HTTP_GET {
            url {
                path /healthz
                status_code 200
            }
            connect_timeout 2
            retry 3
        }
    }
    real_server 198.18.0.102 8080 {
        weight 0
        HTTP_GET {
            url {
                path /healthz
                status_code 200
            }
            connect_timeout 2
            retry 3
        }
    }
}
virtual_server 203.0.113.22 443 {
    delay_loop 5
    lb_algo sh
    lb_kind NAT
    protocol TCP
    real_server 198.18.0.101 8443 {
        SSL_GET {
            url {
                path /
                status_code 200
                status_code 301
            }
            connect_timeout 3
        }
    }
}
virtual_server 203.0.113.23 5432 {
    delay_loop 10
    lb_algo rr
    lb_kind NAT
    protocol TCP
    real_server 198.18.0.111 5432 {
        notify_down "/usr/local/sbin/backend-event down"
        MISC_CHECK {
            misc_path "/usr/local/bin/pg-ready 198.18.0.111"
            misc_timeout 5
        }
    }
    real_server 198.18.0.112 5432 {
        TCP_CHECK {
            connect_port 5432
            connect_timeout 2
        }
    }
}
`,
};

export const corpus: Record<string, ConfigTree> = { activeActive, unicastFast, pool, included, checkers };

const instance = (body: string): string => `vrrp_instance VI_1 {
    interface ext0
${body}
}
`;

/** Broken input: the line our error must name, and whether keepalived -t refuses it too. */
export interface BrokenCase {
  tree: ConfigTree;
  /** The file (relative) and line of the error. */
  file: string;
  line: number;
  error: RegExp;
  keepalivedRejects: boolean;
}

export const broken: Record<string, BrokenCase> = {
  'missing }': {
    tree: { 'k.conf': instance('    virtual_router_id 1\n    virtual_ipaddress {\n        203.0.113.10/24\n') },
    file: 'k.conf',
    line: 1,
    error: /never closed/,
    keepalivedRejects: true,
  },
  'extra }': {
    tree: { 'k.conf': `${instance('    virtual_router_id 1\n    virtual_ipaddress {\n        203.0.113.10/24\n    }')}}\n` },
    file: 'k.conf',
    line: 8,
    error: /unexpected '}'/,
    keepalivedRejects: true,
  },
  'VRID 0': {
    tree: { 'k.conf': instance('    virtual_router_id 0\n    virtual_ipaddress {\n        203.0.113.10/24\n    }') },
    file: 'k.conf',
    line: 3,
    error: /virtual_router_id \(VRID\) 0 is outside 1-255/,
    keepalivedRejects: true,
  },
  'VRID 256': {
    tree: { 'k.conf': instance('    virtual_router_id 256\n    virtual_ipaddress {\n        203.0.113.10/24\n    }') },
    file: 'k.conf',
    line: 3,
    error: /outside 1-255/,
    keepalivedRejects: true,
  },
  'priority 300': {
    tree: { 'k.conf': instance('    virtual_router_id 1\n    priority 300\n    virtual_ipaddress {\n        203.0.113.10/24\n    }') },
    file: 'k.conf',
    line: 4,
    error: /priority 300 is outside 1-255/,
    keepalivedRejects: true,
  },
  'bad address': {
    tree: { 'k.conf': instance('    virtual_router_id 1\n    virtual_ipaddress {\n        203.0.113.300/24\n    }') },
    file: 'k.conf',
    line: 5,
    error: /'203.0.113.300\/24' is not an IPv4 address/,
    keepalivedRejects: true,
  },
  'bad real server': {
    tree: {
      'k.conf': `${instance('    virtual_router_id 1\n    virtual_ipaddress {\n        203.0.113.10/24\n    }')}virtual_server 203.0.113.10 80 {\n    lb_kind NAT\n    real_server 198.18.0.1x 80 {\n    }\n}\n`,
    },
    file: 'k.conf',
    line: 10,
    error: /real_server address '198.18.0.1x' is not an IPv4 address/,
    keepalivedRejects: true,
  },
  'missing include': {
    // keepalived only warns ("Config files missing") and runs without the file; we refuse,
    // since an import that silently lost a file would run a different site.
    tree: { 'k.conf': `global_defs {\n    router_id lb1\n}\ninclude missing.conf\n` },
    file: 'k.conf',
    line: 4,
    error: /cannot read .*missing\.conf: ENOENT/,
    keepalivedRejects: false,
  },
  'missing include in an included file': {
    tree: { 'k.conf': `include sub/a.conf\n`, 'sub/a.conf': `\n\ninclude b.conf\n` },
    file: 'sub/a.conf',
    line: 3,
    error: /cannot read .*sub\/b\.conf: ENOENT/,
    keepalivedRejects: false,
  },
};
