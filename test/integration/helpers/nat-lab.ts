/**
 * A small topology for the NAT engine's integration tests, in network namespaces the tests
 * create and always remove: client ─ appliance ─ (bridge) ─ srv1, srv2.
 *   client  198.51.100.10/24, default via 198.51.100.1
 *   lb      e0 198.51.100.1/24 + the VIPs (/32); bridge i0 198.18.0.2/24 + the inside addresses
 *   srv1    198.18.0.101/24, default via 198.18.0.10 (vip1's inside address: dnat replies)
 *   srv2    198.18.0.102/24, default via 198.18.0.2
 */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '../../..');
const tsx = join(root, 'node_modules/.bin/tsx');
export const PREFIX = 'vtnat';

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
export const inNs = (ns: string, cmd: string, ...args: string[]): string => sh('ip', ['netns', 'exec', ns, cmd, ...args]);

/** Removes namespaces of crashed earlier runs (same prefix). */
export function removeLeftovers(): void {
  for (const line of sh('ip', ['netns', 'list']).split('\n')) {
    const name = line.split(' ')[0];
    if (name?.startsWith(PREFIX)) sh('ip', ['netns', 'del', name]);
  }
}

/** A process in a namespace speaking JSON lines; its reports are kept for waitFor. */
export class Proc {
  readonly child: ChildProcessWithoutNullStreams;
  readonly events: any[] = [];
  private nextId = 1;
  private readonly waiting = new Map<number, (r: any) => void>();
  stderr = '';

  constructor(ns: string, script: string, args: string[] = []) {
    this.child = spawn('ip', ['netns', 'exec', ns, tsx, join(here, script), ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr.on('data', (b: Buffer) => (this.stderr += b.toString()));
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      let msg: any;
      try {
        msg = JSON.parse(line);
      } catch {
        return;
      }
      if (msg.id !== undefined && this.waiting.has(msg.id)) {
        this.waiting.get(msg.id)!(msg);
        this.waiting.delete(msg.id);
      } else {
        this.events.push(msg);
      }
    });
  }

  send(obj: object): void {
    this.child.stdin.write(`${JSON.stringify(obj)}\n`);
  }

  /** A request to the appliance driver; rejects with the engine's error. */
  call(op: string, args: object = {}): Promise<any> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${op}: no answer; stderr: ${this.stderr}`)), 20_000);
      this.waiting.set(id, (r) => {
        clearTimeout(timer);
        if (r.ok) resolve(r.result);
        else reject(new Error(r.error));
      });
      this.send({ id, op, args });
    });
  }

  async waitFor(pred: (e: any) => boolean, timeoutMs = 10_000, what = 'event'): Promise<any> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.find(pred);
      if (found) return found;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}; events: ${JSON.stringify(this.events.slice(-20))}; stderr: ${this.stderr}`);
      await sleep(20);
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface Lab {
  client: string;
  lb: string;
  srv1: string;
  srv2: string;
  all: string[];
}

export function createLab(): Lab {
  const tag = randomBytes(3).toString('hex');
  const lab: Lab = { client: `${PREFIX}${tag}c`, lb: `${PREFIX}${tag}l`, srv1: `${PREFIX}${tag}s1`, srv2: `${PREFIX}${tag}s2`, all: [] };
  lab.all = [lab.client, lab.lb, lab.srv1, lab.srv2];
  for (const ns of lab.all) {
    sh('ip', ['netns', 'add', ns]);
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }
  const ip = (ns: string, ...args: string[]) => sh('ip', ['-n', ns, ...args]);
  ip(lab.lb, 'link', 'add', 'e0', 'type', 'veth', 'peer', 'name', 'e0', 'netns', lab.client);
  ip(lab.lb, 'link', 'add', 'i0', 'type', 'bridge');
  for (const [i, srv] of [lab.srv1, lab.srv2].entries()) {
    ip(lab.lb, 'link', 'add', `p${i + 1}`, 'type', 'veth', 'peer', 'name', 'i0', 'netns', srv);
    ip(lab.lb, 'link', 'set', `p${i + 1}`, 'master', 'i0', 'up');
  }
  ip(lab.client, 'addr', 'add', '198.51.100.10/24', 'dev', 'e0');
  ip(lab.client, 'link', 'set', 'e0', 'up');
  ip(lab.client, 'route', 'add', 'default', 'via', '198.51.100.1');
  ip(lab.lb, 'addr', 'add', '198.51.100.1/24', 'dev', 'e0');
  for (const vip of ['203.0.113.10', '203.0.113.13']) ip(lab.lb, 'addr', 'add', `${vip}/32`, 'dev', 'e0');
  ip(lab.lb, 'addr', 'add', '198.18.0.2/24', 'dev', 'i0');
  for (const inside of ['198.18.0.10', '198.18.0.13']) ip(lab.lb, 'addr', 'add', `${inside}/32`, 'dev', 'i0');
  ip(lab.lb, 'link', 'set', 'e0', 'up');
  ip(lab.lb, 'link', 'set', 'i0', 'up');
  ip(lab.srv1, 'addr', 'add', '198.18.0.101/24', 'dev', 'i0');
  ip(lab.srv2, 'addr', 'add', '198.18.0.102/24', 'dev', 'i0');
  for (const [srv, gw] of [[lab.srv1, '198.18.0.10'], [lab.srv2, '198.18.0.2']] as const) {
    ip(srv, 'link', 'set', 'i0', 'up');
    ip(srv, 'route', 'add', 'default', 'via', gw);
  }
  return lab;
}

export function destroyLab(lab: Lab | undefined): void {
  for (const ns of lab?.all ?? []) {
    try {
      sh('ip', ['netns', 'del', ns]);
    } catch {
      // already gone
    }
  }
}

/** The appliance configuration of the test site; `hold` overrides the hold section. */
export function siteConfig(hold: object = {}): object {
  return {
    appliance: 'lb1',
    api: { listen: '192.0.2.11:8441' },
    interfaces: { external: 'e0', internal: 'i0' },
    hold: { policy: 'queue', queueLength: 4096, ...hold },
    vips: [
      { name: 'vip1', id: 1, address: '203.0.113.10', insideAddress: '198.18.0.10', ports: [7], mode: 'dnat', backends: [{ address: '198.18.0.101' }], owner: 'lb1' },
      {
        name: 'vip4', id: 4, address: '203.0.113.13', insideAddress: '198.18.0.13', ports: [7], mode: 'fullnat', scheduler: 'roundrobin',
        snatPorts: '20000-29999', backends: [{ address: '198.18.0.101' }, { address: '198.18.0.102' }], owner: 'lb1',
      },
    ],
  };
}
