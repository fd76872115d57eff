/**
 * The appliance's per-network-namespace sysctls, written through /proc/sys of the calling
 * process's namespace.
 */
import { readFile, writeFile } from 'node:fs/promises';

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
};

const pathOf = (name: string): string => `/proc/sys/${name.replace(/\./g, '/')}`;

export async function readSysctl(name: string): Promise<string> {
  return (await readFile(pathOf(name), 'utf8')).trim();
}

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
