/** Each checker against real servers on loopback: TCP, HTTP, HTTPS (a self-signed certificate), scripts. */
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generate } from 'selfsigned';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkSchema, resolveCheck, type CheckConfigInput } from '../../src/config/check.js';
import { runCheck } from '../../src/health/checkers.js';

const check = (c: CheckConfigInput) => resolveCheck(checkSchema.parse(c));
const portOf = (s: net.Server) => (s.address() as net.AddressInfo).port;
const listen = async <S extends net.Server>(s: S): Promise<S> => {
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  return s;
};

/** A handler per path: /ok 200 "status: fine", /down 503, /slow never answers, /redirect 302. */
const handler: http.RequestListener = (req, res) => {
  if (req.url === '/ok') return res.end(`status: fine host=${req.headers.host}`);
  if (req.url === '/down') return (res.statusCode = 503), res.end('maintenance');
  if (req.url === '/redirect') return (res.statusCode = 302), res.setHeader('Location', '/ok'), res.end();
  if (req.url === '/slow') return; // never answers
  res.statusCode = 404;
  res.end();
};

const closers: (() => void)[] = [];
let httpPort = 0;
let httpsPort = 0;
let dir = '';
let caFile = '';
let otherCaFile = '';

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vipshift-checks-'));
  const altNames = [{ type: 2 as const, value: 'backend.example' }, { type: 7 as const, ip: '127.0.0.1' }];
  const pems = await generate([{ name: 'commonName', value: 'backend.example' }], { keyType: 'ec', curve: 'P-256', extensions: [{ name: 'subjectAltName', altNames }] });
  const other = await generate([{ name: 'commonName', value: 'other.example' }], { keyType: 'ec', curve: 'P-256' });
  caFile = join(dir, 'ca.pem');
  otherCaFile = join(dir, 'other.pem');
  writeFileSync(caFile, pems.cert);
  writeFileSync(otherCaFile, other.cert);
  const h = await listen(http.createServer(handler));
  const s = await listen(https.createServer({ key: pems.private, cert: pems.cert }, handler));
  httpPort = portOf(h);
  httpsPort = portOf(s);
  for (const server of [h, s]) closers.push(() => (server.closeAllConnections(), server.close()));
});
afterAll(() => {
  for (const c of closers) c();
  rmSync(dir, { recursive: true, force: true });
});

describe('tcp check', () => {
  it('passes on a connect, fails at once on a refusal', async () => {
    const server = await listen(net.createServer((s) => s.on('error', () => undefined)));
    const port = portOf(server);
    expect(await runCheck({ address: '127.0.0.1', port }, check({}))).toMatchObject({ outcome: 'pass', reason: 'connect ok' });
    server.close();
    await once(server, 'close');
    const r = await runCheck({ address: '127.0.0.1', port }, check({}));
    expect(r).toMatchObject({ outcome: 'fail', reason: 'connect refused' });
    expect(r.latencyMs).toBeLessThan(500);
  });

  it('leaves from the source address', async () => {
    let peer = '';
    const server = await listen(net.createServer((s) => ((peer = s.remoteAddress ?? ''), s.on('error', () => undefined))));
    const port = portOf(server);
    expect(await runCheck({ address: '127.0.0.1', port }, check({ source: '127.0.0.2' }))).toMatchObject({ outcome: 'pass' });
    await new Promise((r) => setTimeout(r, 20));
    expect(peer).toBe('127.0.0.2');
    expect(await runCheck({ address: '127.0.0.1', port }, check({ source: '192.0.2.77' }))).toMatchObject({ outcome: 'fail', reason: 'connect source address not available here' });
    server.close();
  });
});

