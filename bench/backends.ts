/**
 * Backends: (1) clients kept on their backend when one of ten goes, Maglev against source
 * hash, from the slot tables the kernel is given (a client's slot is a hash of its address,
 * so the share of slots kept is the share of clients kept); (2) on the kernel, an appliance
 * with 1,000 backends over 100 fullnat VIPs, run as `vipshift appliance` composes it (each
 * backend checked, as by default; every backend port answers): the time
 * of a reload that changes a backend of every VIP (its pools' elements in one nf_tables netlink
 * transaction), and what TCP connections through one VIP lose meanwhile (failed connections;
 * the client's retransmitted segments, each a packet lost or late).
 * Needs root and a build. Writes bench/results/backends.json.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { SLOTS, slotTable } from '../src/nat/scheduler.js';
import { Proc, inNs, sh } from '../test/integration/helpers/nat-lab.js';
import { createClusterCredentials } from '../src/api/auth.js';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const VIPS = 100;
const PER_VIP = 10;

// (1) Remapped clients.
const remap = (['maglev', 'sourcehash'] as const).map((scheduler) => {
  const ten = Array.from({ length: 10 }, (_, i) => ({ key: `198.18.0.${201 + i}:8443`, weight: 1 }));
  const before = slotTable(scheduler, ten);
  const kept = ten.map((_, gone) => {
    const nine = ten.filter((_, i) => i !== gone);
    const after = slotTable(scheduler, nine);
    return before.filter((m, slot) => ten[m]!.key === nine[after[slot]!]!.key).length / before.length;
  });
  return { scheduler, slots: SLOTS[scheduler], keptMean: kept.reduce((a, b) => a + b, 0) / kept.length, keptMin: Math.min(...kept), keptMax: Math.max(...kept) };
});

// (2) Reload on the kernel.
const tag = randomBytes(3).toString('hex');
const ns = { client: `vtbkb${tag}c`, lb: `vtbkb${tag}l`, srv: `vtbkb${tag}s` };
const dir = mkdtempSync(join(tmpdir(), 'vtbkb-'));
const file = join(dir, 'lb1.yaml');

/** 100 VIPs of 10 backends each; `variant` swaps each VIP's last backend for another. */
function config(variant: number): string {
  const vips = Array.from({ length: VIPS }, (_, v) => {
    const backends = Array.from({ length: PER_VIP }, (_, b) => {
      const swapped = b === PER_VIP - 1 && variant % 2 === 1;
      return `      - { address: 198.18.0.${201 + b}, port: ${(swapped ? 9000 : 8000) + v} }`;
    });
    return `  - name: v${v}
    id: ${v + 1}
    address: 203.0.113.${10 + v}
    insideAddress: 198.18.0.${10 + v}
    ports: [443]
    mode: fullnat
    scheduler: maglev
    snatPorts: "20000-29999"
    owner: lb1
    backends:
${backends.join('\n')}`;
  });
  return `appliance: lb1\napi: { listen: "192.0.2.11:8441" }\ninterfaces: { external: e0, internal: i0 }\nfailover: { standby: false }\nvips:\n${vips.join('\n')}\n`;
}

const retransmitted = (): number => Number(/TcpRetransSegs\s+(\d+)/.exec(inNs(ns.client, 'nstat', '-az', 'TcpRetransSegs'))?.[1] ?? 0);

