/**
 * What the long-running commands (appliance, controller, keeper) share: their string options
 * parsed with the usage on a mistake (exit 2), a configuration that does not load reported as
 * `file:line: field: message` (exit 1), then running until SIGTERM or SIGINT and stopping.
 */
import { parseArgs } from 'node:util';
import { ConfigError, formatIssue } from '../config/load.js';

export type DaemonValues<K extends string> = Partial<Record<K, string>>;

export interface DaemonSpec<K extends string> {
  /** `appliance`, as in `vipshift appliance`. */
  command: string;
  usage: string;
  /** The names of its options, each taking a value. */
  options: readonly K[];
  /** What is missing from the options, e.g. '--config is required'; undefined when nothing. */
  missing(values: DaemonValues<K>): string | undefined;
}

/** Stops what start() started; resolves to the exit code. */
export type Stop = () => Promise<number>;

/** The spec's missing() of a command that needs --config. */
export const configRequired = (values: { config?: string }): string | undefined => (values.config ? undefined : '--config is required');

/** Resolves at the first SIGTERM or SIGINT. */
export function untilStopped(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
}

export async function runDaemon<K extends string>(spec: DaemonSpec<K>, args: string[], start: (values: DaemonValues<K>) => Promise<Stop>): Promise<number> {
  const usageError = (message: string): number => {
    process.stderr.write(`vipshift ${spec.command}: ${message}\n${spec.usage}`);
    return 2;
  };
  let values: DaemonValues<K>;
  try {
    const options = Object.fromEntries(spec.options.map((o) => [o, { type: 'string' as const }]));
    values = parseArgs({ args, options }).values as DaemonValues<K>;
  } catch (err) {
    return usageError((err as Error).message);
  }
  const missing = spec.missing(values);
  if (missing !== undefined) return usageError(missing);
  let stop: Stop;
  try {
    stop = await start(values);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const issue of err.issues) process.stderr.write(`${formatIssue(issue)}\n`);
    return 1;
  }
  await untilStopped();
  return stop();
}
