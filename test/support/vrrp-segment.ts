/**
 * A layer-2 segment for VRRP integration tests and the benchmark: one namespace holding a
 * bridge, and one namespace per router with `eth0` on that bridge. Names start with the
 * `vtvrr` prefix so that leftovers of a crashed run can be found and removed.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const PREFIX = 'vtvrr';

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Kill whatever runs in our namespaces and delete them. */
export function removeNamespaces(match: (name: string) => boolean): void {
  const names = sh('ip', ['netns', 'list'])
    .split('\n')
    .map((l) => l.split(' ')[0] as string)
    .filter((n) => n && match(n));
  for (const ns of names) {
    for (const pid of sh('ip', ['netns', 'pids', ns]).split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  }
  for (const ns of names) {
    try {
      sh('ip', ['netns', 'del', ns]);
    } catch {
      /* raced with another cleanup */
    }
  }
}

export function removeLeftovers(prefix = PREFIX): void {
  removeNamespaces((n) => n.startsWith(prefix));
}

export class Segment {
  readonly id: string;
  readonly sw: string;
  readonly dir: string;
  private readonly processes: ChildProcess[] = [];

  /** `prefix`: another test file's own prefix, so each cleans up only its leftovers. */
  constructor(prefix = PREFIX) {
    this.id = prefix + randomBytes(3).toString('hex');
    this.sw = `${this.id}-sw`;
    this.dir = mkdtempSync(join(tmpdir(), `${this.id}-`));
    sh('ip', ['netns', 'add', this.sw]);
    sh('ip', ['-n', this.sw, 'link', 'add', 'br0', 'type', 'bridge']);
    sh('ip', ['-n', this.sw, 'link', 'set', 'br0', 'up']);
  }

  /** A router namespace with eth0 (the given address/24) on the bridge; returns its name. */
  addHost(host: string, cidr: string): string {
    const ns = `${this.id}-${host}`;
    sh('ip', ['netns', 'add', ns]);
    sh('ip', ['-n', this.sw, 'link', 'add', `p${host}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    sh('ip', ['-n', this.sw, 'link', 'set', `p${host}`, 'master', 'br0', 'up']);
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    sh('ip', ['-n', ns, 'addr', 'add', cidr, 'dev', 'eth0']);
    sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    return ns;
  }

  /** Start a process in a namespace; it is killed by destroy(). */
  spawn(ns: string, cmd: string, args: string[]): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.processes.push(child);
    return child;
  }

  /** keepalived (Debian) in a namespace, with its own config, pid files and log. */
  keepalived(ns: string, conf: string): { child: ChildProcess; pidFile: string; pid: () => number } {
    const base = join(this.dir, ns);
    writeFileSync(`${base}.conf`, conf);
    const child = this.spawn(ns, 'keepalived', ['-n', '-l', '-D', '-R', '--vrrp', '-f', `${base}.conf`, '-p', `${base}.pid`, '-r', `${base}.vrrp.pid`]);
    return { child, pidFile: `${base}.vrrp.pid`, pid: () => Number(readFileSync(`${base}.vrrp.pid`, 'utf8').trim()) };
  }

  addresses(ns: string, ifname = 'eth0'): string[] {
    return sh('ip', ['-n', ns, '-4', '-o', 'addr', 'show', 'dev', ifname])
      .split('\n')
      .map((l) => /inet (\S+)/.exec(l)?.[1])
      .filter((a): a is string => Boolean(a));
  }

  destroy(): void {
    for (const p of this.processes) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    removeNamespaces((n) => n.startsWith(this.id));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export function keepalivedConf(o: {
  routerId: string;
  vrid: number;
  priority: number;
  advertInterval: number;
  addresses: string[];
  preempt?: boolean;
  state?: 'MASTER' | 'BACKUP';
  unicast?: { source: string; peers: string[] };
  /** keepalived's vrrp_version; 3 when absent (keepalived's own default is 2). */
  version?: 2 | 3;
  /** keepalived's use_vmac: the VIPs on a macvlan vrrp.{VRID} with the virtual MAC. */
  useVmac?: boolean;
}): string {
  return `global_defs {
  router_id ${o.routerId}
  vrrp_version ${o.version ?? 3}
  vrrp_garp_master_repeat 1
  vrrp_garp_master_delay 0
}
vrrp_instance vi${o.vrid} {
  state ${o.state ?? 'BACKUP'}
  interface eth0
  virtual_router_id ${o.vrid}
  priority ${o.priority}
  advert_int ${o.advertInterval}
  ${o.preempt === false ? 'nopreempt' : ''}
  ${o.useVmac ? 'use_vmac' : ''}
  ${o.unicast ? `unicast_src_ip ${o.unicast.source}\n  unicast_peer {\n${o.unicast.peers.map((p) => `    ${p}`).join('\n')}\n  }` : ''}
  virtual_ipaddress {
${o.addresses.map((a) => `    ${a}${o.useVmac ? '' : ' dev eth0'}`).join('\n')}
  }
}
`;
}

/** One VRRP advert or gratuitous ARP seen on the wire, from `tcpdump -tt -e -n`. */
export interface WireEvent {
  at: number; // ms since the epoch
  kind: 'advert' | 'garp' | 'reply';
  source: string; // IP source of the advert, or the announced address (or answered, for an ARP reply)
  mac: string;
  vrid?: number;
  priority?: number;
}

export function parseTcpdumpLine(line: string): WireEvent | undefined {
  const head = /^(\d+\.\d+) (\S+) > (\S+), ethertype (\w+)/.exec(line);
  if (!head) return undefined;
  const at = Number(head[1]) * 1000;
  const mac = head[2] as string;
  const advert = /: (\S+) > \S+: VRRPv[23], Advertisement, vrid (\d+), prio (\d+)/.exec(line);
  if (advert) return { at, kind: 'advert', source: advert[1] as string, mac, vrid: Number(advert[2]), priority: Number(advert[3]) };
  const garp = /Request who-has (\S+) (?:\(\S+\) )?tell (\S+),/.exec(line);
  if (garp && garp[1] === garp[2]) return { at, kind: 'garp', source: garp[1] as string, mac };
  const reply = /Reply (\S+) is-at (\S+),/.exec(line);
  if (reply) return { at, kind: 'reply', source: reply[1] as string, mac: reply[2] as string };
  return undefined;
}

/** tcpdump on the bridge: every advert and gratuitous ARP of the segment. */
export class Capture {
  readonly events: WireEvent[] = [];
  private readonly child: ChildProcess;
  readonly ready: Promise<void>;

  constructor(segment: Segment) {
    this.child = segment.spawn(segment.sw, 'tcpdump', ['-l', '-n', '-tt', '-e', '-i', 'br0', 'ip proto 112 or arp']);
    let buf = '';
    this.child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const l of lines) {
        const e = parseTcpdumpLine(l);
        if (e) this.events.push(e);
      }
    });
    this.ready = new Promise((resolve) => {
      this.child.stderr?.on('data', (d: Buffer) => {
        if (d.toString().includes('listening on')) resolve();
      });
    });
  }

  stop(): void {
    this.child.kill('SIGTERM');
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(what: string, probe: () => T | undefined | false, timeoutMs: number, everyMs = 5): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** `vipshift vrrp` in a namespace: its JSON log lines, and its stdin commands. */
export class VipshiftVrrp {
  readonly logs: Record<string, unknown>[] = [];
  readonly child: ChildProcess;

  constructor(segment: Segment, ns: string, vrrp: unknown, cli = join(import.meta.dirname, '../../dist/cli.js')) {
    const file = join(segment.dir, `${ns}.vipshift.json`);
    writeFileSync(file, JSON.stringify({ vrrp }));
    this.child = segment.spawn(ns, process.execPath, [cli, 'vrrp', '--config', file]);
    let buf = '';
    this.child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const l of lines) {
        try {
          this.logs.push(JSON.parse(l) as Record<string, unknown>);
        } catch {
          /* not a log line */
        }
      }
    });
  }

  started(): Promise<unknown> {
    return waitFor('vipshift vrrp to start', () => this.logs.find((l) => l.msg === 'started'), 10_000);
  }

  transitions(to?: string): { at: number; to: string; from: string; reason: string }[] {
    return this.logs.filter((l) => l.msg === 'transition' && (!to || l.to === to)) as never;
  }

  async command(line: string, reply: string): Promise<Record<string, unknown>> {
    const before = this.logs.length;
    this.child.stdin?.write(`${line}\n`);
    return waitFor(`reply to '${line}'`, () => this.logs.slice(before).find((l) => l.msg === reply), 5000);
  }

  async state(): Promise<{ instances: { state: string; advertsReceived: number; advertsSent: number }[]; counters: Record<string, unknown> }> {
    return (await this.command('state', 'state')) as never;
  }
}
