/**
 * vipshift's VRRP speaker against keepalived 2.2 (Debian) on one bridge, in namespaces this
 * file makes and removes. Times are taken from the wire (tcpdump on the bridge).
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Capture, Segment, VipshiftVrrp, keepalivedConf, removeLeftovers, sleep, waitFor, type WireEvent } from '../support/vrrp-segment.js';

const VIP = '203.0.113.10';
const VRID = 51;
const A = '203.0.113.2'; // keepalived's router
const B = '203.0.113.3'; // vipshift's router
const INTERVAL = 0.1; // seconds
const skew = (priority: number) => ((256 - priority) * INTERVAL * 1000) / 256;
const masterDown = (priority: number) => 3 * INTERVAL * 1000 + skew(priority);

const instance = (priority: number, preempt = true) => ({
  instances: [{ name: 'vip1', interface: 'eth0', vrid: VRID, priority, advertIntervalSeconds: INTERVAL, preempt, addresses: [`${VIP}/24`] }],
});

let segment: Segment;
let a: string;
let b: string;
let capture: Capture;

beforeAll(() => {
  execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: new URL('../..', import.meta.url).pathname });
  removeLeftovers();
});

async function site() {
  segment = new Segment();
  a = segment.addHost('a', `${A}/24`);
  b = segment.addHost('b', `${B}/24`);
  capture = new Capture(segment);
  await capture.ready;
}

afterEach(() => segment?.destroy());
afterAll(() => removeLeftovers());

const holds = (ns: string) => segment.addresses(ns).includes(`${VIP}/24`);
const wire = (pred: (e: WireEvent) => boolean) => capture.events.filter(pred);

async function keepalivedMaster(priority: number) {
  const k = segment.keepalived(a, keepalivedConf({ routerId: 'a', vrid: VRID, priority, advertInterval: INTERVAL, addresses: [`${VIP}/24`] }));
  await waitFor('keepalived to hold the VIP', () => holds(a), 10_000);
  return k;
}

/** keepalived's VRRP process killed with SIGKILL (no priority-0 goodbye), parent too. */
function killKeepalived(k: { pid: () => number }) {
  process.kill(k.pid(), 'SIGKILL');
}

