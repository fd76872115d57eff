/**
 * Connections opened continuously: at a steady rate, each one connects, sends one payload,
 * waits for its echo and closes. What a migration or a SYN flood must not break: a connection
 * whose handshake is under way at the cut-over, a new client during a flood. Every failure is
 * counted by kind; a SYN the network lost shows as a connect time of a second or more (the
 * client's SYN retransmission), not as a failure.
 */
import net from 'node:net';
import { spawn } from 'node:child_process';
import readline from 'node:readline';
import { CLI } from './lab.js';

const PAYLOAD = Buffer.from('vipshift churn 0123456789abcdef');

export interface ChurnOptions {
  address: string;
  port: number;
  /** New connections a second. */
  rate: number;
  /** A connection that has not connected and echoed by then fails as `timeout`. */
  timeoutMs?: number;
}

export interface ChurnSummary {
  elapsedMs: number;
  opened: number;
  ok: number;
  failed: number;
  /** Failures by kind: reset (RST), refused, timeout, mismatch, other. */
  errors: Record<'reset' | 'refused' | 'timeout' | 'mismatch' | 'other', number>;
  /** Connect-to-echo time of the connections that succeeded. */
  ms: { p50: number; p99: number; max: number };
  /** Connections that took ≥ 1 s: a SYN (or SYN-ACK) lost and retransmitted. */
  slow: number;
}

const quantile = (sorted: number[], q: number): number => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! : 0);

function once(o: ChurnOptions): Promise<{ kind: keyof ChurnSummary['errors'] | 'ok'; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const socket = net.connect({ host: o.address, port: o.port });
    let got = Buffer.alloc(0);
    let settled = false;
    const end = (kind: keyof ChurnSummary['errors'] | 'ok') => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ kind, ms: performance.now() - t0 });
    };
    const timer = setTimeout(() => end('timeout'), o.timeoutMs ?? 10_000);
    socket.on('connect', () => socket.write(PAYLOAD));
    socket.on('data', (b: Buffer) => {
      got = Buffer.concat([got, b]);
      if (got.length >= PAYLOAD.length) end(got.subarray(0, PAYLOAD.length).equals(PAYLOAD) ? 'ok' : 'mismatch');
    });
    socket.on('error', (err: NodeJS.ErrnoException) => end(err.code === 'ECONNRESET' ? 'reset' : err.code === 'ECONNREFUSED' ? 'refused' : err.code === 'ETIMEDOUT' ? 'timeout' : 'other'));
    socket.on('close', () => end('other'));
  });
}

/** Opens connections at `rate` a second until `signal` aborts, then waits for the last ones. */
export async function runChurn(o: ChurnOptions, signal: AbortSignal): Promise<ChurnSummary> {
  const t0 = performance.now();
  const errors: ChurnSummary['errors'] = { reset: 0, refused: 0, timeout: 0, mismatch: 0, other: 0 };
  const times: number[] = [];
  const pending: Promise<void>[] = [];
  let opened = 0;
  while (!signal.aborted) {
    const due = Math.floor(((performance.now() - t0) / 1000) * o.rate) + 1;
    for (; opened < due; opened++) {
      pending.push(
        once(o).then((r) => {
          if (r.kind === 'ok') times.push(r.ms);
          else errors[r.kind]++;
        }),
      );
    }
    await new Promise((r) => setTimeout(r, Math.max(1, 1000 / o.rate)));
  }
  await Promise.all(pending);
  times.sort((a, b) => a - b);
  const r1 = (x: number) => Math.round(x * 10) / 10;
  const failed = Object.values(errors).reduce((a, b) => a + b, 0);
  return {
    elapsedMs: Math.round(performance.now() - t0),
    opened,
    ok: times.length,
    failed,
    errors,
    ms: { p50: r1(quantile(times, 0.5)), p99: r1(quantile(times, 0.99)), max: r1(times.at(-1) ?? 0) },
    slow: times.filter((t) => t >= 1000).length,
  };
}

export interface ChurnRun {
  stop(): Promise<ChurnSummary>;
}

/** Starts `vipshift lab churn` in a namespace (the client's); it also stops if this process dies. */
export function startChurn(namespace: string, o: ChurnOptions): ChurnRun {
  const args = ['--vip', o.address, '--port', String(o.port), '--rate', String(o.rate), ...(o.timeoutMs ? ['--timeout', String(o.timeoutMs)] : [])];
  const child = spawn('ip', ['netns', 'exec', namespace, process.execPath, CLI, 'lab', 'churn', ...args, '--stop-on-eof'], { stdio: ['pipe', 'pipe', 'pipe'] });
  const stderr: string[] = [];
  child.stderr.on('data', (b: Buffer) => stderr.push(b.toString()));
  let summary: ChurnSummary | undefined;
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      summary = JSON.parse(line) as ChurnSummary;
    } catch {
      // not ours
    }
  });
  const done = new Promise<ChurnSummary>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => (summary && code === 0 ? resolve(summary) : reject(new Error(`lab churn in ${namespace} ended (${signal ?? `exit code ${code}`}): ${stderr.join('').trim()}`))));
  });
  child.stdin.on('error', () => {});
  return {
    stop() {
      child.stdin.end();
      return done;
    },
  };
}
