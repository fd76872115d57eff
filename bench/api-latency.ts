/**
 * API request latency with authorization on: what a signed request costs end to end over
 * loopback (server and client in this process, as the controller calls an agent), with the
 * route tables enforced. Four cases, interleaved round by round so the machine's load falls
 * on all alike:
 *   plain      — node:http GET, no signature, no check (the floor)
 *   signed     — the agent's route table with every role admitted on the route (the role
 *                check answers yes for anyone: the cost of signing and verifying alone)
 *   authorized — the agent's own line for the route (`controller` only), called by ctl
 *   forbidden  — the same route called by a monitor: the 403 path, logged at its rate limit
 * and the role check itself, timed alone. Prints a table; writes bench/results/api-latency.json.
 *
 * Environment: REQUESTS per case and round (default 2000), ROUNDS (default 3).
 */
import fs from 'node:fs';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { Authenticator, ROLES, createClusterCredentials, loadCredentials } from '../src/api/auth.js';
import { ApiClient } from '../src/api/client.js';
import { createApiServer, routeKey, type Route } from '../src/api/server.js';
import { AGENT_ROLES } from '../src/appliance/agent.js';
import { REPO_ROOT } from '../src/lab/lab.js';

const REQUESTS = Number(process.env.REQUESTS ?? 2000);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const round3 = (x: number) => Math.round(x * 1000) / 1000;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vipshift-bench-latency-'));
createClusterCredentials(dir, { lb1: 'appliance', ctl: 'controller', grafana: 'monitor' });
const route: Route = { method: 'POST', path: '/v1/vips/:name/prepare', handler: () => ({ ok: true }) };
const key = routeKey(route);
const logger = pino({ level: 'silent' });

async function api(roles: readonly (typeof ROLES)[number][]) {
  const server = createApiServer({ name: 'agent', routes: [route], roles: { [key]: roles }, authenticator: new Authenticator(loadCredentials(dir, 'lb1')), logger, metrics: new Registry() });
  await server.listen({ host: '127.0.0.1', port: 0 });
  return server;
}
const open = await api(ROLES);
const enforced = await api(AGENT_ROLES[key]!);
const ctlOpen = new ApiClient(open.url, loadCredentials(dir, 'ctl'), { peer: 'lb1' });
const ctl = new ApiClient(enforced.url, loadCredentials(dir, 'ctl'), { peer: 'lb1' });
const monitor = new ApiClient(enforced.url, loadCredentials(dir, 'grafana'), { peer: 'lb1' });

const plainServer = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end('{"ok":true}');
});
await new Promise<void>((r) => plainServer.listen(0, '127.0.0.1', r));
const plainPort = (plainServer.address() as AddressInfo).port;
const plain = () =>
  new Promise<void>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: plainPort, method: 'POST', path: '/v1/vips/vip1/prepare', headers: { 'content-type': 'application/json', 'content-length': 2 } }, (res) => {
      res.resume();
      res.on('end', resolve);
    });
    req.on('error', reject);
    req.end('{}');
  });

const cases: Record<string, () => Promise<unknown>> = {
  plain,
  signed: () => ctlOpen.post('/v1/vips/vip1/prepare', {}),
  authorized: () => ctl.post('/v1/vips/vip1/prepare', {}),
  forbidden: () => monitor.post('/v1/vips/vip1/prepare', {}).then(() => Promise.reject(new Error('a monitor was let through')), (err: { status?: number }) => {
    if (err.status !== 403) throw err;
  }),
};

const samples: Record<string, number[]> = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
for (const c of Object.values(cases)) for (let i = 0; i < 200; i++) await c(); // warm up
for (let round = 0; round < ROUNDS; round++) {
  for (const [name, c] of Object.entries(cases)) {
    for (let i = 0; i < REQUESTS; i++) {
      const t0 = performance.now();
      await c();
      samples[name]!.push(performance.now() - t0);
    }
  }
}

// The role check alone: the Set lookup the server makes after matching a route.
const admitted = new Set(AGENT_ROLES[key]!);
let hits = 0;
const N = 10_000_000;
const c0 = performance.now();
for (let i = 0; i < N; i++) if (admitted.has(ROLES[i % ROLES.length]!)) hits++;
const checkNs = ((performance.now() - c0) * 1e6) / N;

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};
const stats = Object.fromEntries(Object.entries(samples).map(([k, xs]) => [k, { median_ms: round3(quantile(xs, 0.5)), p99_ms: round3(quantile(xs, 0.99)) }]));
const result = {
  requests_per_case: REQUESTS * ROUNDS,
  ...stats,
  authorized_minus_signed_median_ms: round3(stats.authorized!.median_ms - stats.signed!.median_ms),
  role_check_ns: round3(checkNs),
  role_check_hits: hits,
  load_avg_1m: round3(os.loadavg()[0]!),
};
for (const [k, v] of Object.entries(result) as [string, number | { median_ms: number; p99_ms: number }][]) {
  console.log(`${k.padEnd(34)} ${typeof v === 'object' ? `median ${v.median_ms} ms, p99 ${v.p99_ms} ms` : v}`);
}

for (const c of [ctlOpen, ctl, monitor]) c.close();
await Promise.all([open.close(), enforced.close(), new Promise((r) => plainServer.close(r))]);
fs.rmSync(dir, { recursive: true, force: true });
const out = path.join(REPO_ROOT, 'bench', 'results', 'api-latency.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify({ bench: 'api-latency', date: new Date().toISOString(), node: process.version, cores: os.cpus().length, ...result }, null, 2) + '\n');
console.log(`wrote ${path.relative(REPO_ROOT, out)}`);
