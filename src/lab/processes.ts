/**
 * The lab's process supervisor and state file. Long-running processes are started inside a
 * namespace with `ip netns exec`, detached (their own session, so they outlive `lab up`),
 * logging to the lab's state directory. Each is recorded with its PID and the kernel's start
 * time of that PID, so that `lab down` — run later, by another process, maybe after the one
 * that ran `lab up` crashed — stops exactly them and never a stranger that reused the PID.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { run } from './netns.js';

/** A process identity that survives PID reuse: the PID and its start time (clock ticks since boot). */
export interface ProcessId {
  pid: number;
  startTime: string;
}

export interface ProcessRecord extends ProcessId {
  /** What it is in the site: `srv1-service`, `lb1-appliance`, ... */
  name: string;
  namespace: string;
  command: string[];
  log: string;
}

export interface LabState {
  name: string;
  createdAt: string;
  /**
   * The process that owns a disposable lab (a test run); a lab whose owner is gone may be
   * reaped by the next test run. `null` for a lab made by `vipshift lab up`: it stays until
   * `lab down`.
   */
  owner: ProcessId | null;
  /** Every namespace of the lab, recorded before the first is created. */
  namespaces: string[];
  processes: ProcessRecord[];
}

export const STATE_FILE = 'state.json';

export function readState(stateDir: string): LabState | undefined {
  const file = path.join(stateDir, STATE_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    return JSON.parse(text) as LabState;
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message}); remove the lab's namespaces by hand or run 'vipshift lab down'`);
  }
}

/** Writes the state file atomically (a crash leaves the old or the new one, never half). */
export function writeState(stateDir: string, state: LabState): void {
  fs.mkdirSync(stateDir, { recursive: true });
  const file = path.join(stateDir, STATE_FILE);
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(state, null, 2) + '\n');
  fs.renameSync(`${file}.tmp`, file);
}

/** The PID of the lab's process `name` (`lb1-appliance`, ...), from its state file. */
export function labProcessPid(stateDir: string, name: string): number {
  const found = readState(stateDir)?.processes.find((p) => p.name === name);
  if (!found) throw new Error(`${path.join(stateDir, STATE_FILE)}: no process ${name}`);
  return found.pid;
}

/** USER_HZ, the unit of /proc/PID/stat's times (100 on every Linux architecture we run on). */
const CLOCK_TICKS_PER_S = 100;

/**
 * CPU seconds (user + system) process `pid` has used (proc(5), fields 14-15), with
 * `children` also those of its children it waited for (fields 16-17: the nft it runs).
 */
export function processCpuSeconds(pid: number, options: { children?: boolean } = {}): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name (field 2) is in parentheses and may contain anything: split after it.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
  const ticks = f[11]! + f[12]! + (options.children ? f[13]! + f[14]! : 0);
  return ticks / CLOCK_TICKS_PER_S;
}

/** Field 22 of /proc/PID/stat, or undefined when there is no such process or it is a zombie. */
export function processStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may contain anything: split after it.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
  return fields[19];
}

export function isAlive(p: ProcessId): boolean {
  return processStartTime(p.pid) === p.startTime;
}

export function selfId(): ProcessId {
  const startTime = processStartTime(process.pid);
  if (!startTime) throw new Error('cannot read /proc/self/stat');
  return { pid: process.pid, startTime };
}

export interface StartSpec {
  name: string;
  namespace: string;
  command: string[];
  logDir: string;
  /** Added to the environment it inherits (tests' hooks). */
  env?: Record<string, string>;
}

export interface Started {
  record: ProcessRecord;
  /** Settles with the exit code (or signal) if the process ends while we are still running. */
  exited: Promise<string>;
}

