/**
 * `lab up`, `lab down`, `lab info` as functions: the site (site.ts) built by netns.ts, its
 * processes run by processes.ts, everything recorded in `<stateDir>/state.json`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import YAML from 'yaml';
import type { ApplianceConfigInput } from '../config/appliance.js';
import { createClusterCredentials } from '../api/auth.js';
import { createMetricsToken } from '../metrics/listener.js';
import { buildSite, deleteNamespaces, listNamespaces, namespacePids } from './netns.js';
import { createLabEtcdPki, etcdCommand } from './etcd.js';
import {
  type LabState,
  type ProcessRecord,
  STATE_FILE,
  type Started,
  identify,
  isAlive,
  readState,
  selfId,
  startProcess,
  stopProcesses,
  waitForListeners,
  writeState,
} from './processes.js';
import {
  DEFAULT_STATE_BASE,
  type LabInfo,
  type KeeperConfig,
  type Site,
  applianceConfig,
  clusterMembers,
  configPath,
  controllerConfig,
  defaultSite,
  host,
  hostsOf,
  keeperConfig,
  labInfo,
  pkiDir,
  siteProblems,
} from './site.js';

/** The repository this module belongs to (works from src/ under tsx and from dist/). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const CLI = path.join(REPO_ROOT, 'dist', 'cli.js');

/** The daemons of other parts that `lab up` starts when their command is registered. */
export type Daemon = 'appliance' | 'controller' | 'keeper';
export type DaemonStatus = 'started' | 'not registered' | 'disabled';

export interface UpOptions {
  name?: string;
  stateBase?: string;
  /** Start each daemon when its command exists (default true for each). */
  appliances?: boolean;
  controller?: boolean;
  keepers?: boolean;
  /** Controllers: 1 (default, SQLite) or 2–3 (on etcd, with an etcd member on each one's host). */
  controllers?: number;
  /** VIPs beyond the site's four, all on lb1 (benchmarks at scale; site.ts, fullnatVip). */
  extraVips?: number;
  /** Added to the controllers' environment (tests: the pause hook). */
  controllerEnv?: Record<string, string>;
  /** A disposable lab owned by this process (tests): the next test run may reap it once we are gone. */
  owned?: boolean;
  /** How long a started process may take to listen on its ports. */
  readyTimeoutMs?: number;
  /** Changes to the configurations `lab up` writes (tests and benchmarks: replication off, a tiny buffer...). */
  configure?: {
    appliance?: (name: string, config: ApplianceConfigInput) => ApplianceConfigInput;
    keeper?: (name: string, config: KeeperConfig) => KeeperConfig;
  };
}

export interface LabStatus extends LabInfo {
  createdAt: string;
  owner: LabState['owner'];
  daemons: Record<Daemon, DaemonStatus>;
  processes: Array<ProcessRecord & { running: boolean }>;
}

export interface UpResult {
  status: LabStatus;
  /** Milliseconds: removing leftovers, namespaces and links, processes, all of it. */
  timings: { cleanupMs: number; buildMs: number; processesMs: number; totalMs: number };
}

interface StoredState extends LabState {
  daemons: Record<Daemon, DaemonStatus>;
  /** Absent in the default site (one controller). */
  controllers?: number;
  /** Absent in the default site (four VIPs). */
  extraVips?: number;
}

/** The site of a lab: its controller count as `up` recorded it unless given. */
export function siteFor(name: string | undefined, stateBase?: string, controllers?: number, extraVips?: number): Site {
  const base = stateBase ?? process.env.VIPSHIFT_LAB_DIR ?? DEFAULT_STATE_BASE;
  let count = controllers;
  let extra = extraVips;
  if (count === undefined || extra === undefined) {
    let stored: StoredState | undefined;
    try {
      stored = readState(defaultSite({ name, stateBase: base }).stateDir) as StoredState | undefined;
    } catch {
      stored = undefined; // a broken state file: the default site
    }
    count ??= stored?.controllers;
    extra ??= stored?.extraVips;
  }
  return defaultSite({ name, stateBase: base, ...(count ? { controllers: count } : {}), ...(extra ? { extraVips: extra } : {}) });
}

/**
 * The commands registered in the built CLI (dist/cli/main.js) — the one `lab up` runs — read
 * from its usage text, so that the lab starts a daemon only once its part has landed.
 */
export async function registeredCommands(): Promise<Set<string>> {
  const mainJs = path.join(REPO_ROOT, 'dist', 'cli', 'main.js');
  const mod = (await import(pathToFileURL(mainJs).href)) as { usage: () => string };
  const names = [...mod.usage().matchAll(/^ {2}(\S+) /gm)].map((m) => m[1]!);
  return new Set(names);
}

