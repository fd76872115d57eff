/**
 * Every process's logger: pino, JSON lines (for journald and log shippers); when stdout is a
 * terminal, the same lines in a human-readable form:
 *   12:34:56.789 INFO  controller migration 5733eaf3 vip1: step done  step=prepare ms=19
 */
import { Writable } from 'node:stream';
import { pino, type Logger, type LoggerOptions } from 'pino';

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
// Fields the line's head shows already, and pino's bookkeeping.
const HEAD = new Set(['level', 'time', 'msg', 'name', 'pid', 'hostname', 'migration', 'vip', 'appliance', 'v']);

const value = (v: unknown): string => {
  if (typeof v === 'string') return /[\s"=]/.test(v) ? JSON.stringify(v) : v;
  return JSON.stringify(v);
};

/** One pino JSON line → one human line (the input again if it is not a JSON object). */
export function humanLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
    if (typeof o !== 'object' || o === null) return json;
  } catch {
    return json;
  }
  const time = typeof o.time === 'number' ? new Date(o.time).toISOString().slice(11, 23) : '';
  const level = (LEVELS[o.level as number] ?? String(o.level ?? '')).padEnd(5);
  const who = [o.name, o.appliance].filter((x) => typeof x === 'string').join(' ');
  const migration = typeof o.migration === 'string' ? ` migration ${o.migration.slice(0, 8)}` : '';
  const vip = typeof o.vip === 'string' ? ` ${o.vip}` : '';
  const rest = Object.entries(o)
    .filter(([k]) => !HEAD.has(k))
    .map(([k, v]) => (k === 'err' && v && typeof v === 'object' && 'message' in v ? `err=${value((v as { message: unknown }).message)}` : `${k}=${value(v)}`));
  return `${time} ${level} ${who}${migration}${vip}: ${String(o.msg ?? '')}${rest.length ? `  ${rest.join(' ')}` : ''}`;
}

export function createLogger(options: LoggerOptions & { name: string }, tty = process.stdout.isTTY === true): Logger {
  if (!tty) return pino(options);
  let pending = '';
  const human = new Writable({
    write(chunk: Buffer, _enc, done) {
      pending += chunk.toString('utf8');
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) if (line) process.stdout.write(`${humanLine(line)}\n`);
      done();
    },
  });
  return pino(options, human);
}
