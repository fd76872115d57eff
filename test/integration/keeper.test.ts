/**
 * The keeper on the real thing: its process with SQLite on disk, killed and restarted; the
 * kernel's sock_diag in a network namespace with real TCP connections; the rebuild served by
 * the keeper's API. Namespaces are named vtkee<hex> and always removed.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { Registry } from 'prom-client';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClusterCredentials, loadCredentials } from '../../src/api/auth.js';
import { KeeperClient } from '../../src/keeper/client.js';
import { parseKeeperConfig } from '../../src/config/keeper.js';
import { Keeper } from '../../src/keeper/keeper.js';
import { REBUILD_STATUS } from '../../src/keeper/rebuild.js';
import { Conntrack } from '../../src/netlink/conntrack.js';
import { TCP_CONNTRACK_ESTABLISHED } from '../../src/netlink/ctnetlink.js';
import { RECORD_SIZE, readRecord, type EntryRecord } from '../../src/netlink/entry-record.js';
import { SockDiag, TCP_ESTABLISHED } from '../../src/netlink/sockdiag.js';
import { ServerSockets } from '../../src/keeper/server-sockets.js';
import { TEST_VIPS, many, records, entry } from '../unit/keeper-helpers.js';

const ROOT = resolve(__dirname, '../..');
const PREFIX = 'vtkee';
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const inNs = (ns: string, cmd: string, args: string[]) => sh('ip', ['netns', 'exec', ns, cmd, ...args]);
const none = Buffer.alloc(0);

function removeLeftovers(): void {
  for (const line of sh('ip', ['netns', 'list']).split('\n')) {
    const name = line.split(' ')[0];
    if (name?.startsWith(PREFIX)) sh('ip', ['netns', 'del', name]);
  }
}

let dir: string;
beforeAll(() => {
  removeLeftovers();
  dir = mkdtempSync(join(tmpdir(), 'vipshift-keeper-it-'));
  createClusterCredentials(join(dir, 'pki'), { srv1: 'keeper', lb1: 'appliance', lb2: 'appliance' });
});
afterAll(() => {
  removeLeftovers();
  rmSync(dir, { recursive: true, force: true });
});

/** Starts `vipshift keeper` and resolves with its URL from its "keeper started" log line. */
function startKeeper(config: string): Promise<{ child: ChildProcess; url: string; exited: Promise<number | null> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/cli.ts'), 'keeper', '--config', config, '--credentials', join(dir, 'pki')], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`keeper did not start: ${stderr}`)), 20_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const log = JSON.parse(line) as { msg?: string; listen?: string };
      if (log.msg === 'keeper started') {
        clearTimeout(timer);
        res({ child, url: log.listen!, exited });
      }
    });
    void exited.then((code) => rej(new Error(`keeper exited with ${code}: ${stderr}`)));
  });
}

const withoutTimeout = (r: EntryRecord) => ({ ...r, timeout: 0 });
const sorted = (b: Buffer) => Array.from({ length: b.length / RECORD_SIZE }, (_, i) => withoutTimeout(readRecord(b, i * RECORD_SIZE))).sort((x, y) => x.client.port - y.client.port || x.vip.address.localeCompare(y.vip.address));

describe('keeper process', () => {
  it('keeps every copy across SIGKILL and restart', async () => {
    const config = join(dir, 'srv1.yaml');
    writeFileSync(config, `keeper: srv1\napi: { listen: "127.0.0.1:0" }\ndatabase: ${join(dir, 'srv1.sqlite')}\naddresses: [198.18.0.101]\n${TEST_VIPS}`);
    const first = await startKeeper(config);
    const lb1 = new KeeperClient(first.url, loadCredentials(join(dir, 'pki'), 'lb1'));
    const all = many(20_000);
    for (let b = 0; b < 20; b++) await lb1.push({ upserts: all.subarray(b * 1000 * RECORD_SIZE, (b + 1) * 1000 * RECORD_SIZE), deletes: none });
    await lb1.push({ upserts: many(100, '203.0.113.11'), deletes: none });
    const before = await lb1.copies('203.0.113.10');
    expect(before.length).toBe(20_000 * RECORD_SIZE);
    lb1.close();
    first.child.kill('SIGKILL');
    expect(await first.exited).toBe(null);

    const second = await startKeeper(config);
    const lb2 = new KeeperClient(second.url, loadCredentials(join(dir, 'pki'), 'lb2'));
    const after = await lb2.copies('203.0.113.10');
    expect(sorted(after)).toEqual(sorted(before));
    expect(sorted(after)[0]).toEqual(withoutTimeout(entry(0)));
    expect((await lb2.status()).vips.map((v) => [v.vip, v.copies])).toEqual([
      ['203.0.113.10', 20_000],
      ['203.0.113.11', 100],
    ]);
    lb2.close();
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
  });
});

