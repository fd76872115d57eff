/**
 * Gratuitous ARP for addresses a migration moves here without VRRP (DirectAddressing),
 * so that the router (external segment) and the servers (inside segment) send to this
 * appliance at once instead of waiting for their ARP caches to age out.
 */
import { gratuitousArp } from '../packet/arp.js';
import { PcapLink, interfaceFacts } from '../kernel/pcap-link.js';

// The sessions only inject: a filter no frame matches (IEEE 802 local experimental ethertype).
const INJECT_ONLY = 'ether proto 0x88b5';

export class Announcer {
  private readonly links = new Map<string, PcapLink>();

  constructor(
    /** Frames sent per address: the first at once, then one every `spacingMs`. */
    private readonly count = 3,
    private readonly spacingMs = 20,
  ) {}

  /**
   * Sends the first frame now and the repeats in the background: the caller (step 2 of
   * a migration) must not wait for the spacing.
   */
  announce(ifname: string, address: string): void {
    let link = this.links.get(ifname);
    if (!link) {
      link = new PcapLink(ifname, INJECT_ONLY);
      this.links.set(ifname, link);
    }
    const frame = gratuitousArp(address, interfaceFacts(ifname).mac);
    link.send(frame);
    for (let i = 1; i < this.count; i++) {
      setTimeout(() => {
        if (this.links.get(ifname) === link) link.send(frame);
      }, i * this.spacingMs).unref();
    }
  }

  close(): void {
    for (const link of this.links.values()) link.close();
    this.links.clear();
  }
}
