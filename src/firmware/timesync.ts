/**
 * The box's time client (systemd-timesyncd) as `firmware status` shows it: whether it runs,
 * the servers it was given (the configuration partition's `ntp` file, else DHCP's, else
 * Debian's pool) and whether the clock is synchronized. Every signed API call needs clocks
 * within its replay window, so an operator must see this at a glance.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { parseShow } from './units.js';

const run = promisify(execFile);
export const TIME_UNIT = 'systemd-timesyncd.service';

export interface TimeSync {
  unit: string;
  enabled: boolean; // starts at boot
  active: string; // ActiveState/SubState
  servers: string[]; // configured (ntp file), from DHCP, else the fallback list
  source: 'configuration' | 'dhcp' | 'fallback' | 'none';
  serverName: string | null; // the one in use now
  synchronized: boolean;
}

const words = (v: string | undefined): string[] => (v ?? '').split(/\s+/).filter(Boolean);

/** Picks the servers timesyncd uses, in its own order of preference. */
export function timeSyncFrom(unit: Map<string, string>, timesync: Map<string, string>, clock: Map<string, string>): TimeSync {
  const configured = words(timesync.get('SystemNTPServers'));
  const dhcp = words(timesync.get('LinkNTPServers'));
  const fallback = words(timesync.get('FallbackNTPServers'));
  const [source, servers] = configured.length
    ? (['configuration', configured] as const)
    : dhcp.length
      ? (['dhcp', dhcp] as const)
      : fallback.length
        ? (['fallback', fallback] as const)
        : (['none', []] as const);
  return {
    unit: TIME_UNIT,
    enabled: unit.get('UnitFileState') === 'enabled',
    active: `${unit.get('ActiveState')}/${unit.get('SubState')}`,
    servers: [...servers],
    source,
    serverName: timesync.get('ServerName') || null,
    synchronized: clock.get('NTPSynchronized') === 'yes',
  };
}

export async function timeSync(): Promise<TimeSync> {
  // A time client that does not answer D-Bus must not hold the status up.
  const show = (cmd: string, args: string[]) => run(cmd, args, { timeout: 5000 }).then((r) => parseShow(r.stdout), () => new Map<string, string>());
  const [unit, timesync, clock] = await Promise.all([
    show('systemctl', ['show', TIME_UNIT, '-p', 'ActiveState,SubState,UnitFileState']),
    // timedatectl takes one property per -p (no comma lists as systemctl).
    show('timedatectl', ['show-timesync', ...['SystemNTPServers', 'LinkNTPServers', 'FallbackNTPServers', 'ServerName'].flatMap((p) => ['-p', p])]),
    show('timedatectl', ['show', '-p', 'NTPSynchronized']),
  ]);
  return timeSyncFrom(unit, timesync, clock);
}
