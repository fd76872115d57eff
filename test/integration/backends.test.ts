/**
 * Backends on the kernel: a fullnat VIP and a dnat VIP, each with a pool on port 443 mapped to
 * the servers' 8443, under steady load from real TCP clients; drain, health down with
 * `onDown` keep and reset, no backend up, a reload that adds a backend, removes another and
 * adds a VIP under load (the new VIP's connections in the access table mirror and, through a
 * keeper the same reload adds, on that keeper), an invalid reload, Maglev's retention against
 * source hash when one of ten backends goes, and a change kept across a restart of the
 * appliance. The appliance runs as `vipshift appliance` composes it (startAppliance).
 * Topology (namespaces made and removed here):
 *   client  198.51.100.10/24 (+ 198.51.100.100-239 for the hash probes), default via .1
 *   lb      e0 198.51.100.1/24 (+ VIPs)  ─  i0 198.18.0.2/24 (+ inside addresses); lo 192.0.2.11 (agent API)
 *   srv     i0 198.18.0.101-110/24: ten backends in one namespace, default via 198.18.0.10
 *           (the dnat VIP's inside address: its replies go back through the appliance);
 *           the keeper of server 198.18.0.107 on 198.18.0.107:9443
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Proc, inNs, sh, sleep } from './helpers/nat-lab.js';
import { createClusterCredentials } from '../../src/api/auth.js';

const PREFIX = 'vtbk';
const tag = randomBytes(3).toString('hex');
const ns = { client: `${PREFIX}${tag}c`, lb: `${PREFIX}${tag}l`, srv: `${PREFIX}${tag}s` };
const dir = mkdtempSync(join(tmpdir(), 'vtbk-'));
const file = join(dir, 'lb1.yaml');
const SOURCES = Array.from({ length: 140 }, (_, i) => `198.51.100.${100 + i}`);
let appliance: Proc;
let client: Proc;
let server: Proc;
let keeper: ChildProcess | undefined;
const pki = join(dir, 'pki');
const KEEPER = 'http://198.18.0.107:9443';

const backends = (from: number, to: number, extra = '') =>
  Array.from({ length: to - from + 1 }, (_, i) => `      - { address: 198.18.0.${from + i}, port: 8443${extra} }`).join('\n');
const vip = (name: string, id: number, address: string, inside: string, mode: string, body: string) => `  - name: ${name}
    id: ${id}
    address: ${address}
    insideAddress: ${inside}
    ports: [443]
    mode: ${mode}
    owner: lb1
${mode === 'fullnat' ? `    snatPorts: "${20000 + id * 1000}-${20999 + id * 1000}"\n` : ''}${body}`;
const config = (vips: string[], keepers = '') => `# the backends test's appliance
appliance: lb1
api: { listen: "192.0.2.11:8441" }
interfaces: { external: e0, internal: i0 }
failover: { standby: false }
${keepers}vips:
${vips.join('\n')}
`;
const web = vip('web', 13, '203.0.113.13', '198.18.0.13', 'fullnat', `    backends:\n${backends(101, 103)}\n`);
const shop = vip('shop', 10, '203.0.113.10', '198.18.0.10', 'dnat', `    onDown: reset\n    backends:\n${backends(104, 105)}\n`);
const ring = vip('ring', 20, '203.0.113.20', '198.18.0.20', 'fullnat', `    scheduler: maglev\n    backends:\n${backends(101, 110)}\n`);
const mod = vip('mod', 21, '203.0.113.21', '198.18.0.21', 'fullnat', `    scheduler: sourcehash\n    backends:\n${backends(101, 110)}\n`);

const call = (p: Proc, op: string, args: object = {}) => p.call(op, args);
type Fate = { backend?: string; peer?: string; fate: string };
const load = (host: string, count: number, every = 20, hold = 600): Promise<Fate[]> => call(client, 'load', { host, port: 443, every, hold, count });
const failed = (fates: Fate[]) => fates.filter((f) => f.fate !== 'ok');
const hits = (fates: Fate[]) => new Set(fates.map((f) => f.backend));
const status = async (name: string) => ((await call(appliance, 'status')).vips as any[]).find((v) => v.name === name);

beforeAll(async () => {
  for (const line of sh('ip', ['netns', 'list']).split('\n')) {
    const name = line.split(' ')[0];
    if (name?.startsWith(PREFIX)) sh('ip', ['netns', 'del', name]);
  }
  for (const n of Object.values(ns)) {
    sh('ip', ['netns', 'add', n]);
    sh('ip', ['-n', n, 'link', 'set', 'lo', 'up']);
  }
  const ip = (n: string, ...args: string[]) => sh('ip', ['-n', n, ...args]);
  ip(ns.lb, 'link', 'add', 'e0', 'type', 'veth', 'peer', 'name', 'e0', 'netns', ns.client);
  ip(ns.lb, 'link', 'add', 'i0', 'type', 'veth', 'peer', 'name', 'i0', 'netns', ns.srv);
  ip(ns.client, 'addr', 'add', '198.51.100.10/24', 'dev', 'e0');
  for (const s of SOURCES) ip(ns.client, 'addr', 'add', `${s}/24`, 'dev', 'e0');
  ip(ns.lb, 'addr', 'add', '198.51.100.1/24', 'dev', 'e0');
  ip(ns.lb, 'addr', 'add', '198.18.0.2/24', 'dev', 'i0');
  for (let i = 101; i <= 110; i++) ip(ns.srv, 'addr', 'add', `198.18.0.${i}/24`, 'dev', 'i0');
  for (const [n, ifs] of [[ns.client, ['e0']], [ns.lb, ['e0', 'i0']], [ns.srv, ['i0']]] as const) for (const i of ifs) ip(n, 'link', 'set', i, 'up');
  ip(ns.client, 'route', 'add', 'default', 'via', '198.51.100.1');
  ip(ns.srv, 'route', 'add', 'default', 'via', '198.18.0.10');
  ip(ns.lb, 'addr', 'add', '192.0.2.11/32', 'dev', 'lo');
  createClusterCredentials(pki, { lb1: 'appliance', srv7: 'keeper' });
  server = new Proc(ns.srv, 'backends-peer.ts', ['server', '8443']);
  await server.waitFor((e) => e.event === 'listening');
  client = new Proc(ns.client, 'backends-peer.ts', ['client']);
  writeFileSync(file, config([web, shop, ring, mod]));
  appliance = new Proc(ns.lb, 'backends-appliance.ts');
  await call(appliance, 'start', { file, credentialsDir: pki });
}, 60_000);

/** `vipshift keeper` for server 198.18.0.107, knowing the VIPs the appliance will have. */
async function startKeeper(vips: string[]): Promise<void> {
  const keeperFile = join(dir, 'srv7.yaml');
  writeFileSync(keeperFile, `keeper: srv7\napi: { listen: "198.18.0.107:9443" }\ndatabase: ${join(dir, 'srv7.sqlite')}\naddresses: [198.18.0.107]\nvips:\n${vips.join('\n')}\n`);
  const root = resolve(__dirname, '../..');
  const child = spawn('ip', ['netns', 'exec', ns.srv, process.execPath, '--import', 'tsx', join(root, 'src/cli.ts'), 'keeper', '--config', keeperFile, '--credentials', pki], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
  keeper = child;
  let stderr = '';
  child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  await new Promise<void>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`keeper did not start: ${stderr}`)), 30_000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.includes('"keeper started"')) {
        clearTimeout(timer);
        res();
      }
    });
    child.once('exit', (code) => rej(new Error(`keeper exited with ${code}: ${stderr}`)));
  });
}