const procs: Proc[] = [];
const rounds: { round: number; reloadMs: number; connections: number; failed: number; retransmitted: number }[] = [];
let startMs = 0;
let backendsNotUp = 0;
try {
  for (const n of Object.values(ns)) {
    sh('ip', ['netns', 'add', n]);
    sh('ip', ['-n', n, 'link', 'set', 'lo', 'up']);
  }
  const ip = (n: string, ...args: string[]) => sh('ip', ['-n', n, ...args]);
  ip(ns.lb, 'link', 'add', 'e0', 'type', 'veth', 'peer', 'name', 'e0', 'netns', ns.client);
  ip(ns.lb, 'link', 'add', 'i0', 'type', 'veth', 'peer', 'name', 'i0', 'netns', ns.srv);
  ip(ns.client, 'addr', 'add', '198.51.100.10/24', 'dev', 'e0');
  ip(ns.lb, 'addr', 'add', '198.51.100.1/24', 'dev', 'e0');
  ip(ns.lb, 'addr', 'add', '198.18.0.2/24', 'dev', 'i0');
  ip(ns.lb, 'addr', 'add', '192.0.2.11/32', 'dev', 'lo');
  createClusterCredentials(join(dir, 'pki'), { lb1: 'appliance' });
  for (let i = 201; i <= 210; i++) ip(ns.srv, 'addr', 'add', `198.18.0.${i}/24`, 'dev', 'i0');
  for (const [n, ifs] of [[ns.client, ['e0']], [ns.lb, ['e0', 'i0']], [ns.srv, ['i0']]] as const) for (const i of ifs) ip(n, 'link', 'set', i, 'up');
  ip(ns.client, 'route', 'add', 'default', 'via', '198.51.100.1');
  ip(ns.srv, 'route', 'add', 'default', 'via', '198.18.0.2');
  // Every backend port answers, the swapped ones too (8000+v and 9000+v on every server
  // address): the appliance checks each backend by default, and a pool that lost its
  // backends to failed checks would make a reload of a different size.
  const ports = Array.from({ length: VIPS }, (_, v) => [8000 + v, 9000 + v]).flat();
  const server = new Proc(ns.srv, 'backends-peer.ts', ['server', ...ports.map(String)]);
  procs.push(server);
  await server.waitFor(() => server.events.filter((e) => e.event === 'listening').length === ports.length);
  const client = new Proc(ns.client, 'backends-peer.ts', ['client']);
  const appliance = new Proc(ns.lb, 'backends-appliance.ts');
  procs.push(client, appliance);
  writeFileSync(file, config(0));
  const t0 = performance.now();
  await appliance.call('start', { file, credentialsDir: join(dir, 'pki') });
  startMs = Math.round(performance.now() - t0);

  for (let round = 1; round <= ROUNDS; round++) {
    const before = retransmitted();
    // 100 connections to v0, one every 10 ms, each exchanging a line every 50 ms for 1.5 s.
    const load = client.call('load', { host: '203.0.113.10', port: 443, every: 10, hold: 1500, count: 100 }) as Promise<{ fate: string }[]>;
    await new Promise((r) => setTimeout(r, 700));
    writeFileSync(file, config(round));
    const t = performance.now();
    const result = (await appliance.call('reload')) as { changed: string[] };
    const reloadMs = Math.round((performance.now() - t) * 10) / 10;
    if (result.changed.length !== VIPS) throw new Error(`reload changed ${result.changed.length} VIPs, expected ${VIPS}`);
    const fates = await load;
    rounds.push({ round, reloadMs, connections: fates.length, failed: fates.filter((f) => f.fate !== 'ok').length, retransmitted: retransmitted() - before });
  }
  // Every pool kept its backends through the rounds: no check failed meanwhile.
  const status = (await appliance.call('status')) as { vips: { backends: { state: string }[] }[] };
  backendsNotUp = status.vips.reduce((n, v) => n + v.backends.filter((b) => b.state !== 'up').length, 0);
  if (backendsNotUp > 0) throw new Error(`${backendsNotUp} backends not up after the rounds: the reloads did not all change the same pools`);
} finally {
  for (const p of procs) await p.stop();
  for (const n of Object.values(ns)) {
    try {
      sh('ip', ['netns', 'del', n]);
    } catch {
      // already gone
    }
  }
  rmSync(dir, { recursive: true, force: true });
}

const load = loadavg().map((x) => Math.round(x * 100) / 100);
console.log('clients kept on their backend when one of ten goes (each of the ten in turn)');
console.log(['scheduler', 'slots', 'mean', 'min', 'max'].map((c) => c.padStart(11)).join(''));
for (const r of remap) console.log([r.scheduler, r.slots, ...[r.keptMean, r.keptMin, r.keptMax].map((x) => `${(x * 100).toFixed(1)} %`)].map((v) => String(v).padStart(11)).join(''));
console.log(`\nreload: ${VIPS * PER_VIP} backends over ${VIPS} VIPs, each checked (the default), a backend of every VIP replaced (one netlink transaction); start took ${startMs} ms; backends not up after the rounds: ${backendsNotUp}`);
console.log(['round', 'reload ms', 'conns', 'failed', 'retransmits'].map((c) => c.padStart(12)).join(''));
for (const r of rounds) console.log([r.round, r.reloadMs, r.connections, r.failed, r.retransmitted].map((v) => String(v).padStart(12)).join(''));
console.log(`load average ${load.join(' ')}`);
writeFileSync(
  new URL('./results/backends.json', import.meta.url),
  `${JSON.stringify({ at: new Date().toISOString(), loadAverage: load, remap, reload: { vips: VIPS, backends: VIPS * PER_VIP, checked: true, backendsNotUp, startMs, rounds } }, null, 2)}\n`,
);
// The figures are written: end here (a handle left open kept the process waiting for minutes).
process.exit(0);
