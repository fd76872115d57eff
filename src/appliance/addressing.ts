/**
 * How a VIP's addresses (the VIP on the external interface, its inside address on the
 * internal one) come and go on this appliance: step 2 of a migration. Two ways behind
 * one interface: by VRRP (the VIP's sync group is released here and claimed there;
 * the speaker adds the addresses and sends gratuitous ARP), or, for a VIP no VRRP
 * instance covers, directly through rtnetlink and gratuitous ARP.
 */
import type { Addresses } from '../netlink/route.js';
import type { SpeakerControl } from '../vrrp/process.js';
import type { InstanceStatus } from '../vrrp/speaker.js';
import type { ApplianceConfig, VipConfig } from '../config/appliance.js';

export interface VipAddressing {
  claim(vip: VipConfig): Promise<void>;
  release(vip: VipConfig): Promise<void>;
  /**
   * At start: settles who holds each VIP's addresses and answers which of them this
   * appliance holds (its mode table starts from that).
   */
  settle(vips: VipConfig[]): Promise<Set<string>>;
}

/** Sends gratuitous ARP for an address on an interface (src/appliance/announce.ts). */
export type Announce = (ifname: string, address: string) => void;

export class DirectAddressing implements VipAddressing {
  constructor(
    private readonly config: ApplianceConfig,
    private readonly addresses: Addresses,
    private readonly announce: Announce,
  ) {}

  async claim(vip: VipConfig): Promise<void> {
    const { external, internal } = this.config.interfaces;
    await this.addresses.add(external, `${vip.address}/${vip.prefixLength}`);
    await this.addresses.add(internal, `${vip.insideAddress}/${vip.prefixLength}`);
    this.announce(external, vip.address);
    this.announce(internal, vip.insideAddress);
  }

  async release(vip: VipConfig): Promise<void> {
    const { external, internal } = this.config.interfaces;
    await this.addresses.remove(external, `${vip.address}/${vip.prefixLength}`);
    await this.addresses.remove(internal, `${vip.insideAddress}/${vip.prefixLength}`);
  }

  /** Without VRRP the configuration says who holds what. */
  async settle(vips: VipConfig[]): Promise<Set<string>> {
    const held = new Set<string>();
    for (const vip of vips) {
      if (vip.owner === this.config.appliance) {
        await this.claim(vip);
        held.add(vip.name);
      } else {
        await this.release(vip);
      }
    }
    return held;
  }
}

/** The VRRP sync group (or lone instance) that carries a VIP's address, if any. */
export function vrrpGroupOf(config: ApplianceConfig, vip: VipConfig): string | undefined {
  const instance = config.vrrp?.instances.find((i) => i.addresses.some((a) => a.address.split('/')[0] === vip.address));
  if (!instance) return undefined;
  return config.vrrp?.syncGroups.find((g) => g.instances.includes(instance.name))?.name ?? instance.name;
}

export class VrrpAddressing implements VipAddressing {
  constructor(
    private readonly config: ApplianceConfig,
    private readonly speaker: SpeakerControl,
    private readonly fallback: VipAddressing,
  ) {}

  claim(vip: VipConfig): Promise<void> {
    const group = vrrpGroupOf(this.config, vip);
    return group ? this.speaker.claim(group) : this.fallback.claim(vip);
  }

  release(vip: VipConfig): Promise<void> {
    const group = vrrpGroupOf(this.config, vip);
    return group ? this.speaker.release(group) : this.fallback.release(vip);
  }

  /**
   * At start VRRP decides, except for one case: a VIP this appliance is the configured
   * first owner of, for which no master is heard within 1.5 advertisement intervals, is
   * claimed at once — a cold start, so it does not wait out Master_Down_Interval, and the
   * peer (lower priority, longer Master_Down_Interval) does not get there first. A master
   * that is heard (the peer took the VIP over while this appliance was down) keeps it: no
   * preemption takes connections back from the appliance that now holds them. Then waits
   * until every instance is master or has been backup past its Master_Down_Interval.
   */
  async settle(vips: VipConfig[], limitMs = 5000, pollMs = 25): Promise<Set<string>> {
    const grouped = vips.filter((v) => vrrpGroupOf(this.config, v));
    const held = await this.fallback.settle(vips.filter((v) => !vrrpGroupOf(this.config, v)));
    const t0 = performance.now();
    const membersOf = (vip: VipConfig) => {
      const group = vrrpGroupOf(this.config, vip)!;
      return this.config.vrrp?.syncGroups.find((g) => g.name === group)?.instances ?? [group];
    };
    const instancesOf = (vip: VipConfig, state: InstanceStatus[]) => state.filter((i) => membersOf(vip).includes(i.name));

    const interval = Math.max(...(this.config.vrrp?.instances ?? []).map((i) => i.advertIntervalSeconds), 0.01);
    await new Promise((r) => setTimeout(r, 1.5 * interval * 1000 + 50));
    const heard = await this.speaker.freshState();
    for (const vip of grouped) {
      const instances = instancesOf(vip, heard);
      const unclaimed = instances.every((i) => i.state !== 'master' && !i.masterAddress);
      if (vip.owner === this.config.appliance && unclaimed) await this.speaker.claim(vrrpGroupOf(this.config, vip)!);
    }
    for (;;) {
      const elapsed = performance.now() - t0;
      const state = this.speaker.state();
      const settled = grouped.every((vip) => {
        const instances = instancesOf(vip, state);
        // An instance still in initialize is sitting out its startupDelaySeconds: it holds nothing.
        return instances.length > 0 && instances.every((i) => i.state === 'master' || i.state === 'initialize' || (i.state === 'backup' && elapsed > i.masterDownInterval + 100));
      });
      if (settled || elapsed > limitMs) break;
      await new Promise((r) => setTimeout(r, pollMs));
    }
    const state = await this.speaker.freshState();
    for (const vip of grouped) if (instancesOf(vip, state).every((i) => i.state === 'master')) held.add(vip.name);
    return held;
  }
}
