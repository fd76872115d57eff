/**
 * Traffic generator for tests, the demo and benchmarks: N concurrent TCP connections to an
 * echo service (RFC 862), each sending a sequence-numbered payload every `intervalMs` and
 * checking that exactly the same bytes come back. It counts what users of a load balancer
 * notice — connections refused, reset, stalled (timeout), corrupted (mismatch) — and, per
 * connection, the longest gap between two echoes: the pause a VIP migration causes.
 *
 * Traffic must start inside the client's namespace, so `runTraffic` runs there (as
 * `vipshift lab traffic`, see src/cli/lab.ts) and `startTraffic` drives it from outside as a
 * child process speaking JSON lines.
 *
 * Output (JSON lines on stdout with --json):
 * - `{"type":"established", ...TrafficProgress}` once every connection attempt has settled;
 * - `{"type":"progress", ...TrafficProgress}` every `progressMs` when asked;
 * - `{"type":"summary", ...TrafficSummary}` last, when the duration is over or on stop
 *   (SIGTERM, SIGINT, or end of stdin with --stop-on-eof).
 */
import { spawn } from 'node:child_process';
import net from 'node:net';
import readline from 'node:readline';
import { CLI } from './lab.js';

export interface TrafficOptions {
  address: string;
  port: number;
  connections: number;
  /** Each connection sends one payload every intervalMs (first one at a random phase). */
  intervalMs: number;
  /** Stop after this long; undefined: run until stopped. */
  durationMs?: number;
  /** Bytes per payload, ≥ 16 (default 64). */
  payloadBytes?: number;
  /** An echo not back after this long fails its connection as `timeout` (default 5000). */
  timeoutMs?: number;
  /** A connection not established after this long fails as `connect` (default 5000). */
  connectTimeoutMs?: number;
  /** Emit progress every progressMs (0: never). */
  progressMs?: number;
  /** Include one entry per connection in the summary. */
  perConnection?: boolean;
}

export type ErrorKind = 'connect' | 'reset' | 'timeout' | 'mismatch' | 'closed' | 'other';

export interface TrafficProgress {
  elapsedMs: number;
  /** Connections established so far (including ones that failed later). */
  established: number;
  /** Established and not failed. */
  active: number;
  sent: number;
  echoed: number;
  errors: Record<ErrorKind, number>;
  /** Longest gap between two echoes on any connection so far, ms. */
  maxGapMs: number;
}

export interface ConnectionReport {
  index: number;
  /** The client's port: finds the connection in a conntrack dump. */
  localPort: number | null;
  sent: number;
  echoed: number;
  longestGapMs: number;
  error: ErrorKind | null;
  errorCode: string | null;
}

export interface TrafficSummary {
  target: { address: string; port: number };
  options: { connections: number; intervalMs: number; durationMs: number | null; payloadBytes: number; timeoutMs: number };
  elapsedMs: number;
  connections: {
    requested: number;
    established: number;
    /** Established, never failed, closed by us at the end. */
    ok: number;
    failed: number;
  };
  messages: { sent: number; echoed: number };
  bytes: { sent: number; echoed: number };
  /** Failed connections by kind: connect (refused, unreachable, timed out), reset (RST),
   * timeout (echo late), mismatch (bytes differ), closed (FIN from the peer), other. */
  errors: Record<ErrorKind, number>;
  /** Socket error codes seen (ECONNRESET, ECONNREFUSED, ...) and how often. */
  errorCodes: Record<string, number>;
  /** Distribution over connections of each one's longest gap between two echoes. */
  gapMs: { p50: number; p99: number; max: number };
  /** Wall clock (ms since the epoch) at which the longest of those gaps ended: what it fell in. */
  gapMaxEndedAt: number;
  /** Send-to-echo time of every payload. */
  rttMs: { p50: number; p99: number; max: number };
  /** The longest this generator itself was stalled (its timers late): part of any gap it measured then. */
  stalledMs: number;
  perConnection?: ConnectionReport[];
}

