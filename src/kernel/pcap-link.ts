/**
 * The one module that owns the `pcap` package: a capture session per interface in immediate
 * mode (buffer_timeout 0; the package's default of 1000 ms delays packets by up to a second),
 * filtered in the kernel to VRRP and ARP, and frame injection. Promiscuous capture is what
 * lets us see adverts to 224.0.0.18 without joining the group through a socket: a veth or
 * bridge port delivers the multicast frame to packet taps either way.
 * Also reads the interface facts the speaker needs (MAC, primary address, carrier).
 */
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { networkInterfaces } from 'node:os';

interface PcapSessionLike extends EventEmitter {
  readonly link_type: string;
  inject(frame: Buffer): void;
  close(): void;
}
interface PcapModule {
  createSession(device: string, options: { filter?: string; buffer_timeout?: number; promiscuous?: boolean; buffer_size?: number; snap_length?: number }): PcapSessionLike;
  warningHandler: (message: string) => void;
}

const require = createRequire(import.meta.url);
let pcapModule: PcapModule | undefined;
function pcap(): PcapModule {
  pcapModule ??= require('pcap') as PcapModule;
  return pcapModule;
}

/** VRRP adverts (also VRRPv2 inside IPsec AH, protocol 51) and ARP (replies resolve unicast peers). */
export const LINK_FILTER = 'ip proto 112 or ip proto 51 or arp';

/** A link-layer port: what the speaker sends frames through and hears frames from. */
export interface Link {
  readonly ifname: string;
  send(frame: Buffer): void;
  /** `at` is the capture timestamp (ms since the epoch, µs resolution). */
  onFrame(listener: (frame: Buffer, at: number) => void): void;
  close(): void;
}

export class PcapLink implements Link {
  private readonly session: PcapSessionLike;
  private readonly listeners: ((frame: Buffer, at: number) => void)[] = [];
  /** Frames whose handler threw: the native callback would turn an exception into a crash. */
  handlerErrors = 0;

  constructor(readonly ifname: string, filter = LINK_FILTER) {
    const p = pcap();
    p.warningHandler = () => undefined; // "no IPv4 address assigned" on a bare interface is harmless
    this.session = p.createSession(ifname, {
      filter,
      buffer_timeout: 0,
      promiscuous: true,
      buffer_size: 2 * 1024 * 1024,
      snap_length: 2048,
    });
    if (this.session.link_type !== 'LINKTYPE_ETHERNET') {
      this.session.close();
      throw new Error(`${ifname}: link type ${this.session.link_type}, VRRP needs Ethernet`);
    }
    this.session.on('packet', (packet: { buf: Buffer; header: Buffer }) => {
      // The package reuses one buffer for every packet: copy before anyone keeps it.
      const caplen = packet.header.readUInt32LE(8);
      const at = packet.header.readUInt32LE(0) * 1000 + packet.header.readUInt32LE(4) / 1000;
      const frame = Buffer.from(packet.buf.subarray(0, caplen));
      for (const listener of this.listeners) {
        try {
          listener(frame, at);
        } catch {
          this.handlerErrors++;
        }
      }
    });
  }

  send(frame: Buffer): void {
    this.session.inject(frame);
  }

  onFrame(listener: (frame: Buffer, at: number) => void): void {
    this.listeners.push(listener);
  }

  close(): void {
    this.session.close();
  }
}

export interface InterfaceFacts {
  mac: string;
  /** IPv4 addresses in the kernel's order: the first one not virtual is the primary. */
  addresses: string[];
  /** The same addresses with their prefix ("198.18.0.3/24"): which neighbours are on the link. */
  networks?: string[];
}

export function interfaceFacts(ifname: string): InterfaceFacts {
  const entries = networkInterfaces()[ifname];
  let mac = entries?.[0]?.mac;
  if (!mac) {
    try {
      mac = readFileSync(`/sys/class/net/${ifname}/address`, 'utf8').trim();
    } catch {
      throw new Error(`interface ${ifname}: no such interface`);
    }
  }
  const ipv4 = (entries ?? []).filter((e) => e.family === 'IPv4');
  return { mac, addresses: ipv4.map((e) => e.address), networks: ipv4.flatMap((e) => (e.cidr ? [e.cidr] : [])) };
}

/** Carrier of an interface, for track_interface: false when it is down or gone. */
export function linkIsUp(ifname: string): boolean {
  try {
    const operstate = readFileSync(`/sys/class/net/${ifname}/operstate`, 'utf8').trim();
    return operstate === 'up' || operstate === 'unknown';
  } catch {
    return false;
  }
}
