/**
 * The speaker in a process of its own, as keepalived runs its VRRP child: the appliance's
 * own work (a dump or a create of 100,000 entries, a page of the access table) must never
 * delay an advertisement. At a 0.1 s interval a backup declares the master down after
 * ~0.34 s; a busy event loop shared with the speaker was measured to stall adverts that
 * long, and both appliances then claimed the same VIPs. The child also runs at a higher
 * scheduling priority than the appliance.
 *
 * Protocol, one JSON object per line. Parent → child: {id, command: 'release'|'claim', name}.
 * Child → parent: {type: 'reply', id, error?}, {type: 'transition', ...TransitionEvent},
 * {type: 'snapshot', state, counters} (after every change and once a second).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { writeFileSync } from 'node:fs';
import { setPriority } from 'node:os';
import { createInterface } from 'node:readline';
import type { Readable, Writable } from 'node:stream';
import type { BfdStatus } from './bfd-peers.js';
import { emptySpeakerCounters, type InstanceStatus, type Speaker, type SpeakerCounters, type TransitionEvent } from './speaker.js';

/** What the appliance needs of a speaker, in this process or in a child. */
export interface SpeakerControl extends EventEmitter {
  release(name: string): Promise<void>;
  claim(name: string): Promise<void>;
  /** The state as of now (a child process is asked), for decisions that need it fresh. */
  freshState(): Promise<InstanceStatus[]>;
  state(): InstanceStatus[];
  counters(): SpeakerCounters;
  /** BFD's sessions and counters; undefined when no instance uses BFD. */
  bfdStatus(): BfdStatus | undefined;
  stop(): Promise<void>;
}

type Command = { id: number; command: 'release' | 'claim' | 'state'; name?: string };
type Message =
  | { type: 'reply'; id: number; error?: string }
  | ({ type: 'transition' } & TransitionEvent)
  | { type: 'snapshot'; state: InstanceStatus[]; counters: SpeakerCounters; bfd?: BfdStatus };

/** The child's side: serves a speaker over a line protocol until `input` ends or `stop` aborts. */
export function serveSpeaker(speaker: Speaker, input: Readable, output: Writable, stop?: AbortSignal): Promise<void> {
  const send = (m: Message) => output.write(`${JSON.stringify(m)}\n`);
  const snapshot = () => {
    const bfd = speaker.bfdStatus();
    send({ type: 'snapshot', state: speaker.state(), counters: speaker.counters(), ...(bfd ? { bfd } : {}) });
  };
  speaker.on('transition', (e: TransitionEvent) => {
    send({ type: 'transition', ...e });
    snapshot();
  });
  const timer = setInterval(snapshot, 1000);
  snapshot();
  const lines = createInterface({ input, terminal: false });
  lines.on('line', (line) => {
    let c: Command;
    try {
      c = JSON.parse(line) as Command;
    } catch {
      return;
    }
    if (c.command === 'state') {
      snapshot();
      return send({ type: 'reply', id: c.id });
    }
    if ((c.command !== 'release' && c.command !== 'claim') || !c.name) return send({ type: 'reply', id: c.id, error: `unknown command '${String(c.command)}'` });
    speaker[c.command](c.name).then(
      () => {
        send({ type: 'reply', id: c.id });
        snapshot();
      },
      (err: unknown) => send({ type: 'reply', id: c.id, error: err instanceof Error ? err.message : String(err) }),
    );
  });
  // Stopped by a signal, the parent's pipe stays open: the snapshots' timer would keep the
  // process alive, and the appliance waiting for its exit, forever.
  stop?.addEventListener('abort', () => lines.close(), { once: true });
  return new Promise((resolve) =>
    lines.once('close', () => {
      clearInterval(timer);
      resolve();
    }),
  );
}