interface Outstanding {
  payload: Buffer;
  sentAt: number;
}

class Connection {
  socket: net.Socket | undefined;
  established = false;
  /** Its connection attempt is over (established or failed). */
  settled = false;
  localPort: number | null = null;
  seq = 0;
  echoed = 0;
  queue: Outstanding[] = [];
  /** Bytes of queue[0] already echoed. */
  offset = 0;
  lastEcho = 0;
  longestGapMs = 0;
  /** Wall clock (ms since the epoch) at which the longest gap ended. */
  longestGapEndedAt = 0;
  error: ErrorKind | null = null;
  errorCode: string | null = null;
  timer: NodeJS.Timeout | undefined;
  constructor(readonly index: number) {}
}

/** A log-scale histogram (5 % buckets from 10 µs): percentiles of millions of samples in O(1) memory. */
class Histogram {
  private readonly counts = new Float64Array(400);
  private n = 0;
  max = 0;
  add(ms: number): void {
    const i = ms <= 0.01 ? 0 : Math.min(this.counts.length - 1, Math.ceil(Math.log(ms / 0.01) / Math.log(1.05)));
    this.counts[i]!++;
    this.n++;
    if (ms > this.max) this.max = ms;
  }
  percentile(p: number): number {
    if (this.n === 0) return 0;
    let rank = Math.ceil(p * this.n);
    for (let i = 0; i < this.counts.length; i++) {
      rank -= this.counts[i]!;
      if (rank <= 0) return Math.min(this.max, 0.01 * 1.05 ** i);
    }
    return this.max;
  }
}

const round = (x: number) => Math.round(x * 100) / 100;

function payloadFor(index: number, seq: number, size: number): Buffer {
  const b = Buffer.allocUnsafe(size);
  b.write('VSTR', 0, 'latin1');
  b.writeUInt32BE(index, 4);
  b.writeUInt32BE(seq, 8);
  b.writeUInt32BE(size, 12);
  for (let i = 16; i < size; i++) b[i] = (index * 31 + seq * 7 + i) & 0xff;
  return b;
}

/**
 * Runs the traffic from the current network namespace until the duration is over or
 * `signal` aborts, and returns the summary.
 */
