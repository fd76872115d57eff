/**
 * The appliance's per-network-namespace sysctls, written through /proc/sys of the calling
 * process's namespace.
 */
import { writeFile } from 'node:fs/promises';

/**
 * The TCP handshake states' timeouts (the kernel's defaults), pinned in the appliance's
 * namespace: a half-open entry's age is its state's timeout minus the timeout left
 * (entry-record.ts tells a handshake in flight from a SYN flood's leftovers by it).
 */
export const TCP_TIMEOUT_SYN_SENT_S = 120;
export const TCP_TIMEOUT_SYN_RECV_S = 60;

export const APPLIANCE_SYSCTLS: Readonly<Record<string, string>> = {
  // The appliance routes between its external and internal segments.
  'net.ipv4.ip_forward': '1',
  // A non-SYN TCP packet without an entry is INVALID instead of being picked up mid-stream:
  // the ruleset answers it with a reset (the patent's unknown access → error).
  'net.netfilter.nf_conntrack_tcp_loose': '0',
  // A packet outside the tracked window of a known connection stays valid, so that
  // `ct state invalid` means "no entry" and a late retransmission is not answered with a
  // reset that would kill a live (possibly just migrated) connection.
  'net.netfilter.nf_conntrack_tcp_be_liberal': '1',
  // Every entry reports its events, also one created while nobody listened (the default, 2,
  // leaves those silent for life): the access table mirror must hear every entry end.
  'net.netfilter.nf_conntrack_events': '1',
  'net.netfilter.nf_conntrack_tcp_timeout_syn_sent': String(TCP_TIMEOUT_SYN_SENT_S),
  'net.netfilter.nf_conntrack_tcp_timeout_syn_recv': String(TCP_TIMEOUT_SYN_RECV_S),
};

const pathOf = (name: string): string => `/proc/sys/${name.replace(/\./g, '/')}`;

export async function writeSysctl(name: string, value: string): Promise<void> {
  try {
    await writeFile(pathOf(name), `${value}\n`);
  } catch (e) {
    throw new Error(`sysctl ${name}=${value}: ${(e as Error).message}`);
  }
}

export async function applySysctls(values: Readonly<Record<string, string>> = APPLIANCE_SYSCTLS): Promise<void> {
  for (const [name, value] of Object.entries(values)) await writeSysctl(name, value);
}