describe('http and https checks', () => {
  it('passes on an expected status, fails on another, with the status in the reason', async () => {
    const t = { address: '127.0.0.1', port: httpPort };
    expect(await runCheck(t, check({ type: 'http', path: '/ok' }))).toMatchObject({ outcome: 'pass', reason: 'status 200' });
    expect(await runCheck(t, check({ type: 'http', path: '/redirect' }))).toMatchObject({ outcome: 'pass', reason: 'status 302' });
    expect(await runCheck(t, check({ type: 'http', path: '/redirect', expect: [200] }))).toMatchObject({ outcome: 'fail', reason: 'status 302 not in 200' });
    expect(await runCheck(t, check({ type: 'http', path: '/down' }))).toMatchObject({ outcome: 'fail', reason: 'status 503 not in 2xx,3xx' });
    expect(await runCheck(t, check({ type: 'http', path: '/down', expect: ['500-503'] }))).toMatchObject({ outcome: 'pass' });
  });

  it('matches the body and sends the Host header', async () => {
    const t = { address: '127.0.0.1', port: httpPort };
    expect(await runCheck(t, check({ type: 'http', path: '/ok', bodyRegex: 'status: (fine|ok)' }))).toMatchObject({ outcome: 'pass', reason: 'status 200, body matches' });
    expect(await runCheck(t, check({ type: 'http', path: '/ok', bodyRegex: 'host=www\\.example$', host: 'www.example' }))).toMatchObject({ outcome: 'pass' });
    expect(await runCheck(t, check({ type: 'http', path: '/ok', bodyRegex: '^maintenance' }))).toMatchObject({ outcome: 'fail', reason: 'status 200, body does not match /^maintenance/' });
  });

  it('times out on a server that never answers, within the timeout', async () => {
    const t0 = performance.now();
    const r = await runCheck({ address: '127.0.0.1', port: httpPort }, check({ type: 'http', path: '/slow', timeout: 300, inter: 1000 }));
    expect(r).toMatchObject({ outcome: 'timeout', reason: 'no answer in 300 ms' });
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
    expect(performance.now() - t0).toBeLessThan(1500);
  });

  it('speaks TLS to a self-signed backend without verifying, and verifies when given its CA', async () => {
    const t = { address: '127.0.0.1', port: httpsPort };
    expect(await runCheck(t, check({ type: 'https', path: '/ok' }))).toMatchObject({ outcome: 'pass', reason: 'status 200' });
    expect(await runCheck(t, check({ type: 'https', path: '/ok', ca: caFile }))).toMatchObject({ outcome: 'pass' });
    expect(await runCheck(t, check({ type: 'https', path: '/ok', ca: caFile, host: 'backend.example' }))).toMatchObject({ outcome: 'pass' });
    const wrongName = await runCheck(t, check({ type: 'https', path: '/ok', ca: caFile, host: 'www.example' }));
    expect(wrongName.outcome).toBe('fail');
    expect(wrongName.reason).toMatch(/^tls .*www\.example/);
    const wrongCa = await runCheck(t, check({ type: 'https', path: '/ok', ca: otherCaFile }));
    expect(wrongCa).toMatchObject({ outcome: 'fail' });
    expect(wrongCa.reason).toMatch(/^tls /);
    expect(await runCheck(t, check({ type: 'https', path: '/ok', ca: join(dir, 'missing.pem') }))).toMatchObject({ outcome: 'fail', reason: expect.stringMatching(/^ca .*missing\.pem: ENOENT/) });
    // Plain HTTP to the TLS port fails, it does not hang.
    expect((await runCheck(t, check({ type: 'http', path: '/ok' }))).outcome).not.toBe('pass');
  });
});

describe('script check', () => {
  it('passes on exit 0, fails with the exit status and the first line of stderr', async () => {
    const script = join(dir, 'check.sh');
    writeFileSync(script, '#!/bin/sh\n[ "$1" = 198.18.0.101 ] && [ "$2" = 8080 ] && exit 0\necho "wrong backend $1 $2" >&2\nexit 2\n');
    chmodSync(script, 0o755);
    const c = check({ type: 'script', command: script, args: ['{address}', '{port}'] });
    expect(await runCheck({ address: '198.18.0.101', port: 8080 }, c)).toMatchObject({ outcome: 'pass', reason: 'exit status 0' });
    expect(await runCheck({ address: '198.18.0.102', port: 8080 }, c)).toMatchObject({ outcome: 'fail', reason: 'exit status 2: wrong backend 198.18.0.102 8080' });
  });

  it('runs without a shell: metacharacters stay arguments', async () => {
    const c = check({ type: 'script', command: '/bin/echo', args: ['$(touch /nonexistent-dir/x)', ';', 'false'] });
    expect(await runCheck({ address: '198.18.0.101', port: 80 }, c)).toMatchObject({ outcome: 'pass' });
  });

  it('kills a script at its timeout, and says when the program cannot run', async () => {
    const t0 = performance.now();
    const r = await runCheck({ address: '198.18.0.101', port: 80 }, check({ type: 'script', command: '/bin/sleep', args: ['10'], timeout: 200, inter: 1000 }));
    expect(r).toMatchObject({ outcome: 'timeout', reason: 'no answer in 200 ms' });
    expect(performance.now() - t0).toBeLessThan(1500);
    const missing = await runCheck({ address: '198.18.0.101', port: 80 }, check({ type: 'script', command: join(dir, 'no-such-check') }));
    expect(missing.outcome).toBe('fail');
    expect(missing.reason).toMatch(/^cannot run .*no-such-check: .*ENOENT/);
  });
});