describe('vipshift VRRP speaker against keepalived 2.2', () => {
  it('keepalived master + vipshift backup: no split brain over ≥ 10 adverts; kill keepalived → vipshift master with a gratuitous ARP', async () => {
    await site();
    const k = await keepalivedMaster(200);
    const v = new VipshiftVrrp(segment, b, instance(100));
    await v.started();
    const since = Date.now();
    for (let i = 0; i < 15; i++) {
      await sleep(INTERVAL * 1000);
      expect([holds(a), holds(b)]).toEqual([true, false]);
    }
    const keepalivedAdverts = wire((e) => e.kind === 'advert' && e.source === A && e.at >= since);
    expect(keepalivedAdverts.length).toBeGreaterThanOrEqual(10);
    const s = await v.state();
    expect(s.instances[0]?.state).toBe('backup');
    expect(s.instances[0]?.advertsReceived).toBeGreaterThanOrEqual(10);
    expect(s.counters.badAdverts).toEqual({});
    expect(v.transitions('master')).toEqual([]);
    expect(wire((e) => e.kind === 'advert' && e.source === B)).toEqual([]);

    killKeepalived(k);
    await waitFor('vipshift to hold the VIP', () => holds(b), 3000);
    const garp = await waitFor('vipshift gratuitous ARP', () => wire((e) => e.kind === 'garp' && e.source === VIP && e.mac !== keepalivedAdverts[0]?.mac).at(-1), 2000);
    const lastKeepalived = wire((e) => e.kind === 'advert' && e.source === A).at(-1) as WireEvent;
    const takeover = garp.at - lastKeepalived.at;
    console.log(`takeover after keepalived's last advert: ${takeover.toFixed(1)} ms (Master_Down_Interval ${masterDown(100)} ms)`);
    expect(takeover).toBeLessThan(masterDown(100) + 100);
    expect(takeover).toBeGreaterThan(masterDown(100) - 5); // not before the master was due
  });

  it('vipshift master + keepalived backup: vipshift releases → keepalived master within Skew_Time + 100 ms', async () => {
    await site();
    const v = new VipshiftVrrp(segment, b, instance(200));
    await v.started();
    await waitFor('vipshift to hold the VIP', () => holds(b), 3000);
    segment.keepalived(a, keepalivedConf({ routerId: 'a', vrid: VRID, priority: 100, advertInterval: INTERVAL, addresses: [`${VIP}/24`] }));
    await sleep(1500);
    expect([holds(a), holds(b)]).toEqual([false, true]);
    expect(wire((e) => e.kind === 'advert' && e.source === A)).toEqual([]); // keepalived stays quiet as backup

    await v.command('release vip1', 'done');
    expect(holds(b)).toBe(false);
    await waitFor('keepalived to hold the VIP', () => holds(a), 3000);
    const goodbye = await waitFor('the priority-0 advert', () => wire((e) => e.kind === 'advert' && e.source === B && e.priority === 0)[0], 2000);
    const first = await waitFor('keepalived advert', () => wire((e) => e.kind === 'advert' && e.source === A)[0], 2000);
    const handover = first.at - goodbye.at;
    console.log(`keepalived master ${handover.toFixed(1)} ms after vipshift's priority-0 advert (Skew_Time ${skew(100)} ms)`);
    expect(handover).toBeLessThan(skew(100) + 100);
    // Released: vipshift (priority 200, preempt) stays backup under the lower-priority master.
    await sleep(1000);
    expect([holds(a), holds(b)]).toEqual([true, false]);
    expect((await v.state()).instances[0]?.state).toBe('backup');
    // And claims it back.
    await v.command('claim vip1', 'done');
    await waitFor('keepalived to drop the VIP', () => !holds(a), 3000);
    expect(holds(b)).toBe(true);
  });

  it('SIGTERM: vipshift announces priority 0, removes the VIP and exits; keepalived takes over after Skew_Time', async () => {
    await site();
    const v = new VipshiftVrrp(segment, b, instance(200));
    await v.started();
    await waitFor('vipshift to hold the VIP', () => holds(b), 3000);
    segment.keepalived(a, keepalivedConf({ routerId: 'a', vrid: VRID, priority: 100, advertInterval: INTERVAL, addresses: [`${VIP}/24`] }));
    await sleep(1000);
    const exited = new Promise<number | null>((resolve) => v.child.once('exit', (code) => resolve(code)));
    v.child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(holds(b)).toBe(false);
    await waitFor('keepalived to hold the VIP', () => holds(a), 3000);
    const goodbye = await waitFor('the priority-0 advert', () => wire((e) => e.kind === 'advert' && e.source === B && e.priority === 0)[0], 2000);
    const first = await waitFor('keepalived advert', () => wire((e) => e.kind === 'advert' && e.source === A)[0], 2000);
    expect(first.at - goodbye.at).toBeLessThan(skew(100) + 100);
  });

  it('preemption: vipshift (higher) preempts keepalived, keepalived (higher) preempts vipshift', async () => {
    await site();
    await keepalivedMaster(100);
    const v = new VipshiftVrrp(segment, b, instance(200));
    await v.started();
    await waitFor('vipshift to preempt', () => holds(b) && !holds(a), 3000);
    await sleep(500);
    expect([holds(a), holds(b)]).toEqual([false, true]);
    segment.destroy();

    await site();
    const w = new VipshiftVrrp(segment, b, instance(100));
    await w.started();
    await waitFor('vipshift to hold the VIP', () => holds(b), 3000);
    segment.keepalived(a, keepalivedConf({ routerId: 'a', vrid: VRID, priority: 200, advertInterval: INTERVAL, addresses: [`${VIP}/24`] }));
    await waitFor('keepalived to preempt', () => holds(a) && !holds(b), 5000);
    await sleep(500);
    expect([holds(a), holds(b)]).toEqual([true, false]);
    expect((await w.state()).instances[0]?.state).toBe('backup');
  });

  it('unicast peers (keepalived unicast_peer): keepalived master + vipshift backup, then vipshift master + keepalived backup', async () => {
    await site();
    const conf = (priority: number) =>
      keepalivedConf({ routerId: 'a', vrid: VRID, priority, advertInterval: INTERVAL, addresses: [`${VIP}/24`], unicast: { source: A, peers: [B] } });
    const unicast = (priority: number) => ({ instances: [{ ...instance(priority).instances[0], unicastPeers: [A] }] });
    const k = segment.keepalived(a, conf(200));
    await waitFor('keepalived to hold the VIP', () => holds(a), 10_000);
    const v = new VipshiftVrrp(segment, b, unicast(100));
    await v.started();
    await sleep(1500);
    expect([holds(a), holds(b)]).toEqual([true, false]);
    const s = await v.state();
    expect(s.instances[0]?.advertsReceived).toBeGreaterThanOrEqual(10);
    expect(s.counters.badAdverts).toEqual({});
    killKeepalived(k);
    await waitFor('vipshift to hold the VIP', () => holds(b), 3000);
    // vipshift's adverts go to the peer, never to the multicast group.
    await waitFor('a unicast advert from vipshift', () => capture.events.some((e) => e.kind === 'advert' && e.source === B), 2000);
    segment.keepalived(a, conf(100)); // keepalived comes back with a lower priority: stays backup
    await sleep(1500);
    expect([holds(a), holds(b)]).toEqual([false, true]);
    expect(wire((e) => e.kind === 'advert' && e.source === A && e.at > Date.now() - 1000)).toEqual([]);
  });

  it('interface tracking: a tracked link down → fault and the VIP removed; up again → master', async () => {
    await site();
    // trk0 loses its carrier when its veth peer trk1 goes down, as a cable pulled would.
    execFileSync('ip', ['-n', b, 'link', 'add', 'trk0', 'type', 'veth', 'peer', 'name', 'trk1']);
    execFileSync('ip', ['-n', b, 'link', 'set', 'trk0', 'up']);
    execFileSync('ip', ['-n', b, 'link', 'set', 'trk1', 'up']);
    const v = new VipshiftVrrp(segment, b, { instances: [{ ...instance(100).instances[0], trackInterfaces: ['trk0'] }] });
    await v.started();
    await waitFor('vipshift to hold the VIP', () => holds(b), 3000);
    execFileSync('ip', ['-n', b, 'link', 'set', 'trk1', 'down']);
    await waitFor('the VIP removed', () => !holds(b), 2000);
    await waitFor('the fault transition in the log', () => v.transitions('fault').length === 1, 1000);
    execFileSync('ip', ['-n', b, 'link', 'set', 'trk1', 'up']);
    await waitFor('vipshift to hold the VIP again', () => holds(b), 3000);
  });

  it('tshark decodes vipshift adverts as valid VRRPv3', async () => {
    await site();
    const file = `${segment.dir}/adverts.pcap`;
    const dump = segment.spawn(segment.sw, 'tcpdump', ['-n', '-i', 'br0', '-c', '3', '-w', file, 'ip proto 112']);
    await sleep(300);
    const v = new VipshiftVrrp(segment, b, instance(255));
    await v.started();
    await new Promise((r) => dump.once('exit', r));
    const out = execFileSync('tshark', ['-r', file, '-V', '-o', 'vrrp.v3_checksum_as_in_v2:FALSE', '-o', 'ip.check_checksum:TRUE'], { encoding: 'utf8' });
    expect(out).toMatch(/Virtual Router Redundancy Protocol/);
    expect(out).toMatch(/VRRP protocol version: 3/);
    expect(out).toMatch(/VRRP packet type: Advertisement \(1\)/);
    expect(out).toMatch(/Virtual Rtr ID: 51/);
    expect(out).toMatch(/Priority: 255/);
    expect(out).toMatch(/Checksum Status: Good/);
    expect(out).not.toMatch(/Bad|Malformed|incorrect/i);
  });

  for (const version of [3, 2] as const) {
    it(`the same keepalived.conf (VRRPv${version}), imported with vipshift import-keepalived on vipshift's box, runs opposite keepalived: one master`, async () => {
      await site();
      const interval = version === 2 ? 1 : INTERVAL;
      const conf = keepalivedConf({ routerId: 'a', vrid: VRID, priority: 150, advertInterval: interval, addresses: [`${VIP}/24`], version });
      const file = join(segment.dir, 'keepalived.conf');
      writeFileSync(file, conf);
      const cli = join(import.meta.dirname, '../../dist/cli.js');
      // On the box: the import puts the agent API on eth0's own address.
      const imported = JSON.parse(execFileSync('ip', ['netns', 'exec', b, process.execPath, cli, 'import-keepalived', file, '--json']).toString()) as {
        api: { listen: string };
        vrrp: { instances: { vrid: number; version: number; priority: number; advertIntervalSeconds: number }[] };
      };
      expect(imported.api.listen).toBe(`${B}:8441`);
      expect(imported.vrrp.instances).toMatchObject([{ vrid: VRID, version, priority: 150, advertIntervalSeconds: interval }]);
      segment.keepalived(a, conf);
      const v = new VipshiftVrrp(segment, b, imported.vrrp);
      await v.started();
      // Equal priorities: whichever became master first keeps the VIP (RFC 5798 §6.4.2: a
      // backup defers to an advert of equal priority); what matters is exactly one master.
      await waitFor('one of them alone to hold the VIP', () => holds(a) !== holds(b), 5000 + 4000 * interval);
      await sleep(4 * interval * 1000); // past Master_Down_Interval: the election is over
      const holder = holds(a) ? A : B;
      const other = holder === A ? B : A;
      const since = Date.now();
      const rounds = version === 2 ? 6 : 15;
      for (let i = 0; i < rounds; i++) {
        await sleep(interval * 1000);
        expect([holds(a), holds(b)]).toEqual([holder === A, holder === B]);
      }
      expect(wire((e) => e.kind === 'advert' && e.source === holder && e.at >= since).length).toBeGreaterThanOrEqual(rounds - 2);
      expect(wire((e) => e.kind === 'advert' && e.source === other && e.at >= since)).toEqual([]);
      expect((await v.state()).counters.badAdverts).toEqual({});
    }, 60_000);
  }
});
