import { describe, expect, it } from 'vitest';
import { conntrackdConfig, parseCacheStats, parseCommit, pathsIn } from '../../bench/conntrackd.js';

// `conntrackd -s` of conntrackd 1.4.7 (Debian), captured in a lab: lb1 after its start-up dump.
const STATS = `cache internal:
current active connections:	       10002
connections created:		       10002	failed:	           0
connections updated:		           0	failed:	           0
connections destroyed:		           0	failed:	           0

cache external:
current active connections:	           7
connections created:		           7	failed:	           0
connections updated:		           0	failed:	           0
connections destroyed:		           0	failed:	           0

traffic processed:
                   0 Bytes                         0 Pckts
`;

// Its log around a commit (two commits: the last one counts).
const LOG = `[Wed Nov 25 11:31:48 2026] (pid=30730) [notice] resync requested
[Wed Nov 25 11:31:50 2026] (pid=30730) [notice] committing all external caches
[Wed Nov 25 11:31:50 2026] (pid=30730) [notice] Committed 3 new entries
[Wed Nov 25 11:31:50 2026] (pid=30730) [notice] commit has taken 0.000412 seconds
[Wed Nov 25 11:31:52 2026] (pid=30730) [notice] committing all external caches
[Wed Nov 25 11:31:52 2026] (pid=30730) [notice] netlink event socket buffer size has been doubled to 16777216 bytes
[Wed Nov 25 11:31:52 2026] (pid=30730) [notice] Committed 10002 new entries
[Wed Nov 25 11:31:52 2026] (pid=30730) [notice] commit has taken 0.085866 seconds
`;

describe('conntrackd reference of bench/migration.ts', () => {
  it('reads both caches from conntrackd -s', () => {
    expect(parseCacheStats(STATS)).toEqual({ internal: 10002, external: 7 });
  });

  it('refuses stats without a cache section, quoting them', () => {
    expect(() => parseCacheStats('traffic processed:\n 0 Bytes\n')).toThrow(/no "cache internal" section/);
  });

  it("takes the last commit's own time and count from the log", () => {
    expect(parseCommit(LOG)).toEqual({ committed: 10002, ms: 85.866 });
    expect(parseCommit(LOG.split('\n').slice(0, 2).join('\n'))).toBeUndefined();
  });

  it('writes an FT-FW configuration over unicast UDP with private lock, socket and log', () => {
    const paths = pathsIn('/tmp/x');
    const conf = conntrackdConfig({ namespace: 'vs-lb1', address: '192.0.2.11', peer: '192.0.2.12', interface: 'mgmt0' }, paths, 100_000);
    expect(conf).toMatch(/Mode FTFW \{/);
    expect(conf).toMatch(/IPv4_address 192\.0\.2\.11\n\s*IPv4_Destination_Address 192\.0\.2\.12/);
    expect(conf).toMatch(/Interface mgmt0/);
    expect(conf).toContain('LockFile /tmp/x/conntrackd.lock');
    expect(conf).toContain('Path /tmp/x/conntrackd.ctl');
    expect(conf).toContain('LogFile /tmp/x/conntrackd.log');
    // Room for every entry twice (dead entries kept for retransmission), in powers of two.
    expect(conf).toMatch(/HashLimit 262144/);
    expect(conf).not.toMatch(/Multicast/);
  });
});
