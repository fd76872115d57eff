/**
 * `lab down` leaves nothing — no namespace, no process, no interface, no state — also after
 * the process that ran `lab up` was killed half-way, and `withLab` takes its lab down even
 * when the test inside fails. Needs root and a build (dist/cli.js).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, labDown, labStatus, labUp, reapAbandonedLabs, siteFor } from '../../src/lab/lab.js';
import { listNamespaces, namespacePids, run } from '../../src/lab/netns.js';
import { type ProcessId, identify, isAlive, readState, writeState } from '../../src/lab/processes.js';
import { uniqueLabName, withLab } from '../helpers/lab.js';

const PREFIX = 'vtlab';
const made: string[] = [];
const newName = () => {
  const n = uniqueLabName(PREFIX);
  made.push(n);
  return n;
};

const labNamespaces = async (name: string) => (await listNamespaces()).filter((n) => n.startsWith(`${name}-`));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Everything a lab could leave behind. */
async function leftovers(name: string, pids: ProcessId[]) {
  const site = siteFor(name);
  const rootLinks = JSON.parse((await run('ip', ['-j', 'link', 'show'])).stdout) as Array<{ ifname: string }>;
  const portNames = new Set(site.hosts.flatMap((h) => h.interfaces.map((i) => `${h.name}-${'segment' in i.attach ? i.attach.segment : ''}`)));
  return {
    namespaces: await labNamespaces(name),
    processes: pids.filter(isAlive).map((p) => p.pid),
    stateDir: fs.existsSync(site.stateDir),
    // The lab never put an interface in the host's namespace; nothing of it may be there now.
    hostInterfaces: rootLinks.map((l) => l.ifname).filter((n) => portNames.has(n)),
  };
}
const NOTHING = { namespaces: [], processes: [], stateDir: false, hostInterfaces: [] };

beforeAll(async () => {
  await reapAbandonedLabs(PREFIX);
});

afterAll(async () => {
  for (const name of made) await labDown({ name });
});

describe('lab down', () => {
  it('removes every namespace, process and file of the lab, and processes started in it by others', async () => {
    const name = newName();
    const { status } = await labUp({ name, owned: true });
    expect(await labNamespaces(name)).toHaveLength(9);
    const pids: ProcessId[] = status.processes.map((p) => ({ pid: p.pid, startTime: p.startTime }));
    expect(pids.every(isAlive)).toBe(true);
    // A process someone else started in the lab (a test's tool, a `lab exec` in the background).
    const stray = spawn('ip', ['netns', 'exec', `${name}-client`, 'sleep', '600'], { detached: true, stdio: 'ignore' });
    stray.unref();
    await sleep(100);
    const strays = identify(await namespacePids(`${name}-client`));
    expect(strays).toHaveLength(1);

    const r = await run(process.execPath, [CLI, 'lab', 'down', '--name', name, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const down = JSON.parse(r.stdout);
    // The recorded processes and the stray; the appliances' VRRP speakers, in sessions of their
    // own, end with their appliance or are found in its namespace after it and stopped too.
    expect(down.stopped).toBeGreaterThanOrEqual(pids.length + 1);
    expect(down.stopped).toBeLessThanOrEqual(pids.length + 1 + status.processes.filter((p) => p.name.endsWith('-appliance')).length);
    expect(down.namespaces.sort()).toEqual(siteFor(name).hosts.map((h) => h.namespace).sort());
    expect(await leftovers(name, [...pids, ...strays])).toEqual(NOTHING);
    expect(await labStatus({ name })).toBeUndefined();
  });

  it('is a no-op for a lab that is not up', async () => {
    const r = await labDown({ name: newName() });
    expect(r).toMatchObject({ stopped: 0, namespaces: [] });
  });
});

/** Runs `vipshift lab up` and kills it with SIGKILL as soon as it has started its first process. */
async function killedLabUp(name: string): Promise<ProcessId[]> {
  const stateFile = path.join(siteFor(name).stateDir, 'state.json');
  const child = spawn(process.execPath, [CLI, 'lab', 'up', '--name', name], { stdio: 'ignore' });
  const exited = new Promise((r) => child.on('exit', r));
  const deadline = Date.now() + 20_000;
  for (;;) {
    const state = fs.existsSync(stateFile) ? readState(path.dirname(stateFile)) : undefined;
    if (state && state.processes.length > 0) break;
    if (Date.now() > deadline) throw new Error('lab up recorded no process within 20 s');
    await sleep(2);
  }
  child.kill('SIGKILL');
  await exited;
  const state = readState(path.dirname(stateFile))!;
  return state.processes.map((p) => ({ pid: p.pid, startTime: p.startTime }));
}

describe('after `lab up` was killed half-way', () => {
  it('the next `lab down` removes what it left', async () => {
    const name = newName();
    const pids = await killedLabUp(name);
    const left = await leftovers(name, pids);
    expect(left.namespaces).toHaveLength(9);
    expect(left.processes.length).toBeGreaterThan(0);

    const r = await run(process.execPath, [CLI, 'lab', 'down', '--name', name]);
    expect(r.code, r.stderr).toBe(0);
    expect(await leftovers(name, pids)).toEqual(NOTHING);
  });

  it('the next `lab up` removes what it left and builds a working lab', async () => {
    const name = newName();
    const pids = await killedLabUp(name);
    const { status } = await labUp({ name, owned: true });
    expect(pids.filter(isAlive)).toEqual([]);
    expect(status.processes.every((p) => p.running)).toBe(true);
    const r = await run('ip', ['netns', 'exec', `${name}-lb1`, 'ping', '-c', '1', '-W', '1', '198.18.0.101']);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    await labDown({ name });
    expect(await leftovers(name, [...pids, ...status.processes])).toEqual(NOTHING);
  });
});

describe('disposable labs', () => {
  it('are reaped once their owner is gone, and not while it lives', async () => {
    const gone = newName();
    const alive = newName();
    await labUp({ name: gone, owned: true });
    await labUp({ name: alive, owned: true });
    const site = siteFor(gone);
    const state = readState(site.stateDir)!;
    // An owner that no longer exists: the same PID with another start time.
    writeState(site.stateDir, { ...state, owner: { pid: state.owner!.pid, startTime: '1' } });

    const reaped = await reapAbandonedLabs(PREFIX);
    expect(reaped).toContain(gone);
    expect(reaped).not.toContain(alive);
    expect(await leftovers(gone, state.processes)).toEqual(NOTHING);
    expect(await labNamespaces(alive)).toHaveLength(9);
    await labDown({ name: alive });
  });

  it('withLab takes its lab down when the test inside fails', async () => {
    let name = '';
    let pids: ProcessId[] = [];
    await expect(
      withLab({ prefix: PREFIX }, async (lab) => {
        name = lab.name;
        made.push(name);
        pids = lab.info.processes;
        expect(lab.info.servers.map((s) => s.name)).toEqual(['srv1', 'srv2', 'srv3']);
        const answer = await lab.httpGet('lb1', 'http://198.18.0.101/');
        expect(JSON.parse(answer.body)).toMatchObject({ server: 'srv1', client: { address: '198.18.0.2' } });
        throw new Error('the test failed');
      }),
    ).rejects.toThrow('the test failed');
    expect(name).toMatch(/^vtlab[0-9a-f]{6}$/);
    expect(await leftovers(name, pids)).toEqual(NOTHING);
  });
});
