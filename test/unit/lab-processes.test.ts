import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { labProcessPid, processCpuSeconds, writeState } from '../../src/lab/processes.js';

describe('lab processes', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  it('finds a lab process by name in the state file, and names the file and the process when it is not there', () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vipshift-state-'));
    const record = (name: string, pid: number) => ({ name, pid, startTime: '1', namespace: 'ns', command: ['x'], log: 'x.log' });
    writeState(dir, { name: 'lab', createdAt: new Date().toISOString(), owner: null, namespaces: [], processes: [record('lb1-appliance', 4242), record('lb2-appliance', 4343)] });
    expect(labProcessPid(dir, 'lb2-appliance')).toBe(4343);
    expect(() => labProcessPid(dir!, 'lb3-appliance')).toThrow(`${path.join(dir, 'state.json')}: no process lb3-appliance`);
  });

  it("counts a process's CPU seconds as it works, as the process itself does", () => {
    const before = processCpuSeconds(process.pid);
    const usage0 = process.cpuUsage();
    // Spin until the process has used 200 ms of CPU by its own count, however loaded the machine.
    let x = 0;
    while (process.cpuUsage(usage0).user < 200_000) x += Math.sqrt(x + 1);
    const used = process.cpuUsage(usage0);
    const after = processCpuSeconds(process.pid);
    expect(x).toBeGreaterThan(0);
    // The kernel's clock ticks are 10 ms: a few either way.
    expect(after - before).toBeCloseTo((used.user + used.system) / 1e6, 1);
    expect(processCpuSeconds(process.pid, { children: true })).toBeGreaterThanOrEqual(after);
  });
});
