/**
 * A whole lab for an integration test: `withLab(options, fn)` brings the site up under a
 * unique name, runs `fn`, and always takes it down again, also when `fn` fails. Labs left
 * by a crashed earlier run with the same prefix are removed first. Needs root and a build
 * (`dist/cli.js`: the lab's processes run the built CLI).
 */
import { randomBytes } from 'node:crypto';
import { type LabStatus, type UpOptions, labDown, labUp, reapAbandonedLabs, siteFor } from '../../src/lab/lab.js';
import { type RunResult, run } from '../../src/lab/netns.js';
import { type Site, host } from '../../src/lab/site.js';
import { type TrafficOptions, type TrafficProgress, type TrafficRun, startTraffic } from '../../src/lab/traffic.js';

export interface WithLabOptions extends Omit<UpOptions, 'name' | 'owned'> {
  /** Lab name prefix (default `vt`); the name is the prefix and 6 random hex digits, ≤ 12 characters. */
  prefix?: string;
}

export interface Lab {
  name: string;
  /** What `lab info --json` says. */
  info: LabStatus;
  site: Site;
  /** How long `lab up` took, ms. */
  upMs: number;
  /** The namespace of a host of the site (client, router, lb1, lb2, srv1..3, ctl, sw). */
  ns(hostName: string): string;
  /** Runs a command in a host's namespace to completion (never throws on a non-zero exit). */
  exec(hostName: string, command: string[], input?: string): Promise<RunResult>;
  /** An HTTP GET from inside a host's namespace. */
  httpGet(hostName: string, url: string): Promise<{ status: number; body: string }>;
  /** Echo traffic from the client's namespace (see src/lab/traffic.ts). */
  traffic(options: TrafficOptions, onProgress?: (p: TrafficProgress) => void): TrafficRun;
}

export function uniqueLabName(prefix = 'vt'): string {
  const name = prefix + randomBytes(3).toString('hex');
  if (name.length > 12) throw new Error(`lab name prefix '${prefix}' is too long (at most 6 characters)`);
  return name;
}

export async function withLab<T>(options: WithLabOptions, fn: (lab: Lab) => Promise<T>): Promise<T> {
  const { prefix = 'vt', ...upOptions } = options;
  await reapAbandonedLabs(prefix, upOptions.stateBase);
  const name = uniqueLabName(prefix);
  // Down even if up fails half-way (labUp cleans after itself, but a throw in between is ours).
  try {
    const { status, timings } = await labUp({ ...upOptions, name, owned: true });
    const site = siteFor(name, upOptions.stateBase);
    const ns = (hostName: string) => host(site, hostName).namespace;
    const exec = (hostName: string, command: string[], input?: string) => run('ip', ['netns', 'exec', ns(hostName), ...command], input);
    const lab: Lab = {
      name,
      info: status,
      site,
      upMs: timings.totalMs,
      ns,
      exec,
      async httpGet(hostName, url) {
        const script = `fetch(${JSON.stringify(url)}, { signal: AbortSignal.timeout(5000) }).then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })), (e) => { process.stderr.write(String(e.cause ?? e)); process.exit(1); })`;
        const r = await exec(hostName, [process.execPath, '-e', script]);
        if (r.code !== 0) throw new Error(`GET ${url} from ${hostName}: ${r.stderr.trim()}`);
        return JSON.parse(r.stdout) as { status: number; body: string };
      },
      traffic: (o, onProgress) => startTraffic(ns('client'), o, onProgress),
    };
    return await fn(lab);
  } finally {
    await labDown({ name, stateBase: upOptions.stateBase });
  }
}
