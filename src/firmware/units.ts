/** The role services as systemd sees them (`systemctl show`, `journalctl`), for status output. */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);
/** Each role runs when the data partition holds its configuration (etcd: the controllers' store member). */
export const ROLES = ['appliance', 'keeper', 'controller', 'etcd'] as const;

export interface RoleUnit {
  unit: string;
  loaded: boolean; // the system slot has this unit
  configured: boolean; // its configuration file exists (ConditionPathExists)
  active: string; // ActiveState/SubState
  restarts: number;
  memoryBytes: number | null;
  startedAfterBootSeconds: number | null; // when its current process started, since boot
  firstStartedAfterBootSeconds: number | null; // its first start in this boot (before any restart)
  lastLog: string[];
}

export function parseShow(text: string): Map<string, string> {
  const props = new Map<string, string>();
  for (const line of text.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) props.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return props;
}

export async function roleUnits(logLines = 10): Promise<RoleUnit[]> {
  return Promise.all(
    ROLES.map(async (role) => {
      const unit = `vipshift-${role}.service`;
      const { stdout } = await run('systemctl', ['show', unit, '-p',
        'LoadState,ActiveState,SubState,NRestarts,MemoryCurrent,ExecMainStartTimestampMonotonic,ConditionResult']);
      const p = parseShow(stdout);
      const memory = Number(p.get('MemoryCurrent'));
      const start = Number(p.get('ExecMainStartTimestampMonotonic'));
      const log = await run('journalctl', ['-u', unit, '-n', String(logLines), '-o', 'cat', '--no-pager'])
        .then((r) => r.stdout.split('\n').filter(Boolean), () => []);
      // systemd logs "Started <description>." at each start; the first one of this boot.
      const first = await run('journalctl', ['-b', '-u', unit, '-o', 'json', '--output-fields=MESSAGE', '--no-pager'])
        .then((r) => r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { MESSAGE?: unknown; __MONOTONIC_TIMESTAMP?: string }))
        .then((entries) => entries.find((e) => typeof e.MESSAGE === 'string' && e.MESSAGE.startsWith('Started ')), () => undefined);
      return {
        unit,
        loaded: p.get('LoadState') === 'loaded',
        configured: p.get('ConditionResult') === 'yes',
        active: `${p.get('ActiveState')}/${p.get('SubState')}`,
        restarts: Number(p.get('NRestarts') ?? 0),
        memoryBytes: Number.isSafeInteger(memory) && memory > 0 ? memory : null,
        startedAfterBootSeconds: start > 0 ? start / 1e6 : null,
        firstStartedAfterBootSeconds: first?.__MONOTONIC_TIMESTAMP ? Number(first.__MONOTONIC_TIMESTAMP) / 1e6 : null,
        lastLog: log,
      };
    }),
  );
}
