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
import { VrrpConfigError, loadVrrpConfigFile } from '../vrrp/config.js';
import { Speaker } from '../vrrp/speaker.js';

const USAGE = 'usage: vipshift vrrp --config FILE\n';

export async function vrrp(args: string[]): Promise<number> {
  const at = args.indexOf('--config');
  const file = at >= 0 ? args[at + 1] : undefined;
  if (!file || args.length !== 2) {
    process.stderr.write(USAGE);
    return 2;
  }
  let config;
  try {
    config = loadVrrpConfigFile(file);
  } catch (e) {
    if (e instanceof VrrpConfigError || (e as NodeJS.ErrnoException).code === 'ENOENT') {
      process.stderr.write(`vipshift vrrp: ${(e as Error).message}\n`);
      return 1;
    }
    throw e;
  }
  const log = pino({ base: { part: 'vrrp' } });
  const addresses = new Addresses();
  const speaker = new Speaker(config, { addresses, logger: log });
  speaker.start();
  log.info({ instances: speaker.state() }, 'started');

  const input = createInterface({ input: process.stdin, terminal: false });
  input.on('line', (line) => {
    const [verb, name] = line.trim().split(/\s+/);
    const reply = (p: Promise<void>) =>
      p.then(
        () => log.info({ command: verb, name, instances: speaker.state() }, 'done'),
        (err: unknown) => log.error({ command: verb, name, err: String(err) }, 'failed'),
      );
    if ((verb === 'release' || verb === 'claim') && name) void reply(speaker[verb](name));
    else if (verb === 'state') log.info({ instances: speaker.state(), counters: speaker.counters() }, 'state');
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
