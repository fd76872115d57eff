/**
 * What the health-check test and benchmark do to a lab: break a server the two ways a backend
 * dies (its service stopped: connections refused; its address blackholed: nothing answers),
 * mend it, read the appliances' `backend down/up` log lines, and probe VIPs with new HTTP
 * connections from the client (each answer says which server served it).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import type { ApplianceConfigInput } from '../../../src/config/appliance.js';
import type { CheckConfigInput } from '../../../src/config/check.js';
import { CLI } from '../../../src/lab/lab.js';
import { run } from '../../../src/lab/netns.js';
import { startProcess } from '../../../src/lab/processes.js';
import { host, type Site } from '../../../src/lab/site.js';

/** Every VIP of an appliance's configuration with `check` as its check. */
export const withCheck = (check: CheckConfigInput) => (_name: string, c: ApplianceConfigInput): ApplianceConfigInput => ({
  ...c,
  vips: c.vips.map((v) => ({ ...v, check })),
});

/** Kills the server's service (echo and HTTP): its ports refuse connections. */
export async function stopService(site: Site, server: string): Promise<void> {
  const ns = host(site, server).namespace;
  // The lab's service is the node process running `lab serve` in the server's namespace.
  const pids = (await run('ip', ['netns', 'pids', ns])).stdout.split(/\s+/).filter(Boolean);
  for (const pid of pids) {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    if (cmdline.includes('serve')) process.kill(Number(pid), 'SIGKILL');
  }
}

/** Starts the server's service again (the lab takes it down with the rest). */
export async function startService(site: Site, server: string): Promise<void> {
  const { echoPort, httpPort } = site.service;
  startProcess({
    name: `${server}-service-again`,
    namespace: host(site, server).namespace,
    command: [process.execPath, CLI, 'lab', 'serve', '--name', server, '--echo-port', String(echoPort), '--http-port', String(httpPort)],
    logDir: site.stateDir,
  });
  const ns = host(site, server).namespace;
  for (let i = 0; i < 100; i++) {
    const ss = await run('ip', ['netns', 'exec', ns, 'ss', '-Hltn', `sport = :${echoPort}`]);
    if (ss.stdout.trim()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${server}: the service did not listen again`);
}

const BLACKHOLE = 'vipshift_test_blackhole';

/** Drops everything that reaches the server on the internal segment (silence, not refusal), or stops doing so. */
export async function blackhole(site: Site, server: string, on: boolean): Promise<void> {
  const ns = host(site, server).namespace;
  const script = on
    ? `add table ip ${BLACKHOLE}\nadd chain ip ${BLACKHOLE} in { type filter hook prerouting priority -400; policy accept; }\nadd rule ip ${BLACKHOLE} in iifname "int0" drop\n`
    : `delete table ip ${BLACKHOLE}\n`;
  const r = await run('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], script);
  if (r.code !== 0) throw new Error(`blackhole ${server} ${on}: ${r.stderr.trim()}`);
}

export interface BackendLogLine {
  time: number;
  msg: 'backend down' | 'backend up';
  vip: string;
  backend: string;
  reason: string;
  /** From the check's end to the pool's change, ms (the line is written after). */
  applyMs?: number;
}

/** When the pool changed back: a little before the `backend up` line's time. */
export const pooledAt = (up: BackendLogLine): number => up.time - (up.applyMs ?? 0) - 20;

/** The appliance's `backend down` / `backend up` lines so far. */
export function backendTransitions(site: Site, appliance: string): BackendLogLine[] {
  const file = path.join(site.stateDir, `${appliance}-appliance.log`);
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  return text.split('\n').flatMap((l) => {
    try {
      const o = JSON.parse(l) as Partial<BackendLogLine>;
      return o.msg === 'backend down' || o.msg === 'backend up' ? [o as BackendLogLine] : [];
    } catch {
      return [];
    }
  });
}

/** Waits for the appliance's first transition matching, after `since`; its time (the log's clock). */
export async function waitForTransition(site: Site, appliance: string, match: { msg: BackendLogLine['msg']; vip: string; backend: string }, since: number, timeoutMs: number): Promise<BackendLogLine> {
  const t0 = Date.now();
  for (;;) {
    const line = backendTransitions(site, appliance).find((l) => l.time >= since && l.msg === match.msg && l.vip === match.vip && l.backend === match.backend);
    if (line) return line;
    if (Date.now() - t0 > timeoutMs) throw new Error(`${appliance}: no '${match.msg}' of ${match.vip} ${match.backend} within ${timeoutMs} ms; transitions: ${JSON.stringify(backendTransitions(site, appliance))}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export interface Probe {
  /** When the connection was opened (epoch ms). */
  at: number;
  vip: string;
  ok: boolean;
  /** The server that answered. */
  server?: string;
  error?: string;
  ms: number;
}

/**
 * A new HTTP connection to each address every `everyMs`, from the client's namespace: GET /
 * with `Connection: close`, a failure after `timeoutMs` without an answer — counted from the
 * connect, whatever the socket's state (Node's request timeout only starts once connected,
 * so a SYN that is never answered would never time out). `stop` waits for every probe to
 * end; none is left out.
 */
export function probe(site: Site, addresses: string[], everyMs: number, timeoutMs = 3000): { stop(): Promise<Probe[]> } {
  const script = `
    const http = require('node:http');
    const [addresses, every, timeout] = [JSON.parse(process.argv[1]), Number(process.argv[2]), Number(process.argv[3])];
    let stopping = false, open = 0;
    const out = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
    const one = (vip) => {
      const at = Date.now();
      open++;
      let done = false;
      const end = (o) => { if (done) return; done = true; clearTimeout(deadline); open--; out({ at, vip, ms: Date.now() - at, ...o }); if (stopping && open === 0) process.exit(0); };
      const req = http.get({ host: vip, port: 80, path: '/', agent: false, headers: { connection: 'close' } }, (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => { try { end({ ok: res.statusCode === 200, server: JSON.parse(body).server }); } catch { end({ ok: false, error: 'bad answer' }); } });
        res.on('error', (e) => end({ ok: false, error: e.code || e.message }));
      });
      const deadline = setTimeout(() => { end({ ok: false, error: 'timeout' }); req.destroy(); }, timeout);
      req.on('error', (e) => end({ ok: false, error: e.code || e.message }));
    };
    const timer = setInterval(() => addresses.forEach(one), every);
    process.stdin.on('data', () => { stopping = true; clearInterval(timer); if (open === 0) process.exit(0); });`;
  const child = spawn('ip', ['netns', 'exec', host(site, 'client').namespace, process.execPath, '-e', script, JSON.stringify(addresses), String(everyMs), String(timeoutMs)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const probes: Probe[] = [];
  readline.createInterface({ input: child.stdout! }).on('line', (l) => probes.push(JSON.parse(l) as Probe));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let stopped: Promise<Probe[]> | undefined;
  return {
    stop() {
      stopped ??= (async () => {
        child.stdin!.end('stop\n');
        await exited;
        return probes;
      })();
      return stopped;
    },
  };
}
