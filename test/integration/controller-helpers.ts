/**
 * The controller of a lab started by the test itself (lab up without its controller), with a
 * configuration of the test's choosing and environment (the pause hook), so that the test can
 * SIGKILL it and start it again. `lab down` stops whatever is left in the lab's namespaces.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import YAML from 'yaml';
import { controllerClient } from '../../src/cli/controller-client.js';
import type { SiteStatus } from '../../src/controller/controller.js';
import type { ControllerConfigInput } from '../../src/config/controller.js';
import { CLI, credentialsDir } from '../../src/lab/lab.js';
import { listening } from '../../src/lab/processes.js';
import { controllerConfig } from '../../src/lab/site.js';
import type { Lab } from '../helpers/lab.js';

export interface RunningController {
  pid: number;
  log: string;
  exited: Promise<number | string>;
}

export function writeControllerConfig(lab: Lab, overrides: Partial<ControllerConfigInput>): string {
  const file = path.join(lab.site.stateDir, 'ctl-test.yaml');
  fs.writeFileSync(file, YAML.stringify({ ...controllerConfig(lab.site), ...overrides }));
  return file;
}

export async function startController(lab: Lab, configFile: string, env: Record<string, string> = {}): Promise<RunningController> {
  const log = path.join(lab.site.stateDir, 'controller-test.log');
  const fd = fs.openSync(log, 'a');
  const child = spawn('ip', ['netns', 'exec', lab.ns('ctl'), process.execPath, CLI, 'controller', '--config', configFile, '--credentials', credentialsDir(lab.site)], {
    stdio: ['ignore', fd, fd],
    env: { ...process.env, ...env },
  });
  fs.closeSync(fd);
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(signal ?? code ?? -1)));
  let gone: number | string | undefined;
  void exited.then((e) => (gone = e));
  const deadline = Date.now() + 20_000;
  // Its TCP port first, then its local socket (a killed predecessor leaves the file behind).
  while (!(await listening(lab.ns('ctl'), lab.site.apis.controller.port)) || !(await accepts(path.join(lab.site.stateDir, 'controller.sock')))) {
    if (gone !== undefined || Date.now() > deadline) throw new Error(`controller did not start (${gone ?? 'timeout'}): ${fs.readFileSync(log, 'utf8').slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { pid: child.pid!, log, exited };
}

function accepts(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath, () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}

export const api = (lab: Lab) =>
  controllerClient({ controller: `unix:${path.join(lab.site.stateDir, 'controller.sock')}`, credentials: credentialsDir(lab.site) });
export const siteStatus = (lab: Lab) => api(lab).get<SiteStatus>('/v1/status');

/**
 * Appliances that serve the VIP (`normal` in their mode table), with the mode. The others
 * hold it `migrating` as its standby (the default) and are left out.
 */
export function modesOf(site: SiteStatus, vip: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of site.appliances) {
    const v = a.vips.find((x) => x.name === vip);
    if (v && v.mode === 'normal') out[a.name] = v.mode;
  }
  return out;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