/**
 * A server namespace (198.18.0.101, echo on 7 and 80, and a port no VIP has) and a client
 * namespace (198.51.100.10 as a dnat client, 198.18.0.13 as vip4's inside address for a
 * fullnat-looking connection, 198.18.0.2 as an appliance's health check) on one veth pair.
 */
describe('socket table of a real server', () => {
  const tag = randomBytes(3).toString('hex');
  const srv = `${PREFIX}s${tag}`;
  const cli = `${PREFIX}c${tag}`;
  let server: ChildProcess | undefined;
  let client: ChildProcess | undefined;
  let clientPorts: { dnat: number[]; other: number[]; fullnat: number[]; check: number[] };

  beforeAll(async () => {
    sh('ip', ['netns', 'add', srv]);
    sh('ip', ['netns', 'add', cli]);
    inNs(srv, 'ip', ['link', 'add', 'int0', 'type', 'veth', 'peer', 'name', 'int0c', 'netns', cli]);
    for (const [ns, ifname, addrs, peerNet] of [
      [srv, 'int0', ['198.18.0.101/24'], '198.51.100.0/24'],
      [cli, 'int0c', ['198.51.100.10/24', '198.18.0.13/24', '198.18.0.2/24'], ''],
    ] as const) {
      inNs(ns, 'ip', ['link', 'set', 'lo', 'up']);
      for (const a of addrs) inNs(ns, 'ip', ['addr', 'add', a, 'dev', ifname]);
      inNs(ns, 'ip', ['link', 'set', ifname, 'up']);
      if (peerNet) inNs(ns, 'ip', ['route', 'add', peerNet, 'dev', ifname]);
    }
    server = spawn('ip', ['netns', 'exec', srv, process.execPath, '-e', `
      const net = require('node:net');
      let n = 0;
      for (const p of [7, 80, 9]) net.createServer((s) => s.pipe(s)).listen(p, '198.18.0.101', () => { if (++n === 3) console.log('ready'); });
    `], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((res) => server!.stdout!.once('data', () => res()));
    client = spawn('ip', ['netns', 'exec', cli, process.execPath, '-e', `
      const net = require('node:net');
      const open = (port, localAddress) => new Promise((res) => { const s = net.connect({ host: '198.18.0.101', port, localAddress }, () => res(s.localPort)); });
      (async () => {
        const dnat = [];
        for (let i = 0; i < 30; i++) dnat.push(await open(i % 2 ? 7 : 80, '198.51.100.10'));
        const other = [await open(9, '198.51.100.10')];
        const fullnat = [await open(80, '198.18.0.13')];
        const check = [await open(80, '198.18.0.2')];
        console.log(JSON.stringify({ dnat, other, fullnat, check }));
      })();
    `], { stdio: ['ignore', 'pipe', 'inherit'] });
    clientPorts = await new Promise((res) => createInterface({ input: client!.stdout! }).once('line', (l) => res(JSON.parse(l))));
  });

  afterAll(() => {
    client?.kill('SIGKILL');
    server?.kill('SIGKILL');
    for (const ns of [cli, srv]) {
      try {
        sh('ip', ['netns', 'del', ns]);
      } catch {
        // already gone
      }
    }
  });

  it('sock_diag lists the established connections on the asked ports, with tcp_info', async () => {
    const sd = new SockDiag({ netns: srv });
    try {
      const sockets = await sd.tcpSockets([7, 80]);
      const seen = sockets.map((s) => `${s.dst}:${s.dport}>${s.sport}`).sort();
      const expected = [
        ...clientPorts.dnat.map((p, i) => `198.51.100.10:${p}>${i % 2 ? 7 : 80}`),
        `198.18.0.13:${clientPorts.fullnat[0]}>80`,
        `198.18.0.2:${clientPorts.check[0]}>80`,
      ].sort();
      expect(seen).toEqual(expected);
      for (const s of sockets) {
        expect(s).toMatchObject({ state: TCP_ESTABLISHED, src: '198.18.0.101' });
        expect(s.tcpInfo?.state).toBe(TCP_ESTABLISHED);
      }
      expect((await sd.tcpSockets([9])).map((s) => s.dport)).toEqual(clientPorts.other);
    } finally {
      sd.close();
    }
  });

  it('the keeper rebuilds dnat records of exactly those connections and merges them with its copies', async () => {
    const config = parseKeeperConfig(
      `keeper: srv1
api: { listen: "127.0.0.1:0" }
database: ${join(dir, 'rebuild.sqlite')}
sockdiag: true
addresses: [198.18.0.101]
vips:
  - { name: vip1, id: 1, address: 203.0.113.10, insideAddress: 198.18.0.10, ports: [7, 80], mode: dnat, backends: [{ address: 198.18.0.101 }], owner: lb1 }
  - { name: vip4, id: 4, address: 203.0.113.13, insideAddress: 198.18.0.13, ports: [7, 80], mode: fullnat, backends: [{ address: 198.18.0.101 }], scheduler: roundrobin, snatPorts: "20000-29999", owner: lb1 }
`,
      'rebuild.yaml',
    );
    const keeper = await Keeper.start(config, { credentials: loadCredentials(join(dir, 'pki'), 'srv1'), socketTable: new ServerSockets({ netns: srv }), logger: pino({ level: 'silent' }), metrics: new Registry() });
    const lb2 = new KeeperClient(keeper.url, loadCredentials(join(dir, 'pki'), 'lb2'));
    try {
      const rebuilt = await lb2.copies('vip1', 'socket-table');
      const got = sorted(rebuilt);
      const expected = clientPorts.dnat.map((p, i) => ({ port: p, vipPort: i % 2 ? 7 : 80 })).sort((a, b) => a.port - b.port);
      expect(got.map((r) => [r.client.port, r.vip.port])).toEqual(expected.map((e) => [e.port, e.vipPort]));
      for (const r of got) {
        expect(r).toMatchObject({
          client: { address: '198.51.100.10' },
          vip: { address: '203.0.113.10' },
          server: { address: '198.18.0.101', port: r.vip.port },
          proto: 6,
          tcpState: TCP_CONNTRACK_ESTABLISHED,
          status: REBUILD_STATUS,
          mark: 1,
        });
        expect(r.inside).toBeUndefined();
        // Linux offers window scaling by default on both ends.
        expect(r.tcpWindow.wscaleOriginal).toBeGreaterThan(0);
      }

      // Copies of ten of the connections, with a state of their own: merged keeps them and rebuilds the rest.
      const copied = got.slice(0, 10).map((r) => ({ ...r, tcpState: 5, timeout: 300 }));
      await lb2.push({ upserts: records(copied), deletes: none });
      const merged = sorted(await lb2.copies('vip1'));
      expect(merged.length).toBe(30);
      expect(merged.filter((r) => r.tcpState === 5).map((r) => r.client.port)).toEqual(copied.map((r) => r.client.port));
      expect((await lb2.copies('vip1', 'copies')).length).toBe(10 * RECORD_SIZE);
      await expect(lb2.copies('vip4', 'socket-table')).rejects.toMatchObject({ status: 409 });

      // A takeover appliance creates the rebuilt records as they come: the kernel takes every one.
      const lb = `${PREFIX}a${tag}`;
      sh('ip', ['netns', 'add', lb]);
      const ct = new Conntrack({ netns: lb });
      try {
        expect(await ct.createFromRecords(rebuilt)).toEqual({ created: 30, existing: 0, failures: [] });
        const back: Buffer[] = [];
        await ct.dumpRecords(1, (b) => back.push(b));
        const installed = sorted(Buffer.concat(back));
        expect(installed.map((r) => [r.client.address, r.client.port, r.vip.address, r.vip.port, r.server.address, r.tcpState, r.mark])).toEqual(
          got.map((r) => [r.client.address, r.client.port, r.vip.address, r.vip.port, r.server.address, r.tcpState, r.mark]),
        );
      } finally {
        ct.close();
        sh('ip', ['netns', 'del', lb]);
      }
    } finally {
      lb2.close();
      await keeper.close();
    }
  });
});
