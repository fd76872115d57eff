/**
 * VRRP with BFD between two `vipshift vrrp` speakers on one bridge, real kernel, in
 * namespaces this file makes and removes (prefix vtbfd). Adverts every 0.1 s, BFD at
 * 50 ms × 3. In order: GTSM (a packet with TTL 254 is dropped by the kernel, the same packet
 * with TTL 255 is taken), the false-positive guard (BFD filtered, adverts flowing: no
 * takeover), a graceful stop of the master (BFD AdminDown and priority 0: VRRP's own
 * takeover, not BFD's), and a power loss of the master (the backup takes over in BFD's time,
 * well inside Master_Down_Interval).
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BfdStatus } from '../../src/vrrp/bfd-peers.js';
import { encodeBfdControl } from '../../src/vrrp/bfd-packet.js';
import { Segment, VipshiftVrrp, removeLeftovers, sh, sleep, waitFor } from '../support/vrrp-segment.js';

const PREFIX = 'vtbfd';
const VIP = '203.0.113.10';
const R1 = '203.0.113.2'; // master
const R2 = '203.0.113.3'; // backup
const R3 = '203.0.113.4'; // sends crafted packets only
const INTERVAL = 0.1;
const BACKUP_PRIORITY = 100;
/** RFC 5798 §6.1: 3 × Master_Adver_Interval + Skew_Time, ms, for a backup of this priority. */
const masterDownMs = (priority: number) => 3 * INTERVAL * 1000 + ((256 - priority) * INTERVAL * 1000) / 256;

const config = (priority: number) => ({
  instances: [{ name: 'vip1', interface: 'eth0', vrid: 61, priority, advertIntervalSeconds: INTERVAL, preempt: false, addresses: [`${VIP}/24`], bfd: { minTxMs: 50, minRxMs: 50, multiplier: 3 } }],
});

let segment: Segment;
let r1: string;
let r2: string;
let r3: string;
let speaker1: VipshiftVrrp;
let speaker2: VipshiftVrrp;

async function bfd(s: VipshiftVrrp): Promise<BfdStatus> {
  return ((await s.state()) as unknown as { bfd: BfdStatus }).bfd;
}

async function sessionTo(s: VipshiftVrrp, peer: string) {
  return (await bfd(s)).sessions.find((x) => x.peer === peer);
}

/** Up, and past the Poll Sequence that brings both sides from 1 s to the 50 ms rate. */
async function waitUp(s: VipshiftVrrp, peer: string) {
  const end = Date.now() + 15_000;
  const settled = (x: Awaited<ReturnType<typeof sessionTo>>) => x?.state === 'Up' && x.detectionTimeMs === 150 && !x.pollActive;
  while (!settled(await sessionTo(s, peer))) {
    if (Date.now() > end) throw new Error(`BFD to ${peer} not Up after 15 s`);
    await sleep(100);
  }
}

/** A BFD Control packet from R3's namespace with a chosen TTL (node's dgram sets it). */
function sendFromR3(ttl: number, myDiscriminator: number): void {
  const packet = encodeBfdControl({
    diag: 0, state: 'Down', poll: false, final: false, controlPlaneIndependent: false, demand: false, detectMult: 3,
    myDiscriminator, yourDiscriminator: 0, desiredMinTxInterval: 1_000_000, requiredMinRxInterval: 1_000_000, requiredMinEchoRxInterval: 0,
  });
  const script = `const s=require('dgram').createSocket('udp4');s.bind(49300,'${R3}',()=>{s.setTTL(${ttl});s.send(Buffer.from('${packet.toString('hex')}','hex'),3784,'${R2}',()=>s.close());});`;
  sh('ip', ['netns', 'exec', r3, process.execPath, '-e', script]);
}

function gtsmDropped(ns: string): number {
  const listing = JSON.parse(sh('ip', ['netns', 'exec', ns, 'nft', '-j', 'list', 'counter', 'ip', 'vipshift_bfd', 'gtsm_dropped'])) as { nftables: { counter?: { packets: number } }[] };
  return listing.nftables.find((x) => x.counter)?.counter?.packets ?? -1;
}