/** The nice value of the scheduler's group of `pid`'s session (proc(5)); nothing where the kernel has no such groups. */
function setAutogroupNice(pid: number, nice: number): void {
  try {
    writeFileSync(`/proc/${pid}/autogroup`, String(nice));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** The parent's side: `vipshift vrrp --config FILE --control` as a child process. */
export class SpeakerProcess extends EventEmitter implements SpeakerControl {
  private child: ChildProcess | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private lastState: InstanceStatus[] = [];
  private lastCounters: SpeakerCounters = emptySpeakerCounters();
  private lastBfd: BfdStatus | undefined;
  private stopping = false;
  /** Why the child's priority could not be raised (the appliance logs it), if it could not. */
  priorityError: string | undefined;

  constructor(
    private readonly command: string[],
    /** Nice value of the child: lower runs first (root may go below 0). */
    private readonly niceness = -10,
  ) {
    super();
  }

  /** Resolves once the child has sent its first snapshot (its instances are running). */
  start(): Promise<void> {
    const [program, ...args] = this.command;
    // A session of its own (setsid): where the scheduler groups tasks by session (autogroup, the
    // default for processes outside a CPU cgroup, as in the lab), nice ranks a task only within
    // its group and the groups share the CPUs as equals. In the appliance's group, a speaker
    // waited for a CPU while the appliance's own work used up the group's share (perf sched: 90
    // ms runnable). Its own group gets the speaker's nice too. It still ends with the appliance:
    // its input closes then.
    const child = spawn(program!, args, { stdio: ['pipe', 'pipe', 'inherit'], detached: true });
    this.child = child;
    if (child.pid) {
      try {
        setPriority(child.pid, this.niceness);
        setAutogroupNice(child.pid, this.niceness);
      } catch (err) {
        // Not permitted (no CAP_SYS_NICE): the speaker still has its own event loop, but a loaded
        // box may delay its adverts and BFD packets past a peer's detection time.
        this.priorityError = (err as Error).message;
      }
    }
    const lines = createInterface({ input: child.stdout!, terminal: false });
    const ready = new Promise<void>((resolve, reject) => {
      lines.on('line', (line) => {
        let m: Message;
        try {
          m = JSON.parse(line) as Message;
        } catch {
          return;
        }
        if (m.type === 'snapshot') {
          this.lastState = m.state;
          this.lastCounters = m.counters;
          this.lastBfd = m.bfd;
          resolve();
        } else if (m.type === 'transition') {
          const { type: _type, ...event } = m;
          this.emit('transition', event);
        } else if (m.type === 'reply') {
          const p = this.pending.get(m.id);
          this.pending.delete(m.id);
          if (m.error) p?.reject(new Error(`VRRP: ${m.error}`));
          else p?.resolve();
        }
      });
      child.once('exit', (code, signal) => {
        const err = new Error(`the VRRP speaker process exited (${signal ?? `code ${code}`})`);
        reject(err);
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
        if (!this.stopping) this.emit('exit', err);
      });
    });
    return ready;
  }

  private send(command: Command['command'], name?: string): Promise<void> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (!this.child?.stdin?.writable) return reject(new Error('the VRRP speaker process is not running'));
      this.pending.set(id, { resolve, reject });
      this.child.stdin.write(`${JSON.stringify({ id, command, ...(name ? { name } : {}) } satisfies Command)}\n`);
    });
  }

  /** The child answers with a snapshot before its reply, so the state is current after this. */
  async freshState(): Promise<InstanceStatus[]> {
    await this.send('state');
    return this.lastState;
  }

  release(name: string): Promise<void> {
    return this.send('release', name);
  }

  claim(name: string): Promise<void> {
    return this.send('claim', name);
  }

  state(): InstanceStatus[] {
    return this.lastState;
  }

  counters(): SpeakerCounters {
    return this.lastCounters;
  }

  bfdStatus(): BfdStatus | undefined {
    return this.lastBfd;
  }

  /**
   * SIGTERM: the child's masters send priority 0 and drop their addresses before it exits.
   * A child still there after `graceMs` is killed: a stop must end (systemd waits for it).
   */
  stop(graceMs = 5000): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    this.stopping = true;
    return new Promise((resolve) => {
      const kill = setTimeout(() => child.kill('SIGKILL'), graceMs);
      child.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      child.kill('SIGTERM');
    });
  }
}
