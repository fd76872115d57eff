/**
 * `vipshift events --target URL [--follow] [--credentials DIR] [--identity ID] [--lab NAME]`:
 * an appliance's events (VRRP master/backup/fault, backend up/down, migration done/aborted,
 * takeover) as JSON lines, the ones it remembers and, with --follow, every later one until
 * interrupted. The same events run the configured notify hooks (src/config/hooks.ts).
 */
import path from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { DEFAULT_CREDENTIALS_DIR } from '../api/auth.js';
import { operatorCredentials } from './controller-client.js';
import { ApiClient } from '../api/client.js';
import { DEFAULT_STATE_BASE } from '../lab/site.js';

const USAGE = 'usage: vipshift events --target URL [--follow] [--credentials DIR] [--identity ID] [--lab NAME]\n';

export async function eventsCommand(args: string[]): Promise<number> {
  let values: { target?: string; follow?: boolean; lab?: string; credentials?: string; identity?: string };
  try {
    ({ values } = parseArgs({
      args,
      options: { target: { type: 'string' }, follow: { type: 'boolean' }, lab: { type: 'string' }, credentials: { type: 'string' }, identity: { type: 'string' } },
    }));
  } catch (err) {
    process.stderr.write(`vipshift events: ${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  if (!values.target) {
    process.stderr.write(`vipshift events: --target is required (an appliance's agent, http://address:port)\n${USAGE}`);
    return 2;
  }
  const dir = values.credentials ?? (values.lab ? path.join(DEFAULT_STATE_BASE, values.lab, 'credentials') : DEFAULT_CREDENTIALS_DIR);
  const stop = new AbortController();
  const quit = () => stop.abort();
  process.once('SIGINT', quit);
  process.once('SIGTERM', quit);
  let api: ApiClient | undefined;
  try {
    api = new ApiClient(values.target, operatorCredentials(dir, values.identity), { timeoutMs: 10_000 });
    const stream = await api.stream('GET', `/v1/events?follow=${values.follow ? 'true' : 'false'}`, undefined, { signal: stop.signal });
    for await (const line of createInterface({ input: stream, terminal: false })) process.stdout.write(`${line}\n`);
    return 0;
  } catch (err) {
    if (stop.signal.aborted) return 0;
    process.stderr.write(`vipshift events: ${(err as Error).message}\n`);
    return 1;
  } finally {
    api?.close();
    process.off('SIGINT', quit);
    process.off('SIGTERM', quit);
  }
}