beforeAll(async () => {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: new URL('../..', import.meta.url).pathname });
  removeLeftovers(PREFIX);
  segment = new Segment(PREFIX);
  r1 = segment.addHost('r1', `${R1}/24`);
  r2 = segment.addHost('r2', `${R2}/24`);
  r3 = segment.addHost('r3', `${R3}/24`);
  speaker1 = new VipshiftVrrp(segment, r1, config(200));
  await speaker1.started();
  await waitFor('r1 to be master', () => speaker1.transitions('master').length > 0, 5000);
  speaker2 = new VipshiftVrrp(segment, r2, config(BACKUP_PRIORITY));
  await speaker2.started();
  await waitUp(speaker2, R1);
  await waitUp(speaker1, R2); // r1 answers r2 from a passive session: it hears no adverts from a backup
});

afterAll(() => {
  segment?.destroy();
  removeLeftovers(PREFIX);
});

describe('VRRP with BFD (RFC 5880/5881) between two vipshift speakers', () => {
  it('GTSM: a BFD packet with TTL 254 is dropped by the kernel; the same with TTL 255 is taken', async () => {
    const before = gtsmDropped(r2);
    sendFromR3(254, 0x5301);
    await sleep(300);
    expect(gtsmDropped(r2)).toBe(before + 1);
    expect(await sessionTo(speaker2, R3)).toBeUndefined();
    // The control: TTL 255 reaches the speaker, which answers a new on-link peer passively.
    sendFromR3(255, 0x5302);
    const end = Date.now() + 3000;
    let s = await sessionTo(speaker2, R3);
    while (!s && Date.now() < end) {
      await sleep(50);
      s = await sessionTo(speaker2, R3);
    }
    expect(s).toMatchObject({ passive: true, remoteDiscriminator: 0x5302 });
    expect(gtsmDropped(r2)).toBe(before + 1);
  });

  it('BFD filtered while adverts flow: the session goes Down, the backup stays backup (two signals)', async () => {
    sh('ip', ['netns', 'exec', r2, 'nft', 'add table ip vtbfd_block; add chain ip vtbfd_block input { type filter hook input priority -200; }; add rule ip vtbfd_block input udp dport 3784 drop']);
    try {
      await sleep(3000);
      const status = await bfd(speaker2);
      const session = status.sessions.find((x) => x.peer === R1);
      expect(session).toMatchObject({ state: 'Down', diag: 1 });
      expect(session?.downs).toBeGreaterThanOrEqual(1);
      expect(status.counters.takeovers).toBe(0);
      expect(status.counters.suppressed).toBeGreaterThanOrEqual(1);
      expect(speaker2.transitions('master')).toHaveLength(0);
      expect(segment.addresses(r2)).not.toContain(`${VIP}/24`);
    } finally {
      sh('ip', ['netns', 'exec', r2, 'nft', 'delete table ip vtbfd_block']);
    }
    await waitUp(speaker2, R1);
  });

  it('a master that stops (SIGTERM) says AdminDown and priority 0: the backup takes over by VRRP, not by BFD', async () => {
    await waitUp(speaker2, R1);
    speaker1.child.kill('SIGTERM');
    const took = await waitFor('r2 to become master', () => speaker2.transitions('master')[0], 5000);
    expect(took.reason).toBe('master down');
    await sleep(200);
    expect(await sessionTo(speaker2, R1)).toMatchObject({ state: 'Down', diag: 3 }); // Neighbor Signaled Session Down
    expect((await bfd(speaker2)).counters.takeovers).toBe(0);
    // r1 comes back: no preemption, so it follows r2, with BFD to it.
    speaker1 = new VipshiftVrrp(segment, r1, config(200));
    await speaker1.started();
    await waitUp(speaker1, R2);
    expect((await speaker1.state()).instances[0]?.state).toBe('backup');
  });

  it('power loss of the master: the backup takes over by BFD, well inside Master_Down_Interval', async () => {
    // r2 is master now (previous test), r1 its backup.
    await waitUp(speaker1, R2);
    const cut = Date.now();
    speaker2.child.kill('SIGKILL');
    sh('ip', ['-n', r2, 'link', 'set', 'eth0', 'down']);
    const took = await waitFor('r1 to become master', () => speaker1.transitions('master')[0], 5000);
    const ms = (took as unknown as { at: number }).at - cut;
    console.log(`BFD takeover: ${ms.toFixed(1)} ms after the power cut (Master_Down_Interval ${masterDownMs(200).toFixed(1)} ms)`);
    expect(took.reason).toBe('master down (bfd)');
    expect(ms).toBeLessThan(masterDownMs(200));
    await waitFor('r1 to hold the VIP', () => segment.addresses(r1).includes(`${VIP}/24`), 2000);
    expect((await bfd(speaker1)).counters.takeovers).toBe(1);
  });
});