export async function runTraffic(
  o: TrafficOptions,
  hooks: {
    signal?: AbortSignal;
    onEstablished?: (p: TrafficProgress) => void;
    onProgress?: (p: TrafficProgress) => void;
    /**
     * Receives resetGaps(): from then on each connection's longest gap (progress, summary) counts
     * only gaps that end after the call — the pause of what happens next (a migration), apart
     * from the setup's. A gap under way at the call counts whole when it ends.
     */
    control?: (c: { resetGaps(): void }) => void;
  } = {},
): Promise<TrafficSummary> {
  const payloadBytes = o.payloadBytes ?? 64;
  const timeoutMs = o.timeoutMs ?? 5000;
  const connectTimeoutMs = o.connectTimeoutMs ?? 5000;
  if (!(payloadBytes >= 16)) throw new Error(`payloadBytes: ${payloadBytes} is less than 16`);
  if (!(o.connections >= 1)) throw new Error(`connections: ${o.connections} is less than 1`);
  if (!(o.intervalMs > 0)) throw new Error(`intervalMs: ${o.intervalMs} is not positive`);

  const t0 = performance.now();
  const now = () => performance.now() - t0;
  const conns = Array.from({ length: o.connections }, (_, i) => new Connection(i));
  hooks.control?.({
    resetGaps: () => {
      for (const c of conns) {
        c.longestGapMs = 0;
        c.longestGapEndedAt = 0;
      }
    },
  });
  const errors: Record<ErrorKind, number> = { connect: 0, reset: 0, timeout: 0, mismatch: 0, closed: 0, other: 0 };
  const errorCodes: Record<string, number> = {};
  const rtt = new Histogram();
  let sent = 0;
  let echoed = 0;
  let stopping = false;
  let settled = 0;
  let stalledMs = 0;

  const progress = (): TrafficProgress => ({
    elapsedMs: Math.round(now()),
    established: conns.filter((c) => c.established).length,
    active: conns.filter((c) => c.established && !c.error).length,
    sent,
    echoed,
    errors: { ...errors },
    maxGapMs: round(Math.max(0, ...conns.map((c) => c.longestGapMs))),
  });

  const fail = (c: Connection, kind: ErrorKind, code: string | null) => {
    if (c.error || stopping) return;
    c.error = kind;
    c.errorCode = code;
    errors[kind]++;
    if (code) errorCodes[code] = (errorCodes[code] ?? 0) + 1;
    clearInterval(c.timer);
    c.socket?.destroy();
  };

  let onAllSettled: () => void = () => {};
  const allSettled = new Promise<void>((r) => (onAllSettled = r));
  const settle = (c: Connection) => {
    if (c.settled) return;
    c.settled = true;
    if (++settled === conns.length) onAllSettled();
  };

  const send = (c: Connection) => {
    if (!c.socket || c.error || stopping) return;
    const payload = payloadFor(c.index, c.seq++, payloadBytes);
    const t = now();
    // Gaps are counted from the first send: the random phase before it is not a pause.
    if (c.seq === 1) c.lastEcho = t;
    c.queue.push({ payload, sentAt: t });
    c.socket.write(payload);
    sent++;
  };

  const receive = (c: Connection, chunk: Buffer) => {
    let pos = 0;
    while (pos < chunk.length) {
      const head = c.queue[0];
      if (!head) return fail(c, 'mismatch', 'EXTRA_BYTES');
      const n = Math.min(head.payload.length - c.offset, chunk.length - pos);
      if (!chunk.subarray(pos, pos + n).equals(head.payload.subarray(c.offset, c.offset + n))) return fail(c, 'mismatch', 'BYTES_DIFFER');
      pos += n;
      c.offset += n;
      if (c.offset === head.payload.length) {
        const t = now();
        rtt.add(t - head.sentAt);
        if (t - c.lastEcho > c.longestGapMs) {
          c.longestGapMs = t - c.lastEcho;
          c.longestGapEndedAt = Date.now();
        }
        c.lastEcho = t;
        c.queue.shift();
        c.offset = 0;
        c.echoed++;
        echoed++;
      }
    }
  };

  for (const c of conns) {
    const socket = net.connect({ host: o.address, port: o.port, noDelay: true });
    c.socket = socket;
    const connectTimer = setTimeout(() => {
      if (!c.established) {
        fail(c, 'connect', 'CONNECT_TIMEOUT');
        settle(c);
      }
    }, connectTimeoutMs);
    socket.on('connect', () => {
      clearTimeout(connectTimer);
      c.established = true;
      c.localPort = socket.localPort ?? null;
      settle(c);
      // A random phase spreads the sends of all connections over the interval.
      c.timer = setTimeout(() => {
        send(c);
        c.timer = setInterval(() => send(c), o.intervalMs);
      }, Math.random() * o.intervalMs);
    });
    socket.on('data', (chunk: Buffer) => receive(c, chunk));
    socket.on('end', () => fail(c, 'closed', null));
    socket.on('error', (e: NodeJS.ErrnoException) => {
      const code = e.code ?? 'UNKNOWN';
      if (!c.established) {
        clearTimeout(connectTimer);
        fail(c, 'connect', code);
        settle(c);
      } else fail(c, code === 'ECONNRESET' || code === 'EPIPE' ? 'reset' : 'other', code);
    });
  }

  // Echoes overdue fail their connection; checked often enough for a 1/10 precision. A sweep
  // that comes late means this process itself was stalled (a starved CPU): Node runs timers
  // before it reads the sockets, so echoes that arrived meanwhile are still unread. Such a
  // sweep judges nothing — the next one does, after the reads — and its lateness is reported.
  const sweepMs = Math.max(10, Math.min(200, timeoutMs / 10));
  let lastSweep = now();
  const sweeper = setInterval(() => {
    const t = now();
    const late = t - lastSweep - sweepMs;
    lastSweep = t;
    if (late > stalledMs) stalledMs = late;
    if (late > sweepMs) return;
    for (const c of conns) {
      const head = c.queue[0];
      if (head && !c.error && t - head.sentAt > timeoutMs) fail(c, 'timeout', 'ECHO_TIMEOUT');
    }
  }, sweepMs);

  void allSettled.then(() => hooks.onEstablished?.(progress()));
  const ticker = o.progressMs && hooks.onProgress ? setInterval(() => hooks.onProgress!(progress()), o.progressMs) : undefined;

  await new Promise<void>((resolve) => {
    const timer = o.durationMs !== undefined ? setTimeout(resolve, o.durationMs) : undefined;
    if (hooks.signal?.aborted) resolve();
    hooks.signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    });
  });

  // Stop sending; give what is in flight a moment to come back, then close cleanly.
  for (const c of conns) clearInterval(c.timer);
  const drainUntil = now() + Math.min(timeoutMs, 2000);
  while (conns.some((c) => !c.error && c.queue.length > 0) && now() < drainUntil) await new Promise((r) => setTimeout(r, 10));
  const end = now();
  for (const c of conns) {
    // Waiting at the end counts as a gap: a connection stuck when we stop shows it.
    if (c.established && !c.error && c.queue.length > 0 && end - c.lastEcho > c.longestGapMs) {
      c.longestGapMs = end - c.lastEcho;
      c.longestGapEndedAt = Date.now();
    }
  }
  stopping = true;
  clearInterval(sweeper);
  clearInterval(ticker);
  await Promise.all(
    conns.map(
      (c) =>
        new Promise<void>((resolve) => {
          const s = c.socket;
          if (!s || s.destroyed) return resolve();
          s.once('close', () => resolve());
          if (c.established) s.end();
          else s.destroy();
          setTimeout(() => {
            s.destroy();
            resolve();
          }, 1000).unref();
        }),
    ),
  );

  const gaps = new Histogram();
  for (const c of conns) if (c.established) gaps.add(c.longestGapMs);
  const established = conns.filter((c) => c.established).length;
  const ok = conns.filter((c) => c.established && !c.error).length;
  return {
    target: { address: o.address, port: o.port },
    options: { connections: o.connections, intervalMs: o.intervalMs, durationMs: o.durationMs ?? null, payloadBytes, timeoutMs },
    elapsedMs: Math.round(end),
    connections: { requested: o.connections, established, ok, failed: o.connections - ok },
    messages: { sent, echoed },
    bytes: { sent: sent * payloadBytes, echoed: echoed * payloadBytes },
    errors,
    errorCodes,
    gapMs: { p50: round(gaps.percentile(0.5)), p99: round(gaps.percentile(0.99)), max: round(gaps.max) },
    gapMaxEndedAt: conns.reduce((m, c) => (c.established && c.longestGapMs > m.longestGapMs ? c : m), { longestGapMs: -1, longestGapEndedAt: 0 }).longestGapEndedAt,
    rttMs: { p50: round(rtt.percentile(0.5)), p99: round(rtt.percentile(0.99)), max: round(rtt.max) },
    stalledMs: round(stalledMs),
    ...(o.perConnection
      ? {
          perConnection: conns.map((c) => ({
            index: c.index,
            localPort: c.localPort,
            sent: c.seq,
            echoed: c.echoed,
            longestGapMs: round(c.longestGapMs),
            error: c.error,
            errorCode: c.errorCode,
          })),
        }
      : {}),
  };
}

