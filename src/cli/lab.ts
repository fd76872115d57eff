/** `vipshift lab ...`: the whole site in network namespaces on this machine (src/lab). */
import { spawn } from 'node:child_process';
import readline from 'node:readline';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { type LabStatus, labDown, labStatus, labUp, siteFor } from '../lab/lab.js';
import { startService } from '../lab/service.js';
import { host } from '../lab/site.js';
import { describeTraffic, runTraffic } from '../lab/traffic.js';
import { runChurn } from '../lab/churn.js';

const USAGE = `usage: vipshift lab SUBCOMMAND

  up     [--name vs] [--json] [--no-appliances] [--no-controller] [--no-keepers] [--controllers 1]
         build the site (removing a previous lab of that name first), start its processes;
         --controllers 2|3: controllers ctl1.. on etcd, an etcd member on each one's host
  down   [--name vs] [--json]       stop every process of the lab, delete its namespaces
  info   [--name vs] [--json]       what is up: namespaces, addresses, VIPs, APIs, processes
  exec   [--name vs] HOST -- CMD... run a command in a host's namespace (client, router,
                                    lb1, lb2, srv1..srv3, ctl, sw)
  serve  --name SERVER [--echo-port 7] [--http-port 80] [--host 0.0.0.0]
         the servers' service: TCP echo and HTTP answering who saw whom (run by lab up)
  traffic --vip ADDRESS --port PORT [--connections 100] [--interval 20] [--duration SECONDS]
          [--payload 64] [--timeout 5000] [--connect-timeout 5000] [--progress MS]
          [--per-connection] [--stop-on-eof] [--json]
         echo traffic from the current namespace (use inside lab exec client); without
         --duration it runs until SIGTERM, SIGINT or (with --stop-on-eof) end of stdin;
         with --stop-on-eof a line 'reset-gaps' on stdin starts a new window of longest gaps
  churn  --vip ADDRESS --port PORT [--rate 50] [--timeout 10000] [--stop-on-eof]
         new connections at a steady rate (connect, one echo, close) until stopped; prints
         a JSON summary of failures by kind

  demo   [--name demo] [--connections 500] [--vip vip1] [--to lb2]
         lab up, live connections, a migration under load with the tables before and
         after and each step's time, lab down (make demo)

The state (configurations, logs, state.json) lives in /run/vipshift-lab/<name>/
(or $VIPSHIFT_LAB_DIR/<name>/).
`;

export async function lab(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  try {
    switch (sub) {
      case 'up':
        return await up(rest);
      case 'down':
        return await down(rest);
      case 'info':
        return await info(rest);
      case 'exec':
        return await exec(rest);
      case 'serve':
        return await serve(rest);
      case 'traffic':
        return await traffic(rest);
      case 'churn':
        return await churn(rest);
      case 'demo':
        return await (await import('./demo.js')).demo(rest);
      case undefined:
      case 'help':
      case '-h':
      case '--help':
        process.stdout.write(USAGE);
        return sub ? 0 : 2;
      default:
        process.stderr.write(`vipshift lab: unknown subcommand '${sub}'\n\n${USAGE}`);
        return 2;
    }
  } catch (e) {
    if ((e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`vipshift lab ${sub}: ${(e as Error).message}\n\n${USAGE}`);
      return 2;
    }
    throw e;
  }
}

const print = (x: unknown) => process.stdout.write(JSON.stringify(x, null, 2) + '\n');

async function up(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      name: { type: 'string' },
      json: { type: 'boolean' },
      'no-appliances': { type: 'boolean' },
      'no-controller': { type: 'boolean' },
      'no-keepers': { type: 'boolean' },
      controllers: { type: 'string' },
    },
  });
  const controllers = values.controllers === undefined ? 1 : Number(values.controllers);
  const { status, timings } = await labUp({
    name: values.name,
    controllers,
    appliances: !values['no-appliances'],
    controller: !values['no-controller'],
    keepers: !values['no-keepers'],
  });
  if (values.json) print({ ...status, timings });
  else process.stdout.write(describe(status) + `\nup in ${timings.totalMs} ms (build ${timings.buildMs} ms, processes ${timings.processesMs} ms)\n`);
  return 0;
}

