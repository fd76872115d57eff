/**
 * Backends on the kernel: a fullnat VIP and a dnat VIP, each with a pool on port 443 mapped to
 * the servers' 8443, under steady load from real TCP clients; drain, health down with
 * `onDown` keep and reset, no backend up, a reload that adds a backend, removes another and
 * adds a VIP under load, an invalid reload, Maglev's retention against source hash when one
 * of ten backends goes, and a change kept across a restart of the appliance. Topology (namespaces made and removed here):
 *   client  198.51.100.10/24 (+ 198.51.100.100-239 for the hash probes), default via .1
 *   lb      e0 198.51.100.1/24 (+ VIPs)  ─  i0 198.18.0.2/24 (+ inside addresses)
 *   srv     i0 198.18.0.101-110/24: ten backends in one namespace, default via 198.18.0.10
 *           (the dnat VIP's inside address: its replies go back through the appliance)
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Proc, inNs, sh, sleep } from './helpers/nat-lab.js';

const PREFIX = 'vtbk';
const tag = randomBytes(3).toString('hex');
const ns = { client: `${PREFIX}${tag}c`, lb: `${PREFIX}${tag}l`, srv: `${PREFIX}${tag}s` };
const dir = mkdtempSync(join(tmpdir(), 'vtbk-'));
const file = join(dir, 'lb1.yaml');
const SOURCES = Array.from({ length: 140 }, (_, i) => `198.51.100.${100 + i}`);
let appliance: Proc;
let client: Proc;
let server: Proc;

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
const config = (vips: string[]) => `# the backends test's appliance
appliance: lb1
api: { listen: "192.0.2.11:8441" }
interfaces: { external: e0, internal: i0 }
failover: { standby: false }
vips:
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
  server = new Proc(ns.srv, 'backends-peer.ts', ['server', '8443']);
  await server.waitFor((e) => e.event === 'listening');
  client = new Proc(ns.client, 'backends-peer.ts', ['client']);
  writeFileSync(file, config([web, shop, ring, mod]));
  appliance = new Proc(ns.lb, 'backends-appliance.ts');
  await call(appliance, 'start', { file });
}, 60_000);

afterAll(async () => {
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

  it('a reload adding a backend, removing another and adding a VIP loses no connection under load', async () => {
    const during = load('203.0.113.13', 60, 20, 800);
    await sleep(300);
    const web2 = vip('web', 13, '203.0.113.13', '198.18.0.13', 'fullnat', `    backends:\n${backends(101, 102)}\n${backends(106, 106)}\n`);
    const extra = vip('extra', 30, '203.0.113.30', '198.18.0.30', 'fullnat', `    backends:\n${backends(107, 108)}\n`);
    writeFileSync(file, config([web2, shop, ring, mod, extra]));
    expect(await call(appliance, 'reload')).toEqual({ added: ['extra'], removed: [], changed: ['web'] });
    const fates = await during;
    expect(failed(fates)).toEqual([]);
    expect(hits(fates).has('198.18.0.103:8443')).toBe(true); // before the reload
    const after = await Promise.all([load('203.0.113.13', 30, 10, 100), load('203.0.113.30', 10, 10, 100)]);
    expect(failed(after.flat())).toEqual([]);
    expect(hits(after[0])).toEqual(new Set(['198.18.0.101:8443', '198.18.0.102:8443', '198.18.0.106:8443']));
    expect(hits(after[1])).toEqual(new Set(['198.18.0.107:8443', '198.18.0.108:8443']));
    expect(await call(appliance, 'modeTable')).toMatchObject({ web: 'normal', extra: 'normal' });
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
    await call(appliance, 'start', { file });
    expect((await status('shop')).backends.map((b: any) => [b.address, b.weight, b.state])).toEqual([
      ['198.18.0.104', 1, 'up'],
      ['198.18.0.105', 0, 'drained'],
    ]);
    const after = await load('203.0.113.10', 10, 10, 100);
    expect(failed(after)).toEqual([]);
    expect(hits(after)).toEqual(new Set(['198.18.0.104:8443']));
  });
});