/** Command-line arguments of `vipshift lab traffic` for these options. */
export function trafficArgs(o: TrafficOptions): string[] {
  const args = ['--vip', o.address, '--port', `${o.port}`, '--connections', `${o.connections}`, '--interval', `${o.intervalMs}`];
  if (o.durationMs !== undefined) args.push('--duration', `${o.durationMs / 1000}`);
  if (o.payloadBytes !== undefined) args.push('--payload', `${o.payloadBytes}`);
  if (o.timeoutMs !== undefined) args.push('--timeout', `${o.timeoutMs}`);
  if (o.connectTimeoutMs !== undefined) args.push('--connect-timeout', `${o.connectTimeoutMs}`);
  if (o.progressMs) args.push('--progress', `${o.progressMs}`);
  if (o.perConnection) args.push('--per-connection');
  return args;
}

export interface TrafficRun {
  pid: number;
  /** Once every connection attempt has settled (established or failed). */
  established: Promise<TrafficProgress>;
  /** The summary, when the duration is over or after stop(). */
  done: Promise<TrafficSummary>;
  /** Ends the run (closes the generator's stdin) and returns the summary. */
  stop(): Promise<TrafficSummary>;
  /** Longest gaps from now on count only gaps that end after this (runTraffic's control). */
  resetGaps(): void;
}

