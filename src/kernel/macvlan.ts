/**
 * The one module that creates and deletes the virtual-MAC interfaces of VRRP (keepalived's
 * `use_vmac`): a macvlan on the instance's interface with the virtual router MAC
 * 00-00-5E-00-01-{VRID} (RFC 5798 §7.3), so that the virtual addresses placed on it are
 * answered by ARP with the virtual MAC (§8.1.2) and a new master needs no cache updates
 * beyond the switch's. Runs iproute2's `ip`; synchronous, as it happens once at start and stop.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';

/** What the VRRP speaker needs; a memory one in unit tests. */
export interface VirtualMacLinks {
  /** Create (again, if a crashed run left it) `name` on `base` with `mac`, up. */
  create(base: string, name: string, mac: string): void;
  /** Delete it; a missing interface is not an error. */
  remove(name: string): void;
}

function ip(args: string[]): void {
  try {
    execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    const stderr = String((e as { stderr?: Buffer }).stderr ?? '').trim();
    throw new Error(`ip ${args.join(' ')}: ${stderr || (e as Error).message}`);
  }
}

/**
 * arp_ignore 1 (answer only for addresses of the interface the request came in on) on both:
 * otherwise the base interface would answer for the virtual addresses too, with its own MAC.
 */
function arpIgnore(ifname: string): void {
  writeFileSync(`/proc/sys/net/ipv4/conf/${ifname}/arp_ignore`, '1\n');
}

/**
 * arp_announce 2 on the base: its own ARP requests name its own address. Otherwise a reply
 * from a virtual address, routed out of the base, asks for the client with the virtual
 * address as sender and the base's MAC, and the client's cache of the virtual address moves
 * to the base's MAC (keepalived leaves this so).
 */
function arpAnnounce(ifname: string): void {
  writeFileSync(`/proc/sys/net/ipv4/conf/${ifname}/arp_announce`, '2\n');
}

export const macvlanLinks: VirtualMacLinks = {
  create(base, name, mac) {
    try {
      ip(['link', 'del', name]);
    } catch {
      /* none left behind */
    }
    // Private mode: the VRRP interfaces of one base never talk to each other, as keepalived's.
    ip(['link', 'add', 'link', base, 'name', name, 'address', mac, 'type', 'macvlan', 'mode', 'private']);
    arpIgnore(base);
    arpAnnounce(base);
    arpIgnore(name);
    ip(['link', 'set', name, 'up']);
  },
  remove(name) {
    try {
      ip(['link', 'del', name]);
    } catch {
      /* already gone */
    }
  },
};