async function down(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { name: { type: 'string' }, json: { type: 'boolean' } } });
  const r = await labDown({ name: values.name });
  if (values.json) print(r);
  else process.stdout.write(`lab ${r.name}: stopped ${r.stopped} processes, deleted ${r.namespaces.length} namespaces in ${r.ms} ms\n`);
  return 0;
}

async function info(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { name: { type: 'string' }, json: { type: 'boolean' } } });
  const status = await labStatus({ name: values.name });
  if (!status) {
    process.stderr.write(`vipshift lab info: lab '${siteFor(values.name).name}' is not up\n`);
    return 1;
  }
  if (values.json) print(status);
  else process.stdout.write(describe(status) + '\n');
  return 0;
}

function describe(s: LabStatus): string {
  const lines = [`lab ${s.name} (state in ${s.stateDir})`];
  lines.push(`  client      ${s.clients.map((c) => `${c.name} ${c.address} [${c.namespace}]`).join(', ')}`);
  for (const a of s.appliances) lines.push(`  appliance   ${a.name} ext ${a.addresses.ext} int ${a.addresses.int} api ${a.api} [${a.namespace}]`);
  for (const v of s.servers) lines.push(`  server      ${v.name} ${v.address} mgmt ${v.mgmtAddress} [${v.namespace}]`);
  for (const v of s.vips) lines.push(`  VIP         ${v.name} ${v.address} inside ${v.insideAddress} ${v.mode} ports ${v.ports.join(',')} → ${v.servers.map((x) => x.name).join(',')} owner ${v.owner}`);
  if (s.controllers.length > 1) {
    for (const c of s.controllers) lines.push(`  controller  ${c.name} ${c.api} [${c.namespace}]`);
    lines.push(`  etcd        ${s.etcd.map((m) => m.client).join(' ')}`);
  } else lines.push(`  controller  ${s.controller.api} [${s.controller.namespace}]`);
  lines.push(`  daemons     ${Object.entries(s.daemons).map(([d, st]) => `${d}: ${st}`).join(', ')}`);
  for (const p of s.processes) lines.push(`  process     ${p.name.padEnd(16)} pid ${p.pid} ${p.running ? 'running' : 'NOT RUNNING'} log ${p.log}`);
  return lines.join('\n');
}

async function exec(args: string[]): Promise<number> {
  const dash = args.indexOf('--');
  if (dash < 0) throw usageError('exec: expected HOST -- COMMAND...');
  const { values, positionals } = parseArgs({ args: args.slice(0, dash), options: { name: { type: 'string' } }, allowPositionals: true });
  const command = args.slice(dash + 1);
  if (positionals.length !== 1 || command.length === 0) throw usageError('exec: expected HOST -- COMMAND...');
  const ns = host(siteFor(values.name), positionals[0]!).namespace;
  const child = spawn('ip', ['netns', 'exec', ns, ...command], { stdio: 'inherit' });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

function usageError(message: string): Error {
  return Object.assign(new Error(message), { code: 'ERR_PARSE_ARGS_USAGE' });
}

async function serve(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      name: { type: 'string' },
      'echo-port': { type: 'string', default: '7' },
      'http-port': { type: 'string', default: '80' },
      host: { type: 'string' },
    },
  });
  if (!values.name) throw usageError('serve: --name SERVER is required');
  const log = pino({ name: 'lab-serve', base: { server: values.name } });
  const service = await startService({
    name: values.name,
    echoPort: port('--echo-port', values['echo-port']),
    httpPort: port('--http-port', values['http-port']),
    host: values.host,
    log,
  });
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await service.close();
  return 0;
}

