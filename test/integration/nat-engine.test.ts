import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Proc, createLab, destroyLab, inNs, removeLeftovers, siteConfig, sleep, type Lab } from './helpers/nat-lab.js';

let lab: Lab | undefined;
let appliance: Proc;
let client: Proc;
const servers: Proc[] = [];
let connCount = 0;

/** Connects the client to host:port and returns its name once the server's hello arrived. */
async function connect(host: string, port = 7): Promise<{ conn: string; hello: string; localPort: number }> {
  const conn = `c${++connCount}`;
  client.send({ op: 'connect', conn, host, port });
  const connected = await client.waitFor((e) => e.conn === conn && e.event === 'connect', 10_000, `${conn} connect`);
  const hello = await client.waitFor((e) => e.conn === conn && e.event === 'data' && e.text.startsWith('hello'), 10_000, `${conn} hello`);
  return { conn, hello: hello.text, localPort: connected.localPort };
}
const received = (conn: string) => client.events.filter((e) => e.conn === conn && e.event === 'data').map((e) => e.text);
const serverLines = () => servers.flatMap((s) => s.events.filter((e) => e.event === 'line').map((e) => e.text));
const accepts = () => servers.reduce((n, s) => n + s.events.filter((e) => e.event === 'accept').length, 0);
const counters = (vip: string) => appliance.call('counters', { vip });
async function until<T>(probe: () => Promise<T>, ok: (v: T) => boolean, what: string, timeoutMs = 8000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (ok(v)) return v;
    if (Date.now() > end) throw new Error(`timed out: ${what}: ${JSON.stringify(v)}`);
    await sleep(50);
  }
}

beforeAll(async () => {
  removeLeftovers();
  lab = createLab();
  for (const ns of [lab.srv1, lab.srv2]) {
    const s = new Proc(ns, 'nat-peer.ts', ['server', '7']);
    servers.push(s);
    await s.waitFor((e) => e.event === 'listening');
  }
  client = new Proc(lab.client, 'nat-peer.ts', ['client']);
  appliance = new Proc(lab.lb, 'nat-appliance.ts');
  await appliance.call('start', { config: siteConfig() });
});

afterAll(async () => {
  for (const p of [appliance, client, ...servers]) await p?.stop();
  destroyLab(lab);
});