/**
 * Starts `vipshift lab traffic` in a namespace (the client's). The generator also stops if
 * this process dies (its stdin closes). `onProgress` receives progress lines (with progressMs).
 */
export function startTraffic(namespace: string, o: TrafficOptions, onProgress?: (p: TrafficProgress) => void): TrafficRun {
  const child = spawn('ip', ['netns', 'exec', namespace, process.execPath, CLI, 'lab', 'traffic', ...trafficArgs(o), '--json', '--stop-on-eof'], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const stderr: string[] = [];
  child.stderr.on('data', (b: Buffer) => stderr.push(b.toString()));
  let resolveEstablished!: (p: TrafficProgress) => void;
  let rejectEstablished!: (e: Error) => void;
  const established = new Promise<TrafficProgress>((res, rej) => {
    resolveEstablished = res;
    rejectEstablished = rej;
  });
  let summary: TrafficSummary | undefined;
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    let msg: { type?: string };
    try {
      msg = JSON.parse(line) as { type?: string };
    } catch {
      return;
    }
    const { type, ...rest } = msg;
    if (type === 'established') resolveEstablished(rest as TrafficProgress);
    else if (type === 'progress') onProgress?.(rest as TrafficProgress);
    else if (type === 'summary') summary = rest as TrafficSummary;
  });
  const done = new Promise<TrafficSummary>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (summary && code === 0) resolve(summary);
      else reject(new Error(`lab traffic in ${namespace} ended (${signal ?? `exit code ${code}`}) without a summary: ${stderr.join('').trim()}`));
    });
  });
  done.catch(rejectEstablished);
  child.stdin.on('error', () => {});
  return {
    pid: child.pid ?? 0,
    established,
    done,
    stop() {
      child.stdin.end();
      return done;
    },
    resetGaps() {
      if (child.stdin.writable) child.stdin.write('reset-gaps\n');
    },
  };
}

/** A traffic summary as the operator reads it (the demo and `vipshift lab traffic`). */
export function describeTraffic(s: TrafficSummary): string {
  const e = Object.entries(s.errors).map(([k, v]) => `${k} ${v}`).join(', ');
  return [
    `traffic to ${s.target.address}:${s.target.port} for ${(s.elapsedMs / 1000).toFixed(1)} s`,
    `  connections  ${s.connections.established}/${s.connections.requested} established, ${s.connections.ok} ok, ${s.connections.failed} failed`,
    `  messages     ${s.messages.echoed}/${s.messages.sent} echoed (${s.bytes.echoed} bytes)`,
    `  errors       ${e}`,
    `  longest gap  p50 ${s.gapMs.p50} ms, p99 ${s.gapMs.p99} ms, max ${s.gapMs.max} ms`,
    `  echo time    p50 ${s.rttMs.p50} ms, p99 ${s.rttMs.p99} ms, max ${s.rttMs.max} ms`,
    `  generator    stalled up to ${s.stalledMs} ms (its own timers late: part of any gap above)`,
    '',
  ].join('\n');
}