function port(flag: string, value: string | undefined): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw usageError(`${flag}: '${value}' is not a port (1..65535)`);
  return n;
}

function positive(flag: string, value: string | undefined, integer: boolean): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || (integer && !Number.isInteger(n))) throw usageError(`${flag}: '${value}' is not a positive ${integer ? 'integer' : 'number'}`);
  return n;
}

async function churn(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { vip: { type: 'string' }, port: { type: 'string' }, rate: { type: 'string', default: '50' }, timeout: { type: 'string' }, 'stop-on-eof': { type: 'boolean' } },
  });
  if (!values.vip) throw usageError('churn: --vip ADDRESS is required');
  const abort = new AbortController();
  const stop = () => abort.abort();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  if (values['stop-on-eof']) process.stdin.on('end', stop).on('close', stop).resume();
  const summary = await runChurn(
    {
      address: values.vip,
      port: port('--port', values.port),
      rate: positive('--rate', values.rate, false),
      ...(values.timeout !== undefined ? { timeoutMs: positive('--timeout', values.timeout, false) } : {}),
    },
    abort.signal,
  );
  process.stdin.pause();
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  return 0;
}

async function traffic(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      vip: { type: 'string' },
      port: { type: 'string' },
      connections: { type: 'string', default: '100' },
      interval: { type: 'string', default: '20' },
      duration: { type: 'string' },
      payload: { type: 'string' },
      timeout: { type: 'string' },
      'connect-timeout': { type: 'string' },
      progress: { type: 'string' },
      'per-connection': { type: 'boolean' },
      'stop-on-eof': { type: 'boolean' },
      json: { type: 'boolean' },
    },
  });
  if (!values.vip) throw usageError('traffic: --vip ADDRESS is required');
  const abort = new AbortController();
  const stop = () => abort.abort();
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  // With --stop-on-eof stdin is a control channel too: a line `reset-gaps` starts a new window of longest gaps.
  let resetGaps = () => {};
  if (values['stop-on-eof']) {
    process.stdin.on('end', stop).on('close', stop).resume();
    readline.createInterface({ input: process.stdin }).on('line', (l) => {
      if (l.trim() === 'reset-gaps') resetGaps();
    });
  }
  const line = (type: string, x: object) => process.stdout.write(JSON.stringify({ type, ...x }) + '\n');
  const summary = await runTraffic(
    {
      address: values.vip,
      port: port('--port', values.port),
      connections: positive('--connections', values.connections, true),
      intervalMs: positive('--interval', values.interval, false),
      durationMs: values.duration !== undefined ? positive('--duration', values.duration, false) * 1000 : undefined,
      payloadBytes: values.payload !== undefined ? positive('--payload', values.payload, true) : undefined,
      timeoutMs: values.timeout !== undefined ? positive('--timeout', values.timeout, false) : undefined,
      connectTimeoutMs: values['connect-timeout'] !== undefined ? positive('--connect-timeout', values['connect-timeout'], false) : undefined,
      progressMs: values.progress !== undefined ? positive('--progress', values.progress, false) : undefined,
      perConnection: values['per-connection'],
    },
    {
      signal: abort.signal,
      control: (c) => (resetGaps = c.resetGaps),
      onEstablished: (p) => (values.json ? line('established', p) : process.stderr.write(`established ${p.established}/${values.connections} in ${p.elapsedMs} ms\n`)),
      onProgress: (p) =>
        values.json
          ? line('progress', p)
          : process.stderr.write(`${(p.elapsedMs / 1000).toFixed(1)} s: ${p.active} active, ${p.echoed}/${p.sent} echoed, max gap ${p.maxGapMs} ms, errors ${JSON.stringify(p.errors)}\n`),
    },
  );
  process.stdin.pause();
  if (values.json) line('summary', summary);
  else process.stdout.write(describeTraffic(summary));
  return 0;
}