describe('NAT engine on the kernel', () => {
  it('starts with the VIPs it owns normal and a permanent conntrack user', async () => {
    expect(await appliance.call('modeTable')).toEqual({ vip1: 'normal', vip4: 'normal' });
    const sysctl = inNs(lab!.lb, 'sysctl', '-n', 'net.netfilter.nf_conntrack_tcp_loose', 'net.ipv4.ip_forward');
    expect(sysctl.split('\n').slice(0, 2)).toEqual(['0', '1']);
  });

  it('dnat: the server sees the client address and the VIP counts the traffic', async () => {
    const before = await counters('vip1');
    const { conn, hello } = await connect('203.0.113.10');
    expect(hello).toBe('hello 198.51.100.10');
    client.send({ op: 'send', conn, text: 'ping' });
    await client.waitFor((e) => e.conn === conn && e.text === 'ping');
    const after = await counters('vip1');
    expect(after.packets).toBeGreaterThan(before.packets + 4);
    expect(after.bytes).toBeGreaterThan(before.bytes);
    expect(after.newConnections).toBe(before.newConnections + 1);
  });

  it('fullnat: the server sees the inside address, and the pool is used round robin', async () => {
    const a = await connect('203.0.113.13');
    const b = await connect('203.0.113.13');
    expect(a.hello).toBe('hello 198.18.0.13');
    expect(b.hello).toBe('hello 198.18.0.13');
    const peers = servers.map((s) => s.events.filter((e) => e.event === 'accept' && e.peer === '198.18.0.13').length);
    expect(peers.every((n) => n >= 1)).toBe(true);
    const conntrack = inNs(lab!.lb, 'conntrack', '-L', '-p', 'tcp', '--orig-dst', '203.0.113.13');
    expect(conntrack).toMatch(/dport=2\d{4}/); // the reply tuple's port is in the SNAT range
    expect(conntrack).toContain('mark=4');
  });

  it('an unknown non-SYN to a normal VIP is reset and counted', async () => {
    const { conn, localPort } = await connect('203.0.113.10');
    const before = await counters('vip1');
    inNs(lab!.lb, 'conntrack', '-D', '-p', 'tcp', '--orig-src', '198.51.100.10', '--sport', String(localPort));
    client.send({ op: 'send', conn, text: 'who are you' });
    const err = await client.waitFor((e) => e.conn === conn && (e.event === 'error' || e.event === 'close'), 5000, 'reset');
    expect(err.code).toBe('ECONNRESET');
    expect((await counters('vip1')).rejected).toBeGreaterThan(before.rejected);
  });

  it('migrating: holds the client packets before conntrack, then releases them in order into an entry created meanwhile', async () => {
    const { conn, localPort } = await connect('203.0.113.10');
    await appliance.call('setMode', { vip: 'vip1', mode: 'migrating' });
    const linesBefore = serverLines().length;
    for (const text of ['one', 'two', 'three']) {
      client.send({ op: 'send', conn, text });
      await sleep(30);
    }
    const held = await until(() => counters('vip1'), (c) => c.held >= 3, 'three packets held');
    expect(serverLines().length).toBe(linesBefore);
    // A new connection's SYN is held too: the server sees nothing, conntrack registers nothing.
    const acceptsBefore = accepts();
    const synConn = `c${++connCount}`;
    client.send({ op: 'connect', conn: synConn, host: '203.0.113.10', port: 7 });
    await until(() => counters('vip1'), (c) => c.held >= held.held + 1, 'the SYN held');
    expect(accepts()).toBe(acceptsBefore);
    // The migration replaces the entry meanwhile (here: deleted and created again by hand, with its DNAT).
    inNs(lab!.lb, 'conntrack', '-D', '-p', 'tcp', '--orig-src', '198.51.100.10', '--sport', String(localPort));
    inNs(
      lab!.lb, 'conntrack', '-I', '-p', 'tcp', '-s', '198.51.100.10', '-d', '203.0.113.10', '--sport', String(localPort), '--dport', '7',
      // As conntrackd writes a NAT'd entry: the reply tuple is the plain inverse, plus the DNAT binding.
      '-r', '203.0.113.10', '-q', '198.51.100.10', '--reply-port-src', '7', '--reply-port-dst', String(localPort), '--dst-nat', '198.18.0.101',
      '--state', 'ESTABLISHED', '-u', 'SEEN_REPLY,ASSURED', '-t', '120', '-m', '1',
    );
    expect(inNs(lab!.lb, 'conntrack', '-L', '-p', 'tcp', '--orig-src', '198.51.100.10', '--sport', String(localPort))).toContain('198.18.0.101');
    await appliance.call('setMode', { vip: 'vip1', mode: 'normal' });
    expect(await appliance.call('release', { vip: 'vip1' })).toBeGreaterThanOrEqual(4);
    await client.waitFor((e) => e.conn === conn && e.text === 'three', 5000, 'echo of three');
    expect(received(conn).slice(-3)).toEqual(['one', 'two', 'three']);
    expect(serverLines().slice(linesBefore)).toEqual(['one', 'two', 'three']);
    // The held SYN went through and opened its connection; nothing was reset.
    await client.waitFor((e) => e.conn === synConn && e.event === 'connect', 5000, 'held SYN connects');
    expect(client.events.filter((e) => (e.conn === conn || e.conn === synConn) && e.event === 'error')).toEqual([]);
    const c = await counters('vip1');
    expect(c.held).toBe(0);
    expect(c.released).toBeGreaterThanOrEqual(4);
  });

  it('migrating (dnat): holds the server packets towards the client too', async () => {
    const { conn } = await connect('203.0.113.10');
    client.send({ op: 'send', conn, text: 'delay 1200 late' });
    await servers[0]!.waitFor((e) => e.event === 'line' && e.text === 'delay 1200 late');
    await appliance.call('setMode', { vip: 'vip1', mode: 'migrating' });
    const before = (await counters('vip1')).held;
    await until(() => counters('vip1'), (c) => c.held > before, 'the server reply held', 5000);
    expect(received(conn)).not.toContain('late');
    await appliance.call('setMode', { vip: 'vip1', mode: 'normal' });
    await appliance.call('release', { vip: 'vip1' });
    await client.waitFor((e) => e.conn === conn && e.text === 'late', 5000, 'late reply');
  });

  it('counts overflow beyond the queue length, and TCP recovers after release', async () => {
    await appliance.call('stop');
    expect(inNs(lab!.lb, 'nft', 'list', 'tables')).not.toContain('vipshift');
    expect(inNs(lab!.lb, 'iptables-nft', '-t', 'raw', '-S')).not.toContain('vipshift hold');
    await appliance.call('start', { config: siteConfig({ queueLength: 3 }) });
    const { conn } = await connect('203.0.113.13');
    await appliance.call('setMode', { vip: 'vip4', mode: 'migrating' });
    const texts = ['a1', 'a2', 'a3', 'a4', 'a5', 'a6', 'a7'];
    for (const text of texts) {
      client.send({ op: 'send', conn, text });
      await sleep(20);
    }
    const c = await until(() => counters('vip4'), (x) => x.held === 3 && x.overflowed >= 4, 'three held, four overflowed');
    expect(c.held).toBe(3);
    await appliance.call('setMode', { vip: 'vip4', mode: 'normal' });
    expect(await appliance.call('release', { vip: 'vip4' })).toBe(3);
    for (const text of texts) await client.waitFor((e) => e.conn === conn && e.text === text, 15_000, `echo ${text}`);
    expect(received(conn).slice(-7)).toEqual(texts);
  });

  it('hold policy drop: drops and counts, clients retransmit once the VIP is normal', async () => {
    await appliance.call('stop');
    expect(await appliance.call('start', { config: siteConfig({ policy: 'drop' }) })).toEqual({ holdMethod: 'drop' });
    await appliance.call('setMode', { vip: 'vip1', mode: 'migrating' });
    const acceptsBefore = accepts();
    const conn = `c${++connCount}`;
    client.send({ op: 'connect', conn, host: '203.0.113.10', port: 7 });
    await until(() => counters('vip1'), (c) => c.dropped >= 1, 'the SYN dropped');
    expect(accepts()).toBe(acceptsBefore);
    await appliance.call('setMode', { vip: 'vip1', mode: 'normal' });
    await client.waitFor((e) => e.conn === conn && e.event === 'connect', 8000, 'connect after retransmission');
  });

  it('a VIP absent from the mode table is not ours: not translated', async () => {
    await appliance.call('setMode', { vip: 'vip4', mode: 'absent' });
    expect(await appliance.call('modeTable')).toEqual({ vip1: 'normal' });
    const acceptsBefore = accepts();
    const conn = `c${++connCount}`;
    client.send({ op: 'connect', conn, host: '203.0.113.13', port: 7 });
    // The VIP address is local and nothing listens on it: the appliance's own stack refuses.
    const e = await client.waitFor((x) => x.conn === conn && x.event === 'error', 5000, 'refused');
    expect(e.code).toBe('ECONNREFUSED');
    expect(accepts()).toBe(acceptsBefore);
  });
});
