/**
 * `vipshift vrrp --config FILE`: the VRRP speaker alone (the `vrrp:` section of FILE), for
 * interop tests, benchmarks and sites that only need address takeover. Logs JSON lines on
 * stdout. Reads commands on stdin, one per line: `release NAME`, `claim NAME` (an instance or
 * a sync group), `state` (instances and counters). SIGTERM/SIGINT: masters send priority 0
 * and remove their addresses before exit.
 */
import { createInterface } from 'node:readline';
import { pino } from 'pino';
import { Addresses } from '../netlink/route.js';
import { loadVrrpConfigFile } from '../config/vrrp.js';
import { ConfigError } from '../config/load.js';
import { serveSpeaker } from '../vrrp/process.js';
import { Speaker } from '../vrrp/speaker.js';

const USAGE = 'usage: vipshift vrrp --config FILE [--control]\n';

export async function vrrp(args: string[]): Promise<number> {
  const control = args.includes('--control');
  const rest = args.filter((a) => a !== '--control');
  const at = rest.indexOf('--config');
  const file = at >= 0 ? rest[at + 1] : undefined;
  if (!file || rest.length !== 2) {
    process.stderr.write(USAGE);
    return 2;
  }
  let config;
  try {
    config = loadVrrpConfigFile(file);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`vipshift vrrp: ${e.message}\n`);
      return 1;
    }
    throw e;
  }
  // Under --control stdout carries the protocol (src/vrrp/process.ts): logs go to stderr.
  const log = pino({ base: { part: 'vrrp' } }, control ? process.stderr : process.stdout);
  const addresses = new Addresses();
  const speaker = new Speaker(config, { addresses, logger: log });
  try {
    speaker.start();
  } catch (e) {
    await speaker.stop();
    addresses.close();
    process.stderr.write(`vipshift vrrp: ${(e as Error).message}\n`);
    return 1;
  }
  log.info({ instances: speaker.state() }, 'started');
  if (control) {
    // The appliance's child: served until the parent closes our stdin (or signals us).
    const stop = new AbortController();
    process.once('SIGTERM', () => stop.abort());
    await serveSpeaker(speaker, process.stdin, process.stdout, stop.signal);
    await speaker.stop();
    addresses.close();
    // Stopped by SIGTERM, the parent's pipe is still open: reading it would keep us alive.
    process.stdin.destroy();
    return 0;
  }

  const input = createInterface({ input: process.stdin, terminal: false });
  input.on('line', (line) => {
    const [verb, name] = line.trim().split(/\s+/);
    const reply = (p: Promise<void>) =>
      p.then(
        () => log.info({ command: verb, name, instances: speaker.state() }, 'done'),
        (err: unknown) => log.error({ command: verb, name, err: String(err) }, 'failed'),
      );
    if ((verb === 'release' || verb === 'claim') && name) void reply(speaker[verb](name));
    else if (verb === 'state') log.info({ instances: speaker.state(), counters: speaker.counters(), bfd: speaker.bfdStatus() }, 'state');
    else if (verb) log.warn({ line }, 'unknown command: release NAME | claim NAME | state');
  });

  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  input.close();
  await speaker.stop();
  log.info({ counters: speaker.counters() }, 'stopped');
  addresses.close();
  return 0;
}