export async function labUp(options: UpOptions = {}): Promise<UpResult> {
  const t0 = performance.now();
  const site = siteFor(options.name, options.stateBase, options.controllers ?? 1, options.extraVips ?? 0);
  const problems = siteProblems(site);
  if (problems.length) throw new Error(`lab ${site.name}: the site is inconsistent:\n  ${problems.join('\n  ')}`);
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} does not exist: build first (npx tsc -p tsconfig.json)`);

  await labDown({ name: site.name, stateBase: options.stateBase });
  const t1 = performance.now();

  const commands = await registeredCommands();
  const want = (d: Daemon, enabled: boolean | undefined): DaemonStatus =>
    enabled === false ? 'disabled' : commands.has(d) ? 'started' : 'not registered';
  const state: StoredState = {
    name: site.name,
    createdAt: new Date().toISOString(),
    owner: options.owned ? selfId() : null,
    namespaces: site.hosts.map((h) => h.namespace),
    ...(site.apis.controllers.length > 1 ? { controllers: site.apis.controllers.length } : {}),
    ...(options.extraVips ? { extraVips: options.extraVips } : {}),
    processes: [],
    daemons: {
      appliance: want('appliance', options.appliances),
      keeper: want('keeper', options.keepers),
      controller: want('controller', options.controller),
    },
  };
  // Recorded before the first namespace exists: whatever happens next, `down` finds it all.
  writeState(site.stateDir, state);

  try {
    await buildSite(site);
    const t2 = performance.now();
    writeConfigs(site, options.configure);
    // Every API of the lab is authenticated; the operator's CLI on the host is `admin`.
    createClusterCredentials(credentialsDir(site), clusterMembers(site), true);
    // ...and every process has a metrics listener a stock Prometheus scrapes with this token.
    createMetricsToken(credentialsDir(site));
    if (site.etcd) await createLabEtcdPki(site);
    await startProcesses(site, state, options.readyTimeoutMs ?? 15_000, options.controllerEnv);
    const t3 = performance.now();
    return {
      status: statusOf(site, state),
      timings: { cleanupMs: ms(t1 - t0), buildMs: ms(t2 - t1), processesMs: ms(t3 - t2), totalMs: ms(t3 - t0) },
    };
  } catch (e) {
    // The logs stay for the post-mortem (the error names them); the next up or down removes them.
    await labDown({ name: site.name, stateBase: options.stateBase, keepLogs: true }).catch(() => {});
    throw e;
  }
}

export const credentialsDir = pkiDir;

function writeConfigs(site: Site, configure: UpOptions['configure'] = {}): void {
  const header = `# written by 'vipshift lab up' for lab ${site.name}; derived from src/lab/site.ts\n`;
  const write = (hostName: string, config: object) =>
    fs.writeFileSync(configPath(site, hostName), header + YAML.stringify(config));
  const same = <T>(_: string, c: T): T => c;
  for (const a of hostsOf(site, 'appliance')) write(a.name, (configure.appliance ?? same)(a.name, applianceConfig(site, a.name)));
  for (const s of hostsOf(site, 'server')) fs.writeFileSync(path.join(site.stateDir, `${s.name}-keeper.yaml`), header + YAML.stringify((configure.keeper ?? same)(s.name, keeperConfig(site, s.name))));
  for (const c of site.apis.controllers) write(c.host, controllerConfig(site, c.host));
}

async function startProcesses(site: Site, state: StoredState, timeoutMs: number, env?: Record<string, string>): Promise<void> {
  const node = process.execPath;
  const start = (name: string, hostName: string, args: string[], command = [node, CLI], env?: Record<string, string>): Started => {
    const started = startProcess({ name, namespace: host(site, hostName).namespace, command: [...command, ...args], logDir: site.stateDir, ...(env ? { env } : {}) });
    state.processes.push(started.record);
    writeState(site.stateDir, state);
    return started;
  };
  const waits: Array<Promise<void>> = [];
  for (const s of hostsOf(site, 'server')) {
    const svc = site.service;
    const p = start(`${s.name}-service`, s.name, ['lab', 'serve', '--name', s.name, '--echo-port', `${svc.echoPort}`, '--http-port', `${svc.httpPort}`]);
    waits.push(waitForListeners(p, [svc.echoPort, svc.httpPort], timeoutMs));
    if (state.daemons.keeper === 'started') {
      const k = start(`${s.name}-keeper`, s.name, ['keeper', '--config', path.join(site.stateDir, `${s.name}-keeper.yaml`), '--credentials', credentialsDir(site)]);
      waits.push(waitForListeners(k, [site.apis.keepers[s.name]!.port], timeoutMs));
    }
  }
  if (state.daemons.appliance === 'started') {
    for (const a of hostsOf(site, 'appliance')) {
      const p = start(`${a.name}-appliance`, a.name, ['appliance', '--config', configPath(site, a.name), '--credentials', credentialsDir(site)]);
      waits.push(waitForListeners(p, [site.apis.appliances[a.name]!.port], timeoutMs));
    }
  }
  // Several controllers keep their store in etcd: a member on each controller's host.
  if (site.etcd && state.daemons.controller === 'started') {
    for (const c of site.apis.controllers) waits.push(waitForListeners(start(`${c.host}-etcd`, c.host, etcdCommand(site, c.host), []), [site.etcd.clientPort], timeoutMs));
  }
  await Promise.all(waits);
  // The controllers talk to the appliances and keepers: they start once those listen.
  if (state.daemons.controller === 'started') {
    await Promise.all(
      site.apis.controllers.map((c) => {
        const name = site.etcd ? `${c.host}-controller` : 'controller';
        const p = start(name, c.host, ['controller', '--config', configPath(site, c.host), '--credentials', credentialsDir(site)], [node, CLI], env);
        return waitForListeners(p, [c.port], timeoutMs);
      }),
    );
  }
}

