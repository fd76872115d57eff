/**
 * Access-table entries of a VIP made up for the console's tests and benchmark: distinct
 * clients (198.51.100.100-199, ports from 1024) → the VIP → its server, ESTABLISHED, with
 * the VIP's ct mark, created in an appliance's namespace through ctnetlink.
 */
import { IPPROTO_TCP, IPS_ASSURED, IPS_SEEN_REPLY, TCP_CONNTRACK_ESTABLISHED } from '../../src/netlink/ctnetlink.js';
import { RECORD_SIZE, writeRecord } from '../../src/netlink/entry-record.js';
import { Conntrack } from '../../src/netlink/conntrack.js';

export function syntheticRecords(n: number, vip: { mark: number; address: string; port: number; server: string }): Buffer {
  const b = Buffer.alloc(n * RECORD_SIZE);
  for (let i = 0; i < n; i++) {
    writeRecord(b, i * RECORD_SIZE, {
      client: { address: `198.51.100.${100 + (i % 100)}`, port: 1024 + Math.floor(i / 100) },
      vip: { address: vip.address, port: vip.port },
      server: { address: vip.server, port: vip.port },
      proto: IPPROTO_TCP,
      tcpState: TCP_CONNTRACK_ESTABLISHED,
      tcpWindow: { wscaleOriginal: 7, wscaleReply: 7, flagsOriginal: 0, flagsReply: 0 },
      status: IPS_SEEN_REPLY | IPS_ASSURED,
      timeout: 3600,
      mark: vip.mark,
    });
  }
  return b;
}

/** Creates them in a namespace; throws if any could not be created. */
export async function createSynthetic(netns: string, records: Buffer): Promise<void> {
  const ct = new Conntrack({ netns });
  try {
    const r = await ct.createFromRecords(records);
    if (r.failures.length > 0) throw new Error(`${r.failures.length} synthetic entries not created in ${netns}: ${r.failures[0]!.code}`);
  } finally {
    ct.close();
  }
}
