/**
 * How a VIP's addresses (the VIP on the external interface, its inside address on the
 * internal one) come and go on this appliance: step 2 of a migration. Two ways behind
 * one interface: by VRRP (the VIP's sync group is released here and claimed there;
 * the speaker adds the addresses and sends gratuitous ARP), or, for a VIP no VRRP
 * instance covers, directly through rtnetlink and gratuitous ARP.
 */
import type { Addresses } from '../netlink/route.js';
import type { SpeakerControl } from '../vrrp/process.js';
import type { ApplianceConfig, VipConfig } from './config.js';

export interface VipAddressing {
  claim(vip: VipConfig): Promise<void>;
  release(vip: VipConfig): Promise<void>;
}

/** Sends gratuitous ARP for an address on an interface (src/nat/announce.ts). */
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
}