function statusOf(site: Site, state: StoredState): LabStatus {
  return {
    ...labInfo(site),
    createdAt: state.createdAt,
    owner: state.owner,
    daemons: state.daemons,
    processes: state.processes.map((p) => ({ ...p, running: isAlive(p) })),
  };
}

/** The lab as recorded, or undefined when it is not up. */
export async function labStatus(options: { name?: string; stateBase?: string } = {}): Promise<LabStatus | undefined> {
  const site = siteFor(options.name, options.stateBase);
  const state = readState(site.stateDir) as StoredState | undefined;
  if (!state) return undefined;
  return statusOf(site, state);
}

export interface DownResult {
  name: string;
  /** Processes that were still running and were stopped. */
  stopped: number;
  /** Namespaces that existed and were deleted. */
  namespaces: string[];
  ms: number;
}

/**
 * Removes a lab: its recorded processes, any other process inside its namespaces, the
 * namespaces (and with them every interface), the state directory (`keepLogs`: all but the
 * state file, after a failed `up`). Works without a state
 * file too (the namespaces of the default site under that name) and is a no-op when there
 * is nothing to remove.
 */
export async function labDown(options: { name?: string; stateBase?: string; keepLogs?: boolean } = {}): Promise<DownResult> {
  const t0 = performance.now();
  const site = siteFor(options.name, options.stateBase);
  let state: LabState | undefined;
  try {
    state = readState(site.stateDir);
  } catch {
    state = undefined; // a broken state file: fall back to the site's namespaces
  }
  const mine = new Set([...(state?.namespaces ?? []), ...site.hosts.map((h) => h.namespace)]);
  const existing = (await listNamespaces()).filter((n) => mine.has(n));

  let stopped = await stopProcesses(state?.processes ?? [], { group: true });
  // Anything else living in the lab (a `lab exec`, a traffic generator, a test's server)
  // would keep a deleted namespace alive with its interfaces.
  const strays = identify((await Promise.all(existing.map(namespacePids))).flat());
  stopped += await stopProcesses(strays, { group: false });

  await deleteNamespaces(existing);
  if (options.keepLogs) fs.rmSync(path.join(site.stateDir, STATE_FILE), { force: true });
  else fs.rmSync(site.stateDir, { recursive: true, force: true });
  return { name: site.name, stopped, namespaces: existing, ms: ms(performance.now() - t0) };
}

/**
 * Removes disposable labs whose name starts with `prefix` and whose owner process is gone
 * (a test run that crashed). Labs of living owners (another test running now) and labs made
 * by `vipshift lab up` are left alone, and so are namespaces that no state file claims: other
 * parts' tests make namespaces of their own.
 */
export async function reapAbandonedLabs(prefix: string, stateBase?: string): Promise<string[]> {
  const base = stateBase ?? process.env.VIPSHIFT_LAB_DIR ?? DEFAULT_STATE_BASE;
  const reaped: string[] = [];
  let dirs: string[] = [];
  try {
    dirs = fs.readdirSync(base).filter((d) => d.startsWith(prefix));
  } catch {
    /* no labs yet */
  }
  for (const name of dirs) {
    let state: LabState | undefined;
    try {
      state = readState(path.join(base, name));
    } catch {
      continue; // not ours to judge
    }
    if (state?.owner && !isAlive(state.owner)) {
      await labDown({ name, stateBase: base });
      reaped.push(name);
    }
  }
  return reaped;
}

const ms = (x: number) => Math.round(x);