/** Starts a command in a namespace, detached, stdout and stderr appended to `<logDir>/<name>.log`. */
export function startProcess(spec: StartSpec): Started {
  const log = path.join(spec.logDir, `${spec.name}.log`);
  const fd = fs.openSync(log, 'a');
  try {
    const child = spawn('ip', ['netns', 'exec', spec.namespace, ...spec.command], {
      detached: true,
      stdio: ['ignore', fd, fd],
      ...(spec.env ? { env: { ...process.env, ...spec.env } } : {}),
    });
    const pid = child.pid;
    if (pid === undefined) throw new Error(`${spec.name}: could not start 'ip netns exec ${spec.namespace} ${spec.command.join(' ')}'`);
    const startTime = processStartTime(pid);
    if (startTime === undefined) throw new Error(`${spec.name}: exited at once (see ${log})`);
    child.unref();
    const exited = new Promise<string>((resolve) => {
      child.on('exit', (code, signal) => resolve(signal ? `signal ${signal}` : `exit code ${code}`));
    });
    return { record: { name: spec.name, namespace: spec.namespace, pid, startTime, command: spec.command, log }, exited };
  } finally {
    fs.closeSync(fd);
  }
}

/** The last lines of a log, for error messages. */
export function logTail(file: string, lines = 15): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Whether some socket in the namespace listens on TCP `port`. */
export async function listening(namespace: string, port: number): Promise<boolean> {
  const r = await run('ss', ['-N', namespace, '-H', '-l', '-t', '-n', 'sport', '=', `:${port}`]);
  return r.code === 0 && r.stdout.trim().length > 0;
}

/** Waits until a started process listens on each port; fails early if it exits. */
export async function waitForListeners(started: Started, ports: number[], timeoutMs: number): Promise<void> {
  const { record } = started;
  let exit: string | undefined;
  void started.exited.then((e) => (exit = e));
  const deadline = Date.now() + timeoutMs;
  const pending = new Set(ports);
  for (;;) {
    for (const port of [...pending]) if (await listening(record.namespace, port)) pending.delete(port);
    if (pending.size === 0) return;
    if (exit !== undefined) {
      throw new Error(`${record.name} (${record.command.join(' ')}) ended with ${exit} before listening on ${[...pending].join(', ')}; its log ${record.log}:\n${logTail(record.log)}`);
    }
    if (Date.now() > deadline) {
      throw new Error(`${record.name} is not listening on ${[...pending].join(', ')} after ${timeoutMs} ms; its log ${record.log}:\n${logTail(record.log)}`);
    }
    await sleep(25);
  }
}

/**
 * Stops processes: SIGTERM, then SIGKILL to what is left after `graceMs`; only processes
 * whose start time still matches. With `group`, the signal goes to each one's process group
 * (processes we started lead their own session, and their children die with them).
 * Returns how many were running.
 */
export async function stopProcesses(ids: ProcessId[], options: { group: boolean; graceMs?: number }): Promise<number> {
  const live = ids.filter(isAlive);
  const signal = (p: ProcessId, sig: NodeJS.Signals) => {
    if (!isAlive(p)) return;
    try {
      process.kill(options.group ? -p.pid : p.pid, sig);
    } catch {
      /* gone in between */
    }
  };
  for (const p of live) signal(p, 'SIGTERM');
  let deadline = Date.now() + (options.graceMs ?? 2000);
  while (live.some(isAlive) && Date.now() < deadline) await sleep(10);
  for (const p of live) signal(p, 'SIGKILL');
  deadline = Date.now() + 5000;
  while (live.some(isAlive)) {
    if (Date.now() > deadline) {
      const stuck = live.filter(isAlive).map((p) => p.pid);
      throw new Error(`processes ${stuck.join(', ')} survive SIGKILL (uninterruptible sleep?)`);
    }
    await sleep(10);
  }
  return live.length;
}

/** Identities of a list of PIDs (those still running). */
export function identify(pids: number[]): ProcessId[] {
  return pids.flatMap((pid) => {
    const startTime = processStartTime(pid);
    return startTime === undefined ? [] : [{ pid, startTime }];
  });
}
