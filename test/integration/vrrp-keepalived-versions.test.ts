/**
 * vipshift beside keepalived 2.2 (Debian) in VRRPv2 and VRRPv3, with and without the virtual
 * MAC (use_vmac), each side killed (SIGKILL: no goodbye) and restarted. The masters are read
 * from the wire (tcpdump on the bridge): who sends adverts, in runs; a client on the segment
 * checks which MAC answers ARP for the VIP.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Capture, Segment, VipshiftVrrp, keepalivedConf, removeLeftovers, sleep, waitFor, type WireEvent } from '../support/vrrp-segment.js';

const VIP = '203.0.113.10';
const VRID = 51;
const VMAC = '00:00:5e:00:01:33';
const K = '203.0.113.2'; // keepalived's router
const V = '203.0.113.3'; // vipshift's router
const CLIENT = '203.0.113.100';
/** Generous: the machine is shared (bench/vrrp.ts measures the takeover precisely). */
const MARGIN_MS = 150;

beforeAll(() => {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: new URL('../..', import.meta.url).pathname });
  removeLeftovers();
});
afterAll(() => removeLeftovers());

/** RFC 3768 / RFC 5798 §6.1, ms. */
function masterDown(version: 2 | 3, interval: number, priority: number): number {
  const skew = version === 2 ? ((256 - priority) * 1000) / 256 : ((256 - priority) * interval * 1000) / 256;
  return 3 * interval * 1000 + skew;
}

/** Consecutive adverts (priority > 0) from one source, as runs: who was master, in order. */
function runs(events: WireEvent[]): { source: string; first: number; last: number; count: number }[] {
  const out: { source: string; first: number; last: number; count: number }[] = [];
  for (const e of events) {
    if (e.kind !== 'advert' || e.priority === 0) continue;
    const run = out.at(-1);
    if (run && run.source === e.source) {
      run.last = e.at;
      run.count++;
    } else out.push({ source: e.source, first: e.at, last: e.at, count: 1 });
  }
  return out;
}

const combos: { version: 2 | 3; vmac: boolean; interval: number }[] = [
  { version: 2, vmac: false, interval: 1 },
  { version: 2, vmac: true, interval: 1 },
  { version: 3, vmac: false, interval: 0.1 },
  { version: 3, vmac: true, interval: 0.1 },
];