afterAll(async () => {
  keeper?.kill();
  for (const p of [appliance, client, server]) await p?.stop();
  for (const n of Object.values(ns)) {
    try {
      sh('ip', ['netns', 'del', n]);
    } catch {
      // already gone
    }
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('backends on the kernel', () => {
  it('spreads new connections over the pools, 443 → 8443 in both modes, the dnat servers seeing the client', async () => {
    const [f, d] = await Promise.all([load('203.0.113.13', 30), load('203.0.113.10', 20)]);
    expect(failed([...f, ...d])).toEqual([]);
    expect(hits(f)).toEqual(new Set(['198.18.0.101:8443', '198.18.0.102:8443', '198.18.0.103:8443']));
    expect(hits(d)).toEqual(new Set(['198.18.0.104:8443', '198.18.0.105:8443']));
    const shop1 = await status('shop');
    expect(shop1.backends.map((b: any) => [b.address, b.port, b.weight, b.state])).toEqual([
      ['198.18.0.104', 8443, 1, 'up'],
      ['198.18.0.105', 8443, 1, 'up'],
    ]);
    // dnat: the server sees the client's address; fullnat: the VIP's inside address.
    expect(new Set(d.map((x) => x.peer))).toEqual(new Set(['198.51.100.10']));
    expect(new Set(f.map((x) => x.peer))).toEqual(new Set(['198.18.0.13']));
  });

  it('weight 0 drains: live connections finish, no new one reaches the backend', async () => {
    const live = await call(client, 'open', { conn: 'live', host: '203.0.113.13', port: 443 });
    const drained = live.backend.split(':')[0];
    // Drain the backend the live connection is on.
    const during = load('203.0.113.13', 30, 20, 400);
    await sleep(150);
    const r = await call(appliance, 'changeBackend', { vip: 'web', change: { action: 'drain', address: drained, port: 8443 } });
    const entry = r.backends.find((b: any) => b.address === drained);
    expect(entry).toMatchObject({ weight: 0, state: 'drained' });
    expect(entry.connections).toBeGreaterThanOrEqual(1);
    expect(failed(await during)).toEqual([]);
    expect((await call(client, 'ping', { conn: 'live' })).ok).toBe(true);
    const after = await load('203.0.113.13', 20);
    expect(failed(after)).toEqual([]);
    expect([...hits(after)].some((b) => b?.startsWith(`${drained}:`))).toBe(false);
    // Persisted in the file, comments kept.
    expect(readFileSync(file, 'utf8')).toMatch(new RegExp(`^# the backends test's appliance[\\s\\S]*address: ${drained.replace(/\./g, '\\.')}, port: 8443, weight: 0`));
    await call(client, 'close', { conn: 'live' });
    await call(appliance, 'changeBackend', { vip: 'web', change: { action: 'weight', address: drained, port: 8443, weight: 1 } });
  });

  it('a backend down keeps its live connections by default, and onDown reset resets them at once', async () => {
    const keep = await call(client, 'open', { conn: 'keep', host: '203.0.113.13', port: 443 });
    const [address] = keep.backend.split(':');
    await call(appliance, 'setBackendHealth', { vip: 'web', address, port: 8443, up: false, reason: 'connect: refused' });
    expect((await call(client, 'ping', { conn: 'keep' })).ok).toBe(true);
    const web1 = await status('web');
    expect(web1.backends.find((b: any) => b.address === address)).toMatchObject({ state: 'down', reason: 'connect: refused' });
    const others = await load('203.0.113.13', 20, 10, 100);
    expect(failed(others)).toEqual([]);
    expect([...hits(others)].some((b) => b?.startsWith(`${address}:`))).toBe(false);
    await call(appliance, 'setBackendHealth', { vip: 'web', address, port: 8443, up: true, reason: 'connect: ok' });
    await call(client, 'close', { conn: 'keep' });

    // shop has onDown: reset.
    const opened = await Promise.all(['r1', 'r2', 'r3', 'r4'].map((conn) => call(client, 'open', { conn, host: '203.0.113.10', port: 443 }).then((o) => ({ conn, ...o }))));
    const doomed = opened.filter((o) => o.backend.startsWith('198.18.0.104:'));
    expect(doomed.length).toBeGreaterThan(0);
    await call(appliance, 'setBackendHealth', { vip: 'shop', address: '198.18.0.104', port: 8443, up: false, reason: 'timeout' });
    for (const o of opened) {
      const ping = await call(client, 'ping', { conn: o.conn });
      if (o.backend.startsWith('198.18.0.104:')) expect(ping).toEqual({ ok: false, error: 'ECONNRESET' });
      else expect(ping.ok).toBe(true);
    }
    const rest = await load('203.0.113.10', 10, 10, 100);
    expect(failed(rest)).toEqual([]);
    expect(hits(rest)).toEqual(new Set(['198.18.0.105:8443']));
    for (const o of opened) await call(client, 'close', { conn: o.conn });
  });

  it('no backend up: new connections are refused with a reset, counted; they come back with their backends', async () => {
    await call(appliance, 'setBackendHealth', { vip: 'shop', address: '198.18.0.105', port: 8443, up: false, reason: 'timeout' });
    const before = (await status('shop')).unavailable;
    const refused = await load('203.0.113.10', 5, 10, 100);
    // A reset answering a SYN: the client's connect is refused.
    expect(refused.map((f) => f.fate)).toEqual(Array(5).fill('ECONNREFUSED'));
    expect((await status('shop')).unavailable).toBeGreaterThanOrEqual(before + 5);
    for (const a of ['198.18.0.104', '198.18.0.105']) await call(appliance, 'setBackendHealth', { vip: 'shop', address: a, port: 8443, up: true, reason: 'ok' });
    expect(failed(await load('203.0.113.10', 10, 10, 100))).toEqual([]);
  });

  it('a reload adding a backend, removing another, a VIP and a keeper loses no connection under load; the new VIP is mirrored and replicated', async () => {
    const extra = vip('extra', 30, '203.0.113.30', '198.18.0.30', 'fullnat', `    backends:\n${backends(107, 108)}\n`);
    await startKeeper([web, shop, ring, mod, extra]);
    const held = ['w1', 'w2', 'w3', 'w4', 'w5', 'w6'];
    const live: { backend: string }[] = [];
    for (const conn of held) live.push(await call(client, 'open', { conn, host: '203.0.113.13', port: 443 }));
    // Round robin over three: one at least is on the backend the reload removes.
    expect(live.some((l) => l.backend === '198.18.0.103:8443')).toBe(true);
    const during = load('203.0.113.13', 60, 20, 800);
    await sleep(300);
    const web2 = vip('web', 13, '203.0.113.13', '198.18.0.13', 'fullnat', `    backends:\n${backends(101, 102)}\n${backends(106, 106)}\n`);
    writeFileSync(file, config([web2, shop, ring, mod, extra], `keepers:\n  - { name: srv7, server: 198.18.0.107, api: "${KEEPER}" }\n`));
    expect(await call(appliance, 'reload')).toEqual({ added: ['extra'], removed: [], changed: ['web'] });
    const fates = await during;
    expect(failed(fates)).toEqual([]);
    expect(hits(fates).has('198.18.0.103:8443')).toBe(true); // before the reload
    // Live connections, those on the removed backend too, go on.
    for (const conn of held) expect(await call(client, 'ping', { conn })).toEqual({ ok: true });
    const after = await Promise.all([load('203.0.113.13', 30, 10, 100), load('203.0.113.30', 10, 10, 100)]);
    expect(failed(after.flat())).toEqual([]);
    expect(hits(after[0])).toEqual(new Set(['198.18.0.101:8443', '198.18.0.102:8443', '198.18.0.106:8443']));
    expect(hits(after[1])).toEqual(new Set(['198.18.0.107:8443', '198.18.0.108:8443']));
    expect(await call(appliance, 'modeTable')).toMatchObject({ web: 'normal', extra: 'normal' });

    // The new VIP's live connections: in the mirror, and those to 198.18.0.107 on its keeper.
    const opened = await Promise.all(['x1', 'x2', 'x3', 'x4', 'x5', 'x6'].map((conn) => call(client, 'open', { conn, host: '203.0.113.30', port: 443 })));
    const mine = opened.filter((o) => o.backend === '198.18.0.107:8443').map((o) => o.port).sort((a, b) => a - b);
    expect(mine.length).toBeGreaterThan(0);
    const ports = opened.map((o) => o.port).sort((a, b) => a - b);
    let seen: { entries: { from: string; clientPorts: number[] }; copies: number[] } | undefined;
    for (let t0 = Date.now(); Date.now() - t0 < 4000; await sleep(100)) {
      seen = { entries: await call(appliance, 'entries', { vip: 'extra' }), copies: await call(appliance, 'keeperCopies', { url: KEEPER, address: '203.0.113.30' }) };
      if (seen.entries.from === 'mirror' && mine.every((p) => seen!.copies.includes(p))) break;
    }
    expect(seen!.entries.from).toBe('mirror');
    expect(seen!.entries.clientPorts.filter((p) => ports.includes(p))).toEqual(ports);
    // (The keeper also holds the copies of the closed connections above until their entries end.)
    expect(seen!.copies).toEqual(expect.arrayContaining(mine));
    expect(seen!.copies.filter((p) => ports.includes(p))).toEqual(mine);
    for (const conn of [...held, 'x1', 'x2', 'x3', 'x4', 'x5', 'x6']) await call(client, 'close', { conn });
  });

  it('an invalid reload changes nothing and says where', async () => {
    const good = readFileSync(file, 'utf8');
    // What a reload would change: the chains, the pool maps and the mode sets (counters move on).
    const ruleset = () =>
      [inNs(ns.lb, 'nft', 'list', 'chains', 'ip'), ...['slots_web', 'pool_web', 'ports_web', 'vip_dnat'].map((m) => inNs(ns.lb, 'nft', 'list', 'map', 'ip', 'vipshift', m)), inNs(ns.lb, 'nft', 'list', 'set', 'ip', 'vipshift', 'vips_normal')].join('');
    const before = ruleset();
    writeFileSync(file, good.replace('address: 198.18.0.106, port: 8443', 'address: 198.18.0.106, port: 84430'));
    await expect(call(appliance, 'reload')).rejects.toThrow(new RegExp(`ConfigError: ${file}:\\d+: vips\\[0\\]\\.backends\\[2\\]\\.port: expected a port in 1\\.\\.65535`));
    writeFileSync(file, good.replace('ports: [443]', 'ports: [443, 444]'));
    await expect(call(appliance, 'reload')).rejects.toThrow(/ReconfigureError: VIP web: ports cannot change at run time/);
    expect(ruleset()).toBe(before);
    writeFileSync(file, good);
    expect(failed(await load('203.0.113.13', 10, 10, 100))).toEqual([]);
  });

  it('maglev keeps ≥ 85 % of clients on their backend when one of ten goes; source hash keeps far fewer', async () => {
    const probe = (host: string): Promise<Record<string, string>> => call(client, 'probe', { host, port: 443, sources: SOURCES });
    const before = { ring: await probe('203.0.113.20'), mod: await probe('203.0.113.21') };
    expect(new Set(Object.values(before.ring)).size).toBeGreaterThanOrEqual(9);
    for (const v of ['ring', 'mod']) await call(appliance, 'setBackendHealth', { vip: v, address: '198.18.0.104', port: 8443, up: false, reason: 'timeout' });
    const after = { ring: await probe('203.0.113.20'), mod: await probe('203.0.113.21') };
    const kept = (v: 'ring' | 'mod') => SOURCES.filter((s) => before[v][s] === after[v][s]).length / SOURCES.length;
    expect(Object.values(after.ring).some((b) => b.startsWith('failed') || b.startsWith('198.18.0.104:'))).toBe(false);
    expect(kept('ring')).toBeGreaterThanOrEqual(0.85);
    expect(kept('mod')).toBeLessThan(kept('ring'));
  });

  it('a backend change is kept across a restart: the appliance runs on its file, with no controller to ask', async () => {
    await call(appliance, 'changeBackend', { vip: 'shop', change: { action: 'drain', address: '198.18.0.105', port: 8443 } });
    await appliance.stop();
    appliance = new Proc(ns.lb, 'backends-appliance.ts');
    await call(appliance, 'start', { file, credentialsDir: pki });
    expect((await status('shop')).backends.map((b: any) => [b.address, b.weight, b.state])).toEqual([
      ['198.18.0.104', 1, 'up'],
      ['198.18.0.105', 0, 'drained'],
    ]);
    const after = await load('203.0.113.10', 10, 10, 100);
    expect(failed(after)).toEqual([]);
    expect(hits(after)).toEqual(new Set(['198.18.0.104:8443']));
  });
});
