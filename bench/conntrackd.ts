/**
 * The reference a user would deploy today: Debian's conntrackd in FT-FW mode between two
 * appliances, syncing over UDP on the management network. This module owns every
 * conntrackd invocation of the benchmark: the configuration (pure), the daemons (one per
 * namespace, in the foreground so that we hold their pids), resync, commit, stats, stop.
 *
 * Each instance lives in its own temporary directory: configuration, lock file, UNIX
 * socket and log, so it never meets a system conntrackd or another instance.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run } from '../src/lab/netns.js';

export interface ConntrackdSide {
  /** Network namespace the daemon runs in. */
  namespace: string;
  /** Its address on the sync link, and the peer's. */
  address: string;
  peer: string;
  /** The sync link's interface inside the namespace. */
  interface: string;
}

export interface ConntrackdPaths {
  dir: string;
  config: string;
  lock: string;
  socket: string;
  log: string;
}

export const SYNC_PORT = 3780;

export function pathsIn(dir: string): ConntrackdPaths {
  return {
    dir,
    config: path.join(dir, 'conntrackd.conf'),
    lock: path.join(dir, 'conntrackd.lock'),
    socket: path.join(dir, 'conntrackd.ctl'),
    log: path.join(dir, 'conntrackd.log'),
  };
}

/**
 * A minimal FT-FW configuration (conntrackd.conf(5), Debian's examples/sync/ftfw):
 * unicast UDP to the peer, caches big enough for `entries` (HashLimit: twice the entries,
 * as the example advises for dead entries kept for retransmission), TCP only, filtered in
 * the kernel. No CommitTimeout: committed entries get conntrackd's own timeout estimate.
 */
export function conntrackdConfig(side: ConntrackdSide, paths: ConntrackdPaths, entries: number): string {
  const pow2 = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(n, 1024)));
  return `# written by bench/migration.ts: the conntrackd reference (FT-FW over UDP)
Sync {
	Mode FTFW {
		ResendQueueSize ${pow2(entries * 2)}
	}
	UDP {
		IPv4_address ${side.address}
		IPv4_Destination_Address ${side.peer}
		Port ${SYNC_PORT}
		Interface ${side.interface}
		SndSocketBuffer 8388608
		RcvSocketBuffer 8388608
		Checksum on
	}
}
General {
	HashSize ${pow2(entries)}
	HashLimit ${pow2(entries * 2)}
	LogFile ${paths.log}
	LockFile ${paths.lock}
	UNIX {
		Path ${paths.socket}
	}
	NetlinkBufferSize 8388608
	NetlinkBufferSizeMaxGrowth 67108864
	Filter From Kernelspace {
		Protocol Accept {
			TCP
		}
	}
}
`;
}

export interface CacheStats {
  internal: number;
  external: number;
}

/** `conntrackd -s` output → the caches' "current active connections". */
export function parseCacheStats(text: string): CacheStats {
  const active = (cache: string): number => {
    const m = new RegExp(`cache ${cache}:\\s*\\n\\s*current active connections:\\s*(\\d+)`).exec(text);
    if (!m) throw new Error(`conntrackd -s: no "cache ${cache}" section in:\n${text}`);
    return Number(m[1]);
  };
  return { internal: active('internal'), external: active('external') };
}

export interface CommitReport {
  /** "Committed N new entries" (and updated ones, when it says so). */
  committed: number;
  /** conntrackd's own "commit has taken S seconds", ms. */
  ms: number;
}

/** The last commit reported in a conntrackd log. */
export function parseCommit(log: string): CommitReport | undefined {
  const taken = [...log.matchAll(/commit has taken (\d+\.\d+) seconds/g)].at(-1);
  const committed = [...log.matchAll(/Committed (\d+) new entries/g)].at(-1);
  if (!taken || !committed) return undefined;
  return { committed: Number(committed[1]), ms: Math.round(Number(taken[1]) * 1e6) / 1e3 };
}

export class Conntrackd {
  private exited: Promise<number | null>;

  private constructor(
    readonly side: ConntrackdSide,
    readonly paths: ConntrackdPaths,
    private readonly child: ChildProcess,
  ) {
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  /** Writes the configuration and starts the daemon; resolves once its UNIX socket answers. */
  static async start(side: ConntrackdSide, entries: number): Promise<Conntrackd> {
    const paths = pathsIn(fs.mkdtempSync(path.join(os.tmpdir(), `vipshift-conntrackd-${side.namespace}-`)));
    fs.writeFileSync(paths.config, conntrackdConfig(side, paths, entries));
    // `ip netns exec` execs conntrackd: the child's pid is the daemon's (no -d, no fork).
    const child = spawn('ip', ['netns', 'exec', side.namespace, 'conntrackd', '-C', paths.config], { stdio: ['ignore', 'ignore', 'pipe'] });
    const stderr: Buffer[] = [];
    child.stderr!.on('data', (b: Buffer) => stderr.push(b));
    const d = new Conntrackd(side, paths, child);
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`conntrackd in ${side.namespace} exited (${child.exitCode}): ${Buffer.concat(stderr).toString().trim()} (log ${paths.log})`);
      if (fs.existsSync(paths.socket) && (await d.ctl(['-s'], false)).code === 0) return d;
      if (Date.now() > deadline) {
        await d.stop();
        throw new Error(`conntrackd in ${side.namespace} did not answer on ${paths.socket} within 10 s (log ${paths.log})`);
      }
      await sleep(50);
    }
  }

  /** Runs `conntrackd -C <config> ARGS` in the daemon's namespace (a client of its socket). */
  async ctl(args: string[], check = true): Promise<{ code: number; stdout: string; stderr: string }> {
    const r = await run('ip', ['netns', 'exec', this.side.namespace, 'conntrackd', '-C', this.paths.config, ...args]);
    if (check && r.code !== 0) throw new Error(`conntrackd ${args.join(' ')} in ${this.side.namespace}: exit ${r.code}: ${(r.stderr || r.stdout).trim()}`);
    return r;
  }

  async stats(): Promise<CacheStats> {
    return parseCacheStats((await this.ctl(['-s'])).stdout);
  }

  /** Asks the peer for a full resync into our external cache (`-n`). */
  async requestResync(): Promise<void> {
    await this.ctl(['-n']);
  }

  /**
   * Commits the external cache to the kernel (`-c`, which returns when the commit is
   * done) and reads conntrackd's own report of it from the log.
   */
  async commit(): Promise<CommitReport & { wallMs: number }> {
    const t = performance.now();
    await this.ctl(['-c']);
    const wallMs = Math.round((performance.now() - t) * 1000) / 1000;
    // The log line is written by the daemon; give it a moment to reach the file.
    for (let i = 0; i < 40; i++) {
      const report = parseCommit(this.log());
      if (report) return { ...report, wallMs };
      await sleep(50);
    }
    throw new Error(`conntrackd in ${this.side.namespace}: no commit report in ${this.paths.log}`);
  }

  log(): string {
    try {
      return fs.readFileSync(this.paths.log, 'utf8');
    } catch {
      return '';
    }
  }

  /** Asks it to exit (`-k`), then SIGKILLs our child if it is still there; removes its directory. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      await this.ctl(['-k'], false).catch(() => undefined);
      const gone = await Promise.race([this.exited.then(() => true), sleep(2000).then(() => false)]);
      if (!gone) {
        this.child.kill('SIGKILL');
        await this.exited;
      }
    }
    fs.rmSync(this.paths.dir, { recursive: true, force: true });
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