// The four run side by side, each on its own segment: the VRRPv2 ones wait whole seconds.
describe.concurrent('vipshift beside keepalived 2.2: one master at every moment, each side killed and restarted', () => {
  for (const { version, vmac, interval } of combos) {
    it(`VRRPv${version}${vmac ? ' with use_vmac' : ''}, adverts every ${interval} s`, async ({ onTestFinished }) => {
      const seg = new Segment();
      onTestFinished(() => seg.destroy());
      const k = seg.addHost('k', `${K}/24`);
      const v = seg.addHost('v', `${V}/24`);
      const c = seg.addHost('c', `${CLIENT}/24`);
      const capture = new Capture(seg);
      await capture.ready;
      const macOf = (ns: string) => execFileSync('ip', ['-n', ns, '-br', 'link', 'show', 'eth0'], { encoding: 'utf8' }).split(/\s+/)[2];
      const ifname = vmac ? `vrrp.${VRID}` : 'eth0';
      const holds = (ns: string) => {
        try {
          return execFileSync('ip', ['-n', ns, '-4', '-o', 'addr', 'show', 'dev', ifname], { encoding: 'utf8' }).includes(`${VIP}/24`);
        } catch {
          return false; // the vmac interface is not there
        }
      };
      /** The MAC of the ARP reply the client gets for the VIP (RFC 5798 §8.1.2: the virtual one with use_vmac). */
      const answeredBy = async () => {
        const since = Date.now();
        execFileSync('ip', ['-n', c, 'neigh', 'flush', 'dev', 'eth0']);
        execFileSync('ip', ['netns', 'exec', c, 'ping', '-c', '1', '-W', '1', VIP], { stdio: 'ignore' });
        const replies = await waitFor('the ARP reply for the VIP', () => {
          const r = capture.events.filter((e) => e.kind === 'reply' && e.source === VIP && e.at >= since - 5);
          return r.length > 0 && r;
        }, 1000);
        return [...new Set(replies.map((r) => r.mac))].join(' ');
      };
      const keepalived = (priority: number) => {
        const h = seg.keepalived(k, keepalivedConf({ routerId: 'k', vrid: VRID, priority, advertInterval: interval, addresses: [`${VIP}/24`], version, useVmac: vmac }));
        h.child.stdout?.on('data', (d: Buffer) => keepalivedLog.push(d.toString()));
        h.child.stderr?.on('data', (d: Buffer) => keepalivedLog.push(d.toString()));
        return h;
      };
      const keepalivedLog: string[] = [];
      const vipshift = (priority: number) =>
        new VipshiftVrrp(seg, v, { instances: [{ name: 'vip1', interface: 'eth0', vrid: VRID, priority, advertIntervalSeconds: interval, version, useVmac: vmac, addresses: [`${VIP}/24`] }] });
      /** keepalived's parent is stopped first so that it cannot respawn its VRRP child. */
      const killKeepalived = (h: ReturnType<typeof keepalived>) => {
        const parent = Number(readFileSync(h.pidFile.replace(/\.vrrp\.pid$/, '.pid'), 'utf8'));
        process.kill(parent, 'SIGSTOP');
        process.kill(h.pid(), 'SIGKILL');
        process.kill(parent, 'SIGKILL');
        // Its pid files stay behind and would make the restarted one say "already running".
        rmSync(h.pidFile, { force: true });
        rmSync(h.pidFile.replace(/\.vrrp\.pid$/, '.pid'), { force: true });
      };
      /**
       * A speaker killed with SIGKILL leaves its addresses (keepalived's too); the box's restart
       * would remove them. Removed here so that the ARP checks see only the live speaker.
       */
      const leftovers = (ns: string) => {
        if (vmac) execFileSync('ip', ['-n', ns, 'link', 'del', ifname]);
        else execFileSync('ip', ['-n', ns, 'addr', 'del', `${VIP}/24`, 'dev', 'eth0']);
      };
      const advertsOf = (source: string, since = 0) => capture.events.filter((e) => e.kind === 'advert' && e.source === source && e.priority !== 0 && e.at >= since);
      const takeover = async (from: string, to: string, priority: number) => {
        const before = Date.now();
        const first = await waitFor(`${to} to advertise`, () => advertsOf(to, before)[0], masterDown(version, interval, priority) + 3000).catch((e: Error) => {
          throw new Error(`${e.message}\nkeepalived's log:\n${keepalivedLog.join('').split('\n').slice(-30).join('\n')}`);
        });
        const last = advertsOf(from).filter((e) => e.at < first.at).at(-1) as WireEvent;
        return first.at - last.at;
      };
      const mdi = (priority: number) => masterDown(version, interval, priority);
      const settle = () => sleep(Math.max(mdi(50) + 500, 2000));

      // 1. keepalived (200) master, vipshift (100) backup.
      let kh = keepalived(200);
      await waitFor('keepalived to hold the VIP', () => holds(k), 15_000);
      let vh = vipshift(100);
      await vh.started();
      await settle();
      expect([holds(k), holds(v)]).toEqual([true, false]);
      const s = await vh.state();
      expect(s.counters.badAdverts).toEqual({});
      expect(await answeredBy()).toBe(vmac ? VMAC : macOf(k));

      // 2. keepalived killed: vipshift takes over within Master_Down_Interval.
      killKeepalived(kh);
      leftovers(k);
      const t1 = await takeover(K, V, 100);
      await waitFor('vipshift to hold the VIP', () => holds(v), 2000);
      expect(await answeredBy()).toBe(vmac ? VMAC : macOf(v));

      // 3. keepalived restarted at priority 50: it stays backup.
      kh = keepalived(50);
      await settle();
      expect(advertsOf(K, Date.now() - mdi(50))).toEqual([]);
      expect(holds(v)).toBe(true);

      // 4. vipshift killed: keepalived takes over.
      vh.child.kill('SIGKILL');
      leftovers(v);
      const t2 = await takeover(V, K, 50);
      await waitFor('keepalived to hold the VIP', () => holds(k), 2000);
      expect(await answeredBy()).toBe(vmac ? VMAC : macOf(k));

      // 5. vipshift restarted (100, preempt): it takes the VIP back from keepalived (50).
      vh = vipshift(100);
      await vh.started();
      await waitFor('vipshift to preempt', () => holds(v) && !holds(k), mdi(100) + 3000);
      await sleep(Math.max(3 * interval * 1000, 500));
      expect([holds(k), holds(v)]).toEqual([false, true]);
      expect(await answeredBy()).toBe(vmac ? VMAC : macOf(v));
      killKeepalived(kh);

      // Exactly one master at every moment: the adverts form exactly these runs, none interleaved.
      const seen = runs(capture.events);
      expect(seen.map((r) => r.source)).toEqual([K, V, K, V]);
      console.log(
        `VRRPv${version}${vmac ? ' vmac' : ''}: vipshift took over in ${t1.toFixed(1)} ms (Master_Down_Interval ${mdi(100).toFixed(1)}), keepalived in ${t2.toFixed(1)} ms (${mdi(50).toFixed(1)})`,
      );
      expect(t1).toBeGreaterThan(mdi(100) - 5);
      expect(t1).toBeLessThan(mdi(100) + MARGIN_MS);
      expect(t2).toBeLessThan(mdi(50) + MARGIN_MS);
      if (vmac) expect(capture.events.filter((e) => e.kind === 'garp' && e.source === VIP).every((e) => e.mac === VMAC)).toBe(true);
    }, 60_000);
  }
});
