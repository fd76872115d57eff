/**
 * What the failover tests and benchmarks do to a lab: talk to an appliance's agent or a
 * keeper as the operator (`admin`), cut an appliance's power, stop and restart a keeper.
 */
import path from 'node:path';
import type { ApplianceConfigInput } from '../../../src/config/appliance.js';
import { CLI, credentialsDir } from '../../../src/lab/lab.js';
import { run } from '../../../src/lab/netns.js';
import { startProcess } from '../../../src/lab/processes.js';
import { type KeeperConfig, type Site, apiUrl, host } from '../../../src/lab/site.js';
import type { ApplianceStatus } from '../../../src/appliance/appliance.js';
import type { ReplicationStatus } from '../../../src/replication/replicator.js';
import type { TakeoverReport } from '../../../src/replication/takeover.js';

export type AgentStatus = ApplianceStatus & { replication: ReplicationStatus; failover: { standby: boolean; takeovers: TakeoverReport[] } };

export interface KeeperStatusView {
  copies: number;
  vips: { vip: string; name?: string; copies: number }[];
}

/** An API request signed as `admin`, sent from the controller's namespace (the management segment); `timeoutMs` for its answer. */
export async function apiCall<T>(site: Site, url: string, method: string, apiPath: string, body?: unknown, timeoutMs = 20_000): Promise<T> {
  const dist = path.dirname(CLI);
  const script = `
    const { loadCredentials } = await import(${JSON.stringify(path.join(dist, 'api/auth.js'))});
    const { ApiClient } = await import(${JSON.stringify(path.join(dist, 'api/client.js'))});
    const c = new ApiClient(${JSON.stringify(url)}, loadCredentials(${JSON.stringify(credentialsDir(site))}, 'admin'), { timeoutMs: ${timeoutMs} });
    const method = ${JSON.stringify(method)};
    const r = method === 'GET' ? await c.get(${JSON.stringify(apiPath)}) : await c.post(${JSON.stringify(apiPath)}, ${JSON.stringify(body ?? {})});
    process.stdout.write(JSON.stringify(r));
    c.close();`;
  const r = await run('ip', ['netns', 'exec', host(site, site.apis.controller.host).namespace, process.execPath, '--input-type=module', '-e', script]);
  if (r.code !== 0) throw new Error(`${method} ${url}${apiPath}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as T;
}

export const agentStatus = (site: Site, appliance: string) => apiCall<AgentStatus>(site, apiUrl(site.apis.appliances[appliance]!), 'GET', '/v1/status');
/**
 * Entries made behind an appliance's back (ctnetlink from a test or bench) reach its access
 * table mirror only when it re-reads its table; a real connection's come through its events.
 */
export const rebuildMirror = (site: Site, appliance: string, timeoutMs?: number) =>
  apiCall<{ synced: boolean; entries: number }>(site, apiUrl(site.apis.appliances[appliance]!), 'POST', '/v1/mirror/rebuild', undefined, timeoutMs);
export const keeperStatus = (site: Site, server: string) => apiCall<KeeperStatusView>(site, apiUrl(site.apis.keepers[server]!), 'GET', '/v1/status');

export function copiesOf(k: KeeperStatusView, vipName: string): number {
  return k.vips.find((v) => v.name === vipName)?.copies ?? 0;
}

/**
 * A power loss as the rest of the site sees it: every process of the host frozen at once
 * (SIGSTOP: none gets to say goodbye, e.g. a VRRP priority-0 advert when its parent dies),
 * its links set down, then every process SIGKILLed.
 */
export async function powerLoss(site: Site, hostName: string): Promise<void> {
  const ns = host(site, hostName).namespace;
  const pids = (await run('ip', ['netns', 'pids', ns])).stdout.split(/\s+/).filter(Boolean);
  if (pids.length > 0) await run('kill', ['-STOP', ...pids]);
  for (const i of host(site, hostName).interfaces) await run('ip', ['-n', ns, 'link', 'set', i.name, 'down']);
  if (pids.length > 0) await run('kill', ['-KILL', ...pids]);
}

/** SIGKILLs a server's keeper (the processes of its namespace running `keeper`). */
export async function killKeeper(site: Site, server: string): Promise<void> {
  const ns = host(site, server).namespace;
  const pids = (await run('ip', ['netns', 'pids', ns])).stdout.split(/\s+/).filter(Boolean);
  for (const pid of pids) {
    const cmd = (await run('cat', [`/proc/${pid}/cmdline`])).stdout.split('\0');
    if (cmd.includes('keeper')) await run('kill', ['-KILL', pid]);
  }
}

/** Starts a server's keeper again, as `lab up` did; resolves once it answers. */
export async function startKeeper(site: Site, server: string): Promise<void> {
  startProcess({
    name: `${server}-keeper-again`,
    namespace: host(site, server).namespace,
    command: [process.execPath, CLI, 'keeper', '--config', path.join(site.stateDir, `${server}-keeper.yaml`), '--credentials', credentialsDir(site)],
    logDir: site.stateDir,
  });
  await waitFor(`keeper ${server} answering`, async () => (await keeperStatus(site, server).then(() => true, () => false)), 15_000);
}

export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number, everyMs = 200): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Configuration changes on top of the lab's (whose appliances are standbys by default): replication settings, hold, keepers' sockdiag. */
export function failoverLab(options: { replication?: Partial<NonNullable<ApplianceConfigInput['replication']>>; sockdiag?: boolean; hold?: ApplianceConfigInput['hold'] }) {
  return {
    appliance: (_name: string, c: ApplianceConfigInput): ApplianceConfigInput => ({
      ...c,
      ...(options.hold ? { hold: options.hold } : {}),
      replication: { ...c.replication, ...options.replication },
    }),
    keeper: (_name: string, c: KeeperConfig): KeeperConfig => ({ ...c, sockdiag: options.sockdiag ?? false }),
  };
}
