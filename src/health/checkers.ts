/**
 * The checks themselves, each ending within its timeout with an outcome and a reason:
 * - tcp: a connect from the check's source address, closed at once with a reset (no
 *   TIME_WAIT left behind: at a thousand checks a second those would use up the ports).
 * - http/https: GET path with node's http/https modules, Host header, the status against
 *   `expect`, the body (its first 64 KiB) against `bodyRegex`. https verifies the server's
 *   certificate only when a CA is given (backends mostly have self-signed ones); with `host`
 *   the name is checked too, without it only the chain (backends are addressed by IP).
 * - script: the program run without a shell (execFile), `{address}` and `{port}` in its
 *   arguments replaced; exit status 0 passes; killed at the timeout.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { statusExpected, type ResolvedCheck } from '../config/check.js';
import type { CheckResult } from './state.js';

/** The backend a check looks at: its address and the port checked. */
export interface CheckTarget {
  address: string;
  port: number;
}

/** Runs one check of `target`; never rejects. */
export type Checker = (target: CheckTarget, check: ResolvedCheck) => Promise<CheckResult>;

const BODY_LIMIT = 64 * 1024;
const USER_AGENT = 'vipshift-check';

export const runCheck: Checker = (target, check) => {
  switch (check.type) {
    case 'tcp':
      return tcpCheck(target, check);
    case 'http':
    case 'https':
      return httpCheck(target, check);
    case 'script':
      return scriptCheck(target, check);
  }
};

/** Settles once, with the time since `t0`; a timer makes the timeout outcome. */
function settler(t0: number, timeoutMs: number, onTimeout: () => void) {
  let done: ((r: CheckResult) => void) | undefined;
  const promise = new Promise<CheckResult>((resolve) => (done = resolve));
  let settled = false;
  const finish = (outcome: CheckResult['outcome'], reason: string): void => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    done!({ outcome, reason, latencyMs: Math.round((performance.now() - t0) * 1000) / 1000 });
  };
  const timer = setTimeout(() => {
    finish('timeout', `no answer in ${timeoutMs} ms`);
    onTimeout();
  }, timeoutMs);
  return { promise, finish };
}

/** A socket error in an operator's words: "connect refused" rather than ECONNREFUSED. */
function describe(err: NodeJS.ErrnoException, stage: string): string {
  const words: Record<string, string> = {
    ECONNREFUSED: 'refused',
    ECONNRESET: 'reset by the backend',
    EHOSTUNREACH: 'host unreachable',
    ENETUNREACH: 'network unreachable',
    EADDRNOTAVAIL: 'source address not available here',
    EPIPE: 'closed by the backend',
  };
  return `${stage} ${words[err.code ?? ''] ?? err.message}`;
}

export function tcpCheck(target: CheckTarget, check: ResolvedCheck): Promise<CheckResult> {
  const t0 = performance.now();
  const socket = net.connect({ host: target.address, port: target.port, ...(check.source ? { localAddress: check.source } : {}) });
  const s = settler(t0, check.timeout, () => socket.destroy());
  socket.once('connect', () => {
    s.finish('pass', 'connect ok');
    socket.resetAndDestroy();
  });
  socket.once('error', (err: NodeJS.ErrnoException) => {
    s.finish('fail', describe(err, 'connect'));
    socket.destroy();
  });
  return s.promise;
}

const caFiles = new Map<string, Buffer>();
/** A CA file is read once per process; an unreadable one fails the check with its error. */
function caOf(path: string): Buffer {
  let ca = caFiles.get(path);
  if (!ca) caFiles.set(path, (ca = readFileSync(path)));
  return ca;
}

export function httpCheck(target: CheckTarget, check: ResolvedCheck): Promise<CheckResult> {
  const t0 = performance.now();
  const secure = check.type === 'https';
  let tls: https.RequestOptions = {};
  if (secure) {
    try {
      tls = check.ca
        ? {
            ca: caOf(check.ca),
            rejectUnauthorized: true,
            ...(check.host ? { servername: check.host } : { checkServerIdentity: () => undefined }),
          }
        : { rejectUnauthorized: false, ...(check.host && net.isIP(check.host) === 0 ? { servername: check.host } : {}) };
    } catch (err) {
      return Promise.resolve({ outcome: 'fail', reason: `ca ${check.ca}: ${(err as Error).message}`, latencyMs: 0 });
    }
  }
  const options: https.RequestOptions = {
    host: target.address,
    port: target.port,
    path: check.path,
    method: 'GET',
    agent: false,
    headers: { Host: check.host ?? (target.port === (secure ? 443 : 80) ? target.address : `${target.address}:${target.port}`), 'User-Agent': USER_AGENT, Connection: 'close' },
    ...(check.source ? { localAddress: check.source } : {}),
    ...tls,
  };
  const req = (secure ? https : http).request(options);
  const s = settler(t0, check.timeout, () => req.destroy());
  const regex = check.bodyRegex === undefined ? undefined : new RegExp(check.bodyRegex);
  req.once('response', (res) => {
    const status = res.statusCode ?? 0;
    if (!statusExpected(check.expect, status)) {
      s.finish('fail', `status ${status} not in ${check.expect.join(',')}`);
      res.destroy();
      req.destroy();
      return;
    }
    if (!regex) {
      s.finish('pass', `status ${status}`);
      res.destroy();
      req.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    let length = 0;
    const judge = () => {
      const body = Buffer.concat(chunks).subarray(0, BODY_LIMIT).toString('utf8');
      if (regex.test(body)) s.finish('pass', `status ${status}, body matches`);
      else s.finish('fail', `status ${status}, body does not match /${check.bodyRegex}/`);
      res.destroy();
      req.destroy();
    };
    res.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      length += chunk.length;
      if (length >= BODY_LIMIT) judge();
    });
    res.once('end', judge);
    res.once('error', (err: NodeJS.ErrnoException) => s.finish('fail', describe(err, 'response')));
  });
  req.once('error', (err: NodeJS.ErrnoException) => {
    // Certificate errors carry no syscall; a reset after the connect is the request's.
    const stage = err.syscall === 'connect' ? 'connect' : secure && err.syscall === undefined ? 'tls' : 'request';
    s.finish('fail', describe(err, stage));
  });
  req.end();
  return s.promise;
}

export function scriptCheck(target: CheckTarget, check: ResolvedCheck): Promise<CheckResult> {
  const t0 = performance.now();
  const args = check.args.map((a) => a.replaceAll('{address}', target.address).replaceAll('{port}', String(target.port)));
  let child: ReturnType<typeof execFile> | undefined;
  // Killed hard at the timeout: a hung check must not keep its backend's next one waiting.
  const s = settler(t0, check.timeout, () => child?.kill('SIGKILL'));
  child = execFile(check.command!, args, { shell: false, maxBuffer: BODY_LIMIT, env: { ...process.env, VIPSHIFT_BACKEND_ADDRESS: target.address, VIPSHIFT_BACKEND_PORT: String(target.port) } }, (err, _stdout, stderr) => {
    if (!err) return s.finish('pass', 'exit status 0');
    const e = err as NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals | null };
    const said = String(stderr).trim().split('\n')[0]?.slice(0, 120);
    if (typeof e.code === 'number') return s.finish('fail', `exit status ${e.code}${said ? `: ${said}` : ''}`);
    if (e.signal) return s.finish('fail', `killed by ${e.signal}`);
    s.finish('fail', `cannot run ${check.command}: ${e.message}`);
  });
  return s.promise;
}
